"""The ONNX Runtime runner: the exported graph on the best execution provider that loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ModelNotFoundError
from ...optional import require
from ..manifest import MANIFEST_KEY, Manifest
from .base import Backend

# Best first. ONNX Runtime silently drops a provider whose libraries are missing. Its TensorRT
# provider is left out on purpose: unconfigured, it builds an engine in every process and for
# every new input shape (minutes on a Jetson); chexplain's TensorRT path is `build-engine`'s
# cached engines, run by the TensorRT backend.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def onnxruntime() -> Any:
    return require("onnxruntime")


def preferred_providers(available: list[str]) -> list[str]:
    """Of the providers an ONNX Runtime build offers, those chexplain uses, best first."""
    return [p for p in PREFERRED_PROVIDERS if p in available]


def onnxruntime_providers() -> list[str]:
    """The execution providers this ONNX Runtime build offers that chexplain uses, best first."""
    return preferred_providers(onnxruntime().get_available_providers())


class OnnxRuntimeBackend(Backend):
    """Runs the exported graph with ONNX Runtime on the best provider it can load."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        ort = onnxruntime()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # LRP's relevance can fall into FP32's subnormal range deep inside a network; CPUs compute
        # on subnormals up to a hundred times slower (one of EfficientNet-B0's 1x1 transposed
        # convolutions: 24 ms instead of 0.3). Flushed to zero, they change no map.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        if threads:
            options.intra_op_num_threads = threads
        wanted = providers or onnxruntime_providers()
        self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        self.providers: list[str] = self.session.get_providers()
        metadata = self.session.get_modelmeta().custom_metadata_map
        if MANIFEST_KEY not in metadata:
            raise ModelNotFoundError(f"{self.path}: no chexplain manifest in the ONNX metadata; export it with `chexplain export`")
        self.manifest = Manifest.from_json(metadata[MANIFEST_KEY])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def describe(self) -> str:
        return f"onnxruntime {onnxruntime().__version__} ({self.providers[0]})"

    def run(self, image: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        if self.session is None:
            raise RuntimeError(f"{self.path}: the runner is closed")
        feeds = {"image": np.ascontiguousarray(image, np.float32), **inputs}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))

    def close(self) -> None:
        self.session = None
