"""Does the exported graph compute what PyTorch computes, on real radiographs?"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.manifest import Manifest
from ..runtime.backends import OnnxRuntimeBackend
from ..runtime.preprocess import preprocess
from ..runtime.reader import read_radiograph

FP32_TOLERANCE = 1e-5


def load_inputs(images: Sequence[Path], manifest: Manifest) -> tuple[np.ndarray, list[str]]:
    """The network inputs of the readable radiographs among ``images``, as the runtime makes them."""
    batch, names = [], []
    for path in images:
        radiograph = read_radiograph(path, allow_any_view=True)
        batch.append(preprocess(radiograph.pixels, manifest.preprocessing)[0])
        names.append(str(path))
    if not batch:
        raise ValueError("no radiographs to check parity on")
    return np.stack(batch), names


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute difference per output present in both."""
    return {k: float(np.max(np.abs(reference[k] - candidate[k]))) for k in reference if k in candidate}


def check_parity(
    module: nn.Module,
    onnx_path: Path,
    manifest: Manifest,
    images: Sequence[Path],
    tolerance: float = FP32_TOLERANCE,
    threads: int | None = None,
) -> dict[str, Any]:
    """ONNX Runtime vs PyTorch, image by image and as one batch."""
    inputs, names = load_inputs(images, manifest)
    backend = OnnxRuntimeBackend(onnx_path, providers=["CPUExecutionProvider"], threads=threads)
    with torch.no_grad():
        reference = [t.numpy() for t in module(torch.from_numpy(inputs))]
    reference_by_name = dict(zip(module.output_names, reference))
    per_image = []
    for i, name in enumerate(names):
        single = backend.run(inputs[i:i + 1])
        diffs = compare_outputs({k: v[i:i + 1] for k, v in reference_by_name.items()}, single)
        per_image.append({"image": name, "max_abs_diff": diffs})
    batched = compare_outputs(reference_by_name, backend.run(inputs))
    worst = max(max(d["max_abs_diff"]["probabilities"] for d in per_image), batched["probabilities"])
    return {
        "backend": backend.describe(),
        "tolerance": tolerance,
        "images": per_image,
        "batch_of": len(names),
        "batch_max_abs_diff": batched,
        "max_abs_diff_probabilities": worst,
        "passed": worst <= tolerance,
    }
