"""Which runner a command gets: a TensorRT engine where one fits this machine, else ONNX
Runtime on its best provider; and where exported models are found."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ...errors import ConfigError, EngineError, EngineMismatchError, ModelNotFoundError
from ...grammar import BACKENDS, DEFAULT_MODEL
from .base import Backend
from .compatibility import with_stack_problems
from .onnxruntime_runner import OnnxRuntimeBackend
from .sidecars import ENGINE_SUFFIX, engines_beside, pick_engine

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


def _tensorrt_here() -> tuple[str, str, str]:
    """TensorRT version, GPU name and compute capability; raises ImportError/RuntimeError when absent."""
    from .cuda import gpu_info
    from .tensorrt_runner import import_tensorrt

    version = import_tensorrt().__version__
    gpu = gpu_info()
    return version, gpu.name, gpu.compute_capability


def _open_engine(path: Path) -> Backend:
    from .tensorrt_runner import TensorRTBackend

    return TensorRTBackend(path)


def open_backend(model: str | None, backend: str = "auto", threads: int | None = None,
                 notify: Callable[[str], None] | None = None) -> Backend:
    """The backend for a model name, folder, ``.onnx`` or ``.engine`` file.

    ``auto`` takes a TensorRT engine beside the graph when one was built for this GPU and
    TensorRT version and loads, else ONNX Runtime; ``notify`` hears why an engine was passed over.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    tell = notify or (lambda message: None)
    if model and model.endswith(ENGINE_SUFFIX):
        if backend == "onnxruntime":
            raise ConfigError(f"{model} is a TensorRT engine; --backend onnxruntime needs an .onnx graph")
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
                raise EngineError(str(error)) from None
            tell(f"TensorRT engine not used ({with_stack_problems(str(error))}); running ONNX Runtime")
    return OnnxRuntimeBackend(onnx_path, threads=threads)
