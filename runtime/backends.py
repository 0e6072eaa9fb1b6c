"""Inference backends for the exported graph. ONNX Runtime here; TensorRT joins it later."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..models.manifest import DEFAULT_MODEL, MANIFEST_KEY, Manifest
from .errors import ModelNotFoundError

# Best first. ONNX Runtime silently drops a provider whose libraries are missing.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ARTIFACTS_ENV = "CHEXPLAIN_ARTIFACTS"


def artifacts_dir() -> Path:
    """Where exported models live: $CHEXPLAIN_ARTIFACTS, else ./artifacts."""
    return Path(os.environ.get(ARTIFACTS_ENV, "artifacts"))


def resolve_model(model: str | None) -> Path:
    """The ``.onnx`` file for a model name, a model folder or an ``.onnx`` path."""
    name = model or DEFAULT_MODEL
    candidates = [Path(name)] if name.endswith(".onnx") else [Path(name) / "model.onnx", artifacts_dir() / name / "model.onnx"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"no exported model at {candidates[-1]}; run `chexplain export --model {name}` (or `make export`) first"
    )


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "ONNX Runtime is not installed: pip install 'chexplain[cpu]' (or 'chexplain[gpu]' for CUDA)"
        ) from None
    return onnxruntime


def onnxruntime_providers() -> list[str]:
    """The execution providers this ONNX Runtime build offers, best first."""
    available = _onnxruntime().get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available]


class OnnxRuntimeBackend:
    """Runs the exported graph with ONNX Runtime on the best provider it can load."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        ort = _onnxruntime()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        wanted = providers or onnxruntime_providers()
        self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        self.providers: list[str] = self.session.get_providers()
        metadata = self.session.get_modelmeta().custom_metadata_map
        if MANIFEST_KEY not in metadata:
            raise ValueError(f"{self.path}: no chexplain manifest in the ONNX metadata; export it with `chexplain export`")
        self.manifest = Manifest.from_json(metadata[MANIFEST_KEY])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def describe(self) -> str:
        return f"onnxruntime {self._version()} ({self.providers[0]})"

    @staticmethod
    def _version() -> str:
        return _onnxruntime().__version__

    def run(self, image: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run on a batch ``image`` [B, C, H, W]; returns every output by name."""
        feeds = {"image": np.ascontiguousarray(image, np.float32), **inputs}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


def open_backend(model: str | None, backend: str = "auto", threads: int | None = None) -> OnnxRuntimeBackend:
    """The backend for a model: ``auto`` and ``onnxruntime`` run ONNX Runtime."""
    if backend not in ("auto", "onnxruntime"):
        raise ValueError(f"unknown backend {backend!r}; available here: auto, onnxruntime")
    return OnnxRuntimeBackend(resolve_model(model), threads=threads)
