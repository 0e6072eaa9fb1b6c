"""Inference backends for the exported graph: a TensorRT engine where one fits this machine,
else ONNX Runtime on its best provider."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..models.manifest import DEFAULT_MODEL, MANIFEST_KEY, Manifest
from .engines import ENGINE_SUFFIX, EngineMismatchError, engines_beside, pick_engine
from .errors import ModelNotFoundError

BACKENDS = ("auto", "tensorrt", "onnxruntime")

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


class Backend(Protocol):
    """What the commands need of a backend."""

    name: str
    path: Path
    manifest: Manifest
    input_names: list[str]
    output_names: list[str]

    def describe(self) -> str: ...

    def run(self, image: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]: ...


def probability_targets(backend: Backend, count: int, index: int) -> np.ndarray:
    """Targets for runs that only need the probabilities: an empty class axis on ONNX Runtime,
    which then spends nothing on the explanations; one class on TensorRT, whose profiles start
    at one."""
    if backend.name == "onnxruntime":
        return np.zeros((count, 0), np.int64)
    return np.full((count, 1), index, np.int64)


def _tensorrt_here() -> tuple[str, str, str]:
    """TensorRT version, GPU name and compute capability; raises ImportError/RuntimeError when absent."""
    from .cuda import gpu_info
    from .tensorrt_backend import import_tensorrt

    version = import_tensorrt().__version__
    gpu = gpu_info()
    return version, gpu.name, gpu.compute_capability


def _open_engine(path: Path) -> Backend:
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path)


def open_backend(model: str | None, backend: str = "auto", threads: int | None = None,
                 notify: Callable[[str], None] | None = None) -> Backend:
    """The backend for a model name, folder, ``.onnx`` or ``.engine`` file.

    ``auto`` takes a TensorRT engine beside the graph when one was built for this GPU and
    TensorRT version and loads, else ONNX Runtime; ``notify`` hears why an engine was passed over.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    tell = notify or (lambda message: None)
    if model and model.endswith(ENGINE_SUFFIX):
        if backend == "onnxruntime":
            raise ValueError(f"{model} is a TensorRT engine; --backend onnxruntime needs an .onnx graph")
        if not Path(model).is_file():
            raise ModelNotFoundError(f"no engine at {model}")
        return _open_engine(Path(model))
    onnx_path = resolve_model(model)
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, threads=threads)
    engines = engines_beside(onnx_path.parent)
    if backend == "tensorrt" and not engines:
        raise ModelNotFoundError(f"no TensorRT engine beside {onnx_path}; build one with `chexplain build-engine {onnx_path}`")
    if engines:
        try:
            here = _tensorrt_here()
            chosen, reasons = pick_engine(engines, *here)
            if chosen is None:
                raise EngineMismatchError(reasons[0] + f": rebuild it here with `{engines[0].rebuild_command()}`")
            return _open_engine(chosen.path)
        except (ImportError, RuntimeError) as error:
            if backend == "tensorrt":
                raise ValueError(str(error)) from None
            tell(f"TensorRT engine not used ({error}); running ONNX Runtime")
    return OnnxRuntimeBackend(onnx_path, threads=threads)
