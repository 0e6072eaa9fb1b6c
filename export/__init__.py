"""Explainer/classifier -> ONNX (manifest in the metadata), graph checks, precision plans,
TensorRT engines.

The precision plan and the engine builder need onnx (and tensorrt) but not torch, so a
Jetson can build engines without PyTorch; the rest is imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Classifier": ".onnx_export",
    "export_onnx": ".onnx_export",
    "operator_counts": ".onnx_export",
    "read_manifest": ".metadata",
    "check_parity": ".parity",
    "export_model": ".pipeline",
    "convert_precision": ".precision",
    "build_engine": ".tensorrt_build",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
