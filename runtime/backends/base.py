"""The contract between the commands and an inference backend, a runner with a lifecycle.

A backend is opened on one exported graph or engine, runs batches by name, and is closed
when done (``with open_backend(...) as backend:``), as Polygraphy's runners are: the
TensorRT backend frees its device memory, CUDA graphs, events and stream there; the ONNX
Runtime backend its session. ``gpu_timing`` says whether ``time_gpu`` may be set, after which each
``run`` leaves the GPU compute time of its enqueue in ``last_gpu_ms``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType

import numpy as np

from ..manifest import Manifest


class Backend(ABC):
    """What every backend offers; subclasses set the attributes in ``__init__`` and implement ``run``."""

    name: str
    path: Path
    manifest: Manifest
    input_names: list[str]
    output_names: list[str]
    gpu_timing = False  # can time its GPU work with CUDA events
    time_gpu = False
    last_gpu_ms: float | None = None

    @abstractmethod
    def describe(self) -> str:
        """The backend, its version and where it runs, for people."""

    @abstractmethod
    def run(self, image: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run on a batch ``image`` [B, C, H, W]; returns every output by name."""

    def close(self) -> None:  # noqa: B027 - a backend holding nothing needs no override
        """Release what the backend holds; closing twice is harmless."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()



def probability_targets(backend: Backend, count: int, index: int) -> np.ndarray:
    """Targets for runs that only need the probabilities: an empty class axis on ONNX Runtime,
    which then spends nothing on the explanations; one class on TensorRT, whose profiles start
    at one."""
    if backend.name == "onnxruntime":
        return np.zeros((count, 0), np.int64)
    return np.full((count, 1), index, np.int64)
