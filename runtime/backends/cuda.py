"""The little of the CUDA runtime that chexplain needs, through cuda-python (no torch)."""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import EngineError
from ...optional import hint


class CudaUnavailableError(EngineError):
    """No cuda-python, no driver or no NVIDIA GPU."""


def cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise CudaUnavailableError(f"cuda-python is not installed: {hint('cuda')}") from None
    return runtime


def check(result: Any) -> Any:
    """Unwrap cuda-python's ``(error, value...)`` tuples; raise on any error."""
    rt = cudart()
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != rt.cudaError_t.cudaSuccess:
        name = getattr(error, "name", str(error))
        raise CudaUnavailableError(f"CUDA error {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def native_handle(obj: Any) -> int:
    """The address behind a cuda-python object (a stream), for TensorRT's ``execute_async_v3``.
    ``int(obj)`` is deprecated since cuda-bindings 12.9.1 / 13.0 in favour of
    ``get_cuda_native_handle``; older releases have only ``int``."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


class CapturedGraphs:
    """Captured CUDA graphs by input shapes, at most ``capacity`` of them: a long-running node
    meets many batch shapes, and each graph holds device memory until destroyed, so the least
    recently used one is destroyed when a new one would exceed the capacity."""

    def __init__(self, capacity: int, destroy: Callable[[Any], None]) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._destroy = destroy
        self._graphs: OrderedDict[Hashable, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._graphs)

    def get(self, key: Hashable) -> Any | None:
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
        return graph

    def put(self, key: Hashable, graph: Any) -> None:
        self._graphs[key] = graph
        self._graphs.move_to_end(key)
        while len(self._graphs) > self.capacity:
            self._destroy(self._graphs.popitem(last=False)[1])

    def clear(self) -> None:
        while self._graphs:
            self._destroy(self._graphs.popitem(last=False)[1])


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for or runs on."""

    name: str
    compute_capability: str
    memory_bytes: int
    cuda_runtime: str
    cuda_driver: str


def cuda_version_text(number: int) -> str:
    """CUDA's version integer (12060) as text (``12.6``)."""
    return f"{number // 1000}.{number % 1000 // 10}"


def gpu_info(device: int = 0) -> GpuInfo:
    """Name, compute capability and CUDA versions of ``device``; raises when there is none."""
    rt = cudart()
    try:
        count = check(rt.cudaGetDeviceCount())
    except CudaUnavailableError as error:
        raise CudaUnavailableError(f"no usable NVIDIA GPU ({error}: no driver, or one too old for this cuda-python)") from None
    if count <= device:
        raise CudaUnavailableError(f"no NVIDIA GPU number {device} (found {count})")
    props = check(rt.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(
        name=name.strip("\x00 "),
        compute_capability=f"{props.major}.{props.minor}",
        memory_bytes=int(props.totalGlobalMem),
        cuda_runtime=cuda_version_text(check(rt.cudaRuntimeGetVersion())),
        cuda_driver=cuda_version_text(check(rt.cudaDriverGetVersion())),
    )


class PinnedBuffer:
    """Page-locked host memory and device memory of one size, with numpy views."""

    def __init__(self, nbytes: int) -> None:
        rt = cudart()
        self.nbytes = max(int(nbytes), 1)
        self.host = check(rt.cudaMallocHost(self.nbytes))
        self.device = check(rt.cudaMalloc(self.nbytes))

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The host memory as an array (no copy)."""
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_byte * count).from_address(int(self.host))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def to_device(self, nbytes: int, stream: Any) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(self.device, self.host, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def to_host(self, nbytes: int, stream: Any) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(self.host, self.device, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def free(self) -> None:
        rt = cudart()
        if self.device is not None:
            rt.cudaFree(self.device)
            rt.cudaFreeHost(self.host)
            self.device = self.host = None
