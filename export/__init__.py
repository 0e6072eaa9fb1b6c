"""Explainer/classifier -> ONNX (manifest in the metadata), graph checks, TensorRT engines."""

from .onnx_export import DEFAULT_OPSET, Classifier, export_onnx, operator_counts, read_manifest
from .parity import check_parity
from .pipeline import export_model

__all__ = ["DEFAULT_OPSET", "Classifier", "check_parity", "export_model", "export_onnx", "operator_counts", "read_manifest"]
