"""Run a chexplain TensorRT engine (TensorRT 10 API; memory through cuda-python, no torch).

Deserialises the engine, checks its sidecar against this GPU and TensorRT version, and
runs named I/O tensors: ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``
on one CUDA stream, inputs and outputs staged in pinned host buffers. With
``cuda_graph=True`` the enqueue is captured once per input shape and replayed. With
``time_gpu`` set, CUDA events around the enqueue give ``last_gpu_ms`` (GPU compute,
without the host/device transfers).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, EngineError, EngineMismatchError
from ...optional import require
from ..manifest import Manifest
from .base import Backend
from .cuda import CapturedGraphs, PinnedBuffer, check, cudart, gpu_info, native_handle
from .sidecars import EngineInfo

MAX_CUDA_GRAPHS = 8  # captured input shapes kept per engine (each holds device memory)


def _destroy_graph(captured: tuple[Any, Any]) -> None:
    rt = cudart()
    graph, graph_exec = captured
    rt.cudaGraphExecDestroy(graph_exec)
    rt.cudaGraphDestroy(graph)


def import_tensorrt() -> Any:
    """The tensorrt module, or ImportError saying how to install it."""
    return require("tensorrt")


class TensorRTBackend(Backend):
    """Runs one engine on the GPU; the same ``run`` contract as the ONNX Runtime backend."""

    name = "tensorrt"
    gpu_timing = True
    _stream: Any = None  # set last in __init__: close() before that has nothing to free

    def __init__(self, engine_path: str | Path, cuda_graph: bool = False) -> None:
        trt = import_tensorrt()
        self.path = Path(engine_path)
        self.info = EngineInfo.read(self.path)
        gpu = gpu_info()
        self.info.check(trt.__version__, gpu.name, gpu.compute_capability)
        self.manifest = Manifest.from_dict(self.info.data["manifest"])
        self.gpu = gpu
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.info.dla_core is not None:
            self._runtime.DLA_core = self.info.dla_core  # before deserialising, as trtexec --useDLACore does
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(f"{self.path}: TensorRT could not deserialise the engine; rebuild it with "
                               f"`{self.info.rebuild_command()}`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._buffers: dict[str, PinnedBuffer] = {}
        self.cuda_graph = cuda_graph
        self._graphs = CapturedGraphs(MAX_CUDA_GRAPHS, _destroy_graph)  # input shapes -> (graph, exec)
        self._events = (check(cudart().cudaEventCreate()), check(cudart().cudaEventCreate()))
        self._stream = check(cudart().cudaStreamCreate())

    def describe(self) -> str:
        return f"tensorrt {self._trt.__version__} ({self.gpu.name}, {self.info.precision} engine {self.path.name})"

    def _buffer(self, name: str, nbytes: int) -> PinnedBuffer:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            if buffer is not None:
                buffer.free()
                self._graphs.clear()  # captured graphs hold the old addresses
            buffer = self._buffers[name] = PinnedBuffer(nbytes)
            self.context.set_tensor_address(name, int(buffer.device))
        return buffer

    def run(self, image: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run on a batch ``image`` [B, C, H, W]; returns every output by name."""
        feeds = {"image": image, **inputs}
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise ConfigError(f"{self.path.name}: missing inputs {', '.join(sorted(missing))}")
        rt = cudart()
        key = []
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            key.append(array.shape)
            if not self.context.set_input_shape(name, array.shape):
                raise ConfigError(f"{self.path.name}: input {name} of shape {array.shape} is outside the engine's profile "
                                 f"{self.info.data['profiles'].get(name)}")
            buffer = self._buffer(name, array.nbytes)
            buffer.view(array.shape, array.dtype)[...] = array
            buffer.to_device(array.nbytes, self._stream)
        shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in self.output_names}
        for name, shape in shapes.items():
            self._buffer(name, int(np.prod(shape)) * self._dtypes[name].itemsize)
        if self.time_gpu:
            check(rt.cudaEventRecord(self._events[0], self._stream))
        self._enqueue(tuple(key))
        if self.time_gpu:
            check(rt.cudaEventRecord(self._events[1], self._stream))
        results = {}
        for name, shape in shapes.items():
            nbytes = int(np.prod(shape)) * self._dtypes[name].itemsize
            self._buffers[name].to_host(nbytes, self._stream)
        check(rt.cudaStreamSynchronize(self._stream))
        self.last_gpu_ms = check(rt.cudaEventElapsedTime(*self._events)) if self.time_gpu else None
        for name, shape in shapes.items():
            results[name] = self._buffers[name].view(shape, self._dtypes[name]).copy()
        return results

    def _execute(self) -> None:
        if not self.context.execute_async_v3(native_handle(self._stream)):
            raise EngineError(f"{self.path.name}: TensorRT failed to enqueue the engine")

    def _enqueue(self, key: tuple[tuple[int, ...], ...]) -> None:
        if not self.cuda_graph:
            self._execute()
            return
        rt = cudart()
        captured = self._graphs.get(key)
        if captured is None:
            self._execute()  # one plain enqueue first: TensorRT finishes its lazy set-up outside the capture
            check(rt.cudaStreamBeginCapture(self._stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            enqueued = self.context.execute_async_v3(native_handle(self._stream))
            graph = check(rt.cudaStreamEndCapture(self._stream))  # always end the capture, even after a failure
            if not enqueued:
                rt.cudaGraphDestroy(graph)
                raise EngineError(f"{self.path.name}: TensorRT failed to enqueue the engine while capturing a CUDA graph")
            captured = (graph, check(rt.cudaGraphInstantiate(graph, 0)))
            self._graphs.put(key, captured)
        check(rt.cudaGraphLaunch(captured[1], self._stream))

    def close(self) -> None:
        """Free the CUDA graphs, buffers, events and stream; the engine and context go with the object."""
        if self._stream is None:
            return
        rt = cudart()
        self._graphs.clear()
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()
        for event in self._events:
            rt.cudaEventDestroy(event)
        rt.cudaStreamDestroy(self._stream)
        self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have taken cudart already
            self.close()
