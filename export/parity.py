"""Does the exported graph compute what PyTorch computes, on real radiographs?

Criteria per output: probabilities within 1e-5 (absolute); CAMs, exposed activations and
gradients within 1e-4 of their scale (float32 sums run in another order in each runtime, and
the differences grow with depth: 1.8e-5 of the scale on a RegNetY-400MF); LRP maps at Pearson >= 0.9995 and relative L2 <= 5e-2
(LRP divides by near-zero pre-activations, so float32 rounding differences between runtimes
grow); chosen targets identical. Logits are reported only.

Reduced-precision graphs (``fp16``, ``mixed``) are held to the precision plan's criteria:
probabilities within 1e-2 and every heatmap at Pearson >= 0.99 with the FP32 reference,
map by map, where both chose the same class (classes whose probabilities tie at FP16
resolution may swap places in a top-k; how often the targets agree is reported).

Ties: where a top-k graph chose between classes whose logits are equal (within
``TIE_TOLERANCE``; every class of an untrained head, whose logits are all 0), either order is
right, so the targets and the maps of those ranks are not compared; the report counts them
and says when every logit of every radiograph is equal (an untrained head).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..runtime.backends import OnnxRuntimeBackend
from ..runtime.evaluation.fidelity import (
    REDUCED_MIN_MAP_PEARSON,
    REDUCED_PROBABILITY_TOLERANCE,
    agreement,
    comparable_maps,
    map_pearsons,
)
from ..runtime.inputs.preprocess import preprocess
from ..runtime.inputs.reader import read_radiograph
from ..runtime.manifest import Manifest

FP32_TOLERANCE = 1e-5
MAP_TOLERANCE = 1e-4  # of the map's scale
LRP_MIN_PEARSON = 0.9995
LRP_MAX_RELATIVE_L2 = 5e-2
TIE_TOLERANCE = 1e-5  # logits closer than this are a tie: float32 rounding may order them either way
# Outputs without a class axis: compared whole.
CLASS_FREE_OUTPUTS = ("probabilities", "logits", "target_activations")


def load_inputs(images: Sequence[Path], manifest: Manifest) -> tuple[np.ndarray, list[str]]:
    """The network inputs of ``images``, made as the runtime makes them."""
    batch, names = [], []
    for path in images:
        radiograph = read_radiograph(path, allow_any_view=True)
        batch.append(preprocess(radiograph.pixels, manifest.preprocessing)[0])
        names.append(str(path))
    if not batch:
        raise ConfigError("no radiographs to check parity on")
    return np.stack(batch), names


def judge_reduced(name: str, metrics: dict[str, float]) -> tuple[str, bool]:
    """The precision plan's criteria for FP16 and mixed graphs."""
    if name == "probabilities":
        ok = metrics["max_abs_diff"] <= REDUCED_PROBABILITY_TOLERANCE
        return f"max |diff| <= {REDUCED_PROBABILITY_TOLERANCE:g}", ok
    if "min_map_pearson" in metrics:
        ok = metrics["min_map_pearson"] >= REDUCED_MIN_MAP_PEARSON
        return f"pearson per map >= {REDUCED_MIN_MAP_PEARSON}", ok
    return "reported only", True


def judge(name: str, metrics: dict[str, float]) -> tuple[str, bool]:
    """The criterion an output is held to, and whether it holds."""
    if name == "logits":
        return "reported only", True
    if name == "probabilities":
        return f"max |diff| <= {FP32_TOLERANCE:g}", metrics["max_abs_diff"] <= FP32_TOLERANCE
    if name == "targets":
        return "identical", metrics["max_abs_diff"] == 0
    if name.startswith("lrp"):
        ok = metrics["pearson"] >= LRP_MIN_PEARSON and metrics["relative_l2"] <= LRP_MAX_RELATIVE_L2
        return f"pearson >= {LRP_MIN_PEARSON}, relative L2 <= {LRP_MAX_RELATIVE_L2:g}", ok
    return f"max |diff| <= {MAP_TOLERANCE:g} x scale", metrics["max_abs_diff"] <= MAP_TOLERANCE * max(metrics["scale"], 1e-12)


def example_targets(count: int, num_classes: int) -> np.ndarray:
    """Three different classes per image, varying across images."""
    return np.stack([(np.arange(3) * 5 + i) % num_classes for i in range(count)]).astype(np.int64)


