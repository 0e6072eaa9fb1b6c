"""Inference backends: the runner contract with its lifecycle, ONNX Runtime, TensorRT engines
(their CUDA memory and sidecars), and the choice between them."""

from .base import Backend, probability_targets
from .onnxruntime_runner import PREFERRED_PROVIDERS, OnnxRuntimeBackend, onnxruntime_providers
from .selection import ARTIFACTS_ENV, artifacts_dir, open_backend, resolve_model

__all__ = ["ARTIFACTS_ENV", "PREFERRED_PROVIDERS", "Backend", "OnnxRuntimeBackend", "artifacts_dir",
           "onnxruntime_providers", "open_backend", "probability_targets", "resolve_model"]
