"""`chexplain export`: model -> ONNX graph -> parity report, in artifacts/<model>/."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch

from .. import __version__
from ..errors import ConfigError
from ..explain import Explainer
from ..grammar import (
    DEFAULT_CLASSES,
    DEFAULT_EPSILON,
    DEFAULT_EXPLAIN,
    DEFAULT_OPSET,
    DEFAULT_PRECISION,
    PRECISIONS,
    parse_classes,
)
from ..models.architectures import default_layer
from ..models.zoo import load_model
from ..runtime.manifest import sha256_of
from .explained import ExplainedGraph, build_methods, explanation_settings, input_bounds
from .onnx_export import Classifier, export_onnx, operator_counts
from .parity import check_parity
from .precision import write_precision

REPORT_NAME = "export_report.json"


def export_model(
    model: str,
    out_root: Path,
    images: Sequence[Path],
    *,
    opset: int = DEFAULT_OPSET,
    checkpoint_options: dict[str, Any] | None = None,
    explain: str = DEFAULT_EXPLAIN,
    classes: str = DEFAULT_CLASSES,
    layer: str | None = None,
    epsilon: float = DEFAULT_EPSILON,
    expose_gradients: bool = False,
    merge_batchnorm: bool = False,
    precision: str = DEFAULT_PRECISION,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export a model by name or checkpoint path, with the explanations ``explain`` names
    (``none`` for the classifier alone) and the precision plan ``precision``; returns (and
    writes) the export report. ``layer``: the Grad-CAM target layer, by default the
    architecture's last spatial feature map."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    network, manifest = load_model(model, **(checkpoint_options or {}))
    manifest.name = (checkpoint_options or {}).get("name") or manifest.name
    layer = layer or default_layer(manifest.architecture)
    methods = build_methods(explain, layer=layer, epsilon=epsilon, bounds=input_bounds(manifest))
    out_dir = out_root / manifest.name
    onnx_path = out_dir / "model.onnx"
    log(f"exporting {manifest.name} ({manifest.architecture}, {len(manifest.classes)} classes) to {onnx_path}")
    if manifest.missing_classes:
        log(f"  classes the weights were not trained on (left out): {', '.join(manifest.missing_classes)}")
    if methods:
        selection = parse_classes(classes, manifest.classes)
        explainer = Explainer(network, methods, expose_gradients=expose_gradients, merge_batchnorm=merge_batchnorm)
        module = ExplainedGraph(explainer, selection)
        manifest.explanations = explanation_settings(explainer, selection, manifest.classes)
        maps = [n for n in module.output_names if n not in ("probabilities", "logits", "targets")]
        log(f"  explanations: {', '.join(maps)} for classes {selection.spec}")
    else:
        module, selection = Classifier(network), None
    exported = export_onnx(module, manifest, onnx_path, opset=opset, with_targets=bool(selection and selection.mode == "input"))
    log(f"  exported in {exported.seconds:.1f} s, {onnx_path.stat().st_size / 2**20:.1f} MiB, opset {opset}")
    conversion = None
    if precision != "fp32":
        conversion = write_precision(onnx_path, onnx_path, precision)
        manifest.precision = precision
        log(f"  precision plan {conversion.describe()}; {onnx_path.stat().st_size / 2**20:.1f} MiB")
    parity = check_parity(module, onnx_path, manifest, images)
    log(f"  parity ONNX Runtime ({precision}) vs PyTorch (fp32) on {parity['batch_of']} radiographs:")
    for name, result in parity["outputs"].items():
        log(f"    {name:<22} {_parity_line(result)}")
    if parity["tied_ranks"]:
        log(f"    {parity['tied_ranks']} ranks chose between classes whose logits tie (either order is right): "
            f"their targets and maps are not compared")
    graph = onnx.load(str(onnx_path), load_external_data=False)
    report = {
        "model": manifest.name,
        "manifest": manifest.to_dict(),
        "onnx": {
            "path": str(onnx_path),
            "sha256": sha256_of(onnx_path),
            "size_bytes": onnx_path.stat().st_size,
            "opset": opset,
            "inputs": [i.name for i in graph.graph.input],
            "outputs": [o.name for o in graph.graph.output],
            "operators": operator_counts(graph),
            "export_seconds": round(exported.seconds, 2),
            "precision": precision,
            "precision_plan": conversion.describe() if conversion else "fp32: as exported",
        },
        "parity": parity,
        "versions": {
            "chexplain": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "python": platform.python_version(),
        },
    }
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    log(f"  report: {out_dir / REPORT_NAME}")
    return report


def _parity_line(result: dict[str, Any]) -> str:
    verdict = "ok" if result["passed"] else "FAILED"
    line = f"max|diff| {result['max_abs_diff']:.2e}  rel L2 {result['relative_l2']:.2e}  pearson {result['pearson']:.6f}"
    if "min_map_pearson" in result:
        line += f"  per map min {result['min_map_pearson']:.4f} median {result['median_map_pearson']:.4f}"
    if "agreement" in result:
        line += f"  agreement {result['agreement']:.0%}"
    return f"{line}  [{result['criterion']}] {verdict}"
