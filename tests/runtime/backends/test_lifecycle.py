"""Backends have a lifecycle: opened, run, closed (as a context manager), and say whether they
can time their GPU work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chexplain.runtime.backends import Backend, OnnxRuntimeBackend, open_backend
from chexplain.runtime.backends.tensorrt_runner import TensorRTBackend


def test_onnxruntime_backend_runs_until_closed(classifier_onnx: Path):
    image = np.zeros((1, 3, 224, 224), np.float32)
    with open_backend(str(classifier_onnx), "onnxruntime") as backend:
        assert isinstance(backend, Backend) and not backend.gpu_timing
        assert backend.run(image)["probabilities"].shape == (1, 14)
    with pytest.raises(RuntimeError, match="closed"):
        backend.run(image)
    backend.close()  # closing twice is harmless


def test_only_the_tensorrt_backend_times_the_gpu():
    assert TensorRTBackend.gpu_timing and not OnnxRuntimeBackend.gpu_timing
    assert issubclass(TensorRTBackend, Backend)


def test_onnxruntime_flushes_subnormals_to_zero(classifier_onnx: Path):
    """Relevance deep in a network can be subnormal; computing on it would be slow, not different."""
    with OnnxRuntimeBackend(classifier_onnx) as backend:
        options = backend.session.get_session_options()
        assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"
