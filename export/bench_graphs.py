"""What `chexplain bench` needs from PyTorch: graphs to time, the FP32 reference outputs, and
the eager reference implementations to time against (forward, pytorch-grad-cam, Zennit).

Bench graphs are exported once per method with a ``targets`` input, so one graph times any
number of classes K, and kept under ``<artifacts>/bench/<model>/<method>/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .. import sample_images
from ..errors import ParityError
from ..explain import Explainer
from ..explain.references import pytorch_grad_cam_batched, zennit_composite, zennit_lrp
from ..grammar import DEFAULT_EPSILON
from ..models.architectures import default_layer, family_of
from ..models.zoo import load_model
from ..runtime.manifest import Manifest, slug
from .explained import build_methods, input_bounds
from .metadata import manifest_of
from .pipeline import export_model
from .precision import write_precision


def bench_graph(model: str, method: str, precision: str, root: Path, log: Callable[[str], None]) -> Path:
    """The graph for ``method`` (``none``: the classifier) with a targets input, exported once."""
    folder = root / slug(method.replace("+", "plus"))
    network, manifest = load_model(model)
    fp32 = folder / manifest.name / "model.onnx"
    existing = manifest_of(onnx.load(str(fp32), load_external_data=False)) if fp32.is_file() else None
    if existing is None or (method != "none" and not existing.explanations.targets_input):
        log(f"exporting the bench graph for {method} to {fp32} (once; reused by later runs)")
        report = export_model(model, folder, sample_images(), explain=method,
                              classes="input", log=lambda line: log(f"  {line.strip()}"))
        if not report["parity"]["passed"]:
            raise ParityError(f"{fp32}: the bench graph failed its parity check; see its export_report.json")
    if precision == "fp32":
        return fp32
    converted = fp32.with_name(f"model.{precision}.onnx")
    if not converted.is_file() or converted.stat().st_mtime < fp32.stat().st_mtime:
        log(f"precision plan {write_precision(fp32, converted, precision).describe()} -> {converted}")
    return converted


def _methods(method: str, manifest: Manifest):
    return build_methods(method, layer=default_layer(manifest.architecture), epsilon=DEFAULT_EPSILON,
                         bounds=input_bounds(manifest))


def reference_outputs(model: str, method: str, images: np.ndarray, targets: np.ndarray | None) -> dict[str, np.ndarray]:
    """The FP32 PyTorch explainer's outputs for the batch (``method`` ``none``: the classifier)."""
    network, manifest = load_model(model)
    x = torch.from_numpy(np.ascontiguousarray(images))
    with torch.no_grad():
        if method == "none":
            logits = network.eval()(x)
            return {"probabilities": torch.sigmoid(logits).numpy(), "logits": logits.numpy()}
        explainer = Explainer(network, _methods(method, manifest)).eval()
        out = explainer(x, torch.from_numpy(targets) if targets is not None else None)
    return {k: v.numpy() for k, v in out.items()}


def reference_timers(model: str, method: str, classes: int, image: np.ndarray, threads: int | None
                     ) -> dict[str, Callable[[], object]]:
    """Eager PyTorch forward, and the reference library for ``method``, for one image and the
    classes 0..K-1, called through their public APIs as a user would."""
    if threads:
        torch.set_num_threads(threads)
    network, manifest = load_model(model)
    network.eval()
    x = torch.from_numpy(np.ascontiguousarray(image[None]))
    chosen = list(range(classes))

    def forward() -> None:
        with torch.no_grad():
            network(x)

    timers: dict[str, Callable[[], object]] = {"eager PyTorch forward": forward}
    plural = "es" if classes != 1 else ""
    for name in ([] if method == "none" else method.split(",")):
        if name.startswith("lrp") and family_of(manifest.architecture).transformer:
            continue  # Zennit has no attention rules (its issue #184): nothing equal to time against
        if name.startswith("lrp"):
            composite_name = name.split(":", 1)[1] if ":" in name else "epsilon"
            first = next(m for m in network.modules() if isinstance(m, nn.Conv2d | nn.Linear))
            composite = zennit_composite(composite_name, DEFAULT_EPSILON, input_bounds(manifest),
                                         first_stride=getattr(first, "stride", (1, 1)))
            timers[f"Zennit {composite_name}, {classes} class{plural}"] = (
                lambda composite=composite: zennit_lrp(network, composite, x, chosen))
        else:
            layer = network.get_submodule(default_layer(manifest.architecture))
            timers[f"pytorch-grad-cam {name}, {classes} class{plural} (batched)"] = (
                lambda variant=name, layer=layer: pytorch_grad_cam_batched(network, layer, variant, x, chosen))
    return timers