def decided_ranks(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[B, K]: whether each rank of a top-k choice is decided by the logits: no other class has
    a logit within TIE_TOLERANCE of the chosen one's (else the two may take either rank, or
    either may be chosen)."""
    chosen = np.take_along_axis(logits, targets, axis=1)  # [B, K]
    near = np.abs(logits[:, None, :] - chosen[:, :, None]) <= TIE_TOLERANCE  # [B, K, N]
    return near.sum(axis=2) == 1  # the chosen class itself only


def _compared(name: str, reference: np.ndarray, candidate: np.ndarray, decided: np.ndarray | None) -> dict[str, float]:
    """``agreement`` over the decided ranks of a per-class output (all of any other)."""
    if decided is None or name in CLASS_FREE_OUTPUTS:
        return agreement(reference, candidate)
    return agreement(reference[decided], candidate[decided])


def check_parity(module: nn.Module, onnx_path: Path, manifest: Manifest, images: Sequence[Path],
                 threads: int | None = None) -> dict[str, Any]:
    """ONNX Runtime (CPU) vs PyTorch in FP32, image by image and as one batch."""
    inputs, names = load_inputs(images, manifest)
    backend = OnnxRuntimeBackend(onnx_path, providers=["CPUExecutionProvider"], threads=threads)
    feeds_all: dict[str, np.ndarray] = {}
    if "targets" in backend.input_names:
        feeds_all["targets"] = example_targets(len(names), len(manifest.classes))
    with torch.no_grad():
        reference = module(torch.from_numpy(inputs), *(torch.from_numpy(v) for v in feeds_all.values()))
    reference_by_name = {k: v.numpy() for k, v in zip(module.output_names, reference)}
    runs = [backend.run(inputs, **feeds_all)]  # the batch, then each image alone
    runs += [backend.run(inputs[i:i + 1], **{k: v[i:i + 1] for k, v in feeds_all.items()}) for i in range(len(names))]
    reduced = manifest.precision != "fp32"
    logits = reference_by_name["logits"]
    top_k = getattr(getattr(module, "selection", None), "mode", None) == "topk"
    decided = decided_ranks(logits, reference_by_name["targets"]) if top_k else None
    outputs: dict[str, Any] = {}
    for name, ref in reference_by_name.items():
        per_run = [_compared(name, ref, runs[0][name], decided)]
        per_run += [_compared(name, ref[i:i + 1], run[name], None if decided is None else decided[i:i + 1])
                    for i, run in enumerate(runs[1:])]
        worst = {
            "max_abs_diff": max(m["max_abs_diff"] for m in per_run),
            "scale": max(m["scale"] for m in per_run),
            "relative_l2": max(m["relative_l2"] for m in per_run),
            "pearson": min(m["pearson"] for m in per_run),
        }
        if reduced and ref.ndim == 4:
            pearsons = map_pearsons(ref, runs[0][name], comparable_maps(reference_by_name, runs[0]))
            worst["min_map_pearson"] = min(pearsons) if pearsons else float("nan")
            worst["median_map_pearson"] = float(np.median(pearsons)) if pearsons else float("nan")
            worst["maps_compared"] = len(pearsons)
        if reduced and name == "targets":
            worst["agreement"] = float(np.mean(ref == runs[0][name]))
        criterion, passed = (judge_reduced if reduced else judge)(name, worst)
        overflow = not np.isfinite(ref).all()  # nothing to match: the rules themselves overflow on this model
        if overflow:
            criterion, passed = "PyTorch's own output is finite", False
        outputs[name] = {**worst, "criterion": criterion, "passed": passed, "reference_overflow": overflow}
    return {
        "precision": manifest.precision,
        "backend": backend.describe(),
        "images": names,
        "batch_of": len(names),
        "outputs": outputs,
        "max_abs_diff_probabilities": outputs["probabilities"]["max_abs_diff"],
        "tied_ranks": 0 if decided is None else int((~decided).sum()),
        "untrained_head": bool(np.all(np.ptp(logits, axis=1) <= TIE_TOLERANCE)),
        "passed": all(o["passed"] for o in outputs.values()),
        "failed": [name for name, o in outputs.items() if not o["passed"]],
        "reference_overflow": [name for name, o in outputs.items() if o["reference_overflow"]],
    }
