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
from ..models.checkpoints import sha256_of
from ..models.zoo import load_model
from .onnx_export import DEFAULT_OPSET, Classifier, export_onnx
from .parity import check_parity

REPORT_NAME = "export_report.json"


def export_model(
    model: str,
    out_root: Path,
    images: Sequence[Path],
    *,
    opset: int = DEFAULT_OPSET,
    checkpoint_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export a model by name or checkpoint path; returns (and writes) the export report."""
    network, manifest = load_model(model, **(checkpoint_options or {}))
    out_dir = out_root / manifest.name
    onnx_path = out_dir / "model.onnx"
    log(f"exporting {manifest.name} ({manifest.architecture}, {len(manifest.classes)} classes) to {onnx_path}")
    if manifest.missing_classes:
        log(f"  classes the weights were not trained on (left out): {', '.join(manifest.missing_classes)}")
    module = Classifier(network)
    exported = export_onnx(module, manifest, onnx_path, opset=opset)
    log(f"  exported in {exported.seconds:.1f} s, {onnx_path.stat().st_size / 2**20:.1f} MiB, opset {opset}")
    parity = check_parity(module, onnx_path, manifest, images)
    verdict = "passed" if parity["passed"] else "FAILED"
    log(
        f"  parity ONNX Runtime vs PyTorch on {parity['batch_of']} radiographs: max |dp| = "
        f"{parity['max_abs_diff_probabilities']:.2e} (tolerance {parity['tolerance']:.0e}) {verdict}"
    )
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
            "operators": exported.operators,
            "export_seconds": round(exported.seconds, 2),
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
