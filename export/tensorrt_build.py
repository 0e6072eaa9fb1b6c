"""`chexplain build-engine`: ONNX graph -> TensorRT engine, on the machine that will run it.

Written against the TensorRT 10 Python API (JetPack 6 ships 10.3) and TensorRT 11. On the
GPU every build is a strongly typed network (STRONGLY_TYPED exists since TensorRT 10.0 and is
all TensorRT 11 knows): the precision lives in the graph, converted by the precision plan
(``export/precision.py``) for ``fp16`` and ``mixed``, so TensorRT 10 and 11 build the same
engine. TF32 is cleared wherever FP32 is promised (``fp32``, and the FP32 explanation
subgraph of ``mixed``); Orin and Hopper allow it by default.

The DLA (Jetson Orin, TensorRT 10) has no strongly typed path before TensorRT 11 and no
dynamic shapes: a DLA build is weakly typed with the FP16 flag (``mixed``: the layers the
graph types FP32 pinned there, so they fall back to the GPU), GPU fallback on, and one fixed
shape per input.

Needs onnx and tensorrt (and cuda-python for the GPU's description), not torch.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError, EngineError
from ..grammar import DEFAULT_ENGINE_PRECISION, DEFAULT_WORKSPACE_GB, PRECISIONS
from ..runtime.backends.compatibility import with_stack_problems
from ..runtime.backends.cuda import GpuInfo, gpu_info
from ..runtime.backends.sidecars import engine_filename, gpu_slug, write_sidecar
from ..runtime.backends.tensorrt_runner import import_tensorrt
from ..runtime.manifest import Manifest, sha256_of
from .metadata import read_manifest
from .precision import fp16_fragile_methods, write_precision


class EngineBuildError(EngineError):
    """The engine could not be built; the message says why."""


class TensorRTUnavailableError(EngineBuildError):
    """No TensorRT or no NVIDIA GPU on this machine."""


@dataclass(frozen=True)
class BatchRange:
    """The optimisation profile's batch sizes."""

    minimum: int
    optimum: int
    maximum: int

    @classmethod
    def parse(cls, text: str) -> BatchRange:
        """``MIN:OPT:MAX`` (trtexec's order) or ``N`` for a fixed batch."""
        parts = text.split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"batch {text!r}: expected MIN:OPT:MAX or N, e.g. 1:1:8") from None
        if len(values) == 1:
            values *= 3
        if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
            raise ConfigError(f"batch {text!r}: expected 1 <= MIN <= OPT <= MAX, e.g. 1:1:8")
        return cls(*values)

    def __str__(self) -> str:
        return f"{self.minimum}:{self.optimum}:{self.maximum}"


@dataclass(frozen=True)
class BuildPlan:
    """How a precision is built with one TensorRT major version, on the GPU or a DLA core."""

    tensorrt_major: int
    precision: str
    graph_precision: str  # the graph TensorRT parses
    strongly_typed: bool
    fp16_flag: bool
    pin_fp32_layers: bool
    tf32: bool  # whether FP32 layers may run in TF32
    dla_core: int | None = None

    def describe(self) -> str:
        if self.dla_core is not None:
            pinned = ", layers the graph types FP32 pinned to FP32 on the GPU" if self.pin_fp32_layers else ""
            return (f"TensorRT {self.tensorrt_major}: DLA core {self.dla_core}, {self.graph_precision} graph, FP16 flag"
                    f"{pinned}, GPU fallback, fixed shapes")
        tf32 = "" if self.tf32 else ", TF32 off"
        return f"TensorRT {self.tensorrt_major}: strongly typed network from the {self.graph_precision} graph{tf32}"


def plan_build(tensorrt_version: str, precision: str, dla_core: int | None = None) -> BuildPlan:
    """The build path for ``precision`` with the installed TensorRT."""
    if precision not in PRECISIONS:
        raise EngineBuildError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    try:
        major = int(tensorrt_version.split(".")[0])
    except ValueError:
        raise EngineBuildError(f"cannot read the TensorRT version {tensorrt_version!r}") from None
    if major < 10:
        raise EngineBuildError(f"TensorRT {tensorrt_version} is too old: chexplain builds with TensorRT 10 (JetPack 6) or 11")
    if dla_core is None:
        return BuildPlan(major, precision, precision, strongly_typed=True, fp16_flag=False, pin_fp32_layers=False,
                         tf32=precision == "fp16")
    if precision == "fp32":
        raise EngineBuildError("the DLA runs FP16 (or INT8), not FP32: use --precision mixed (or fp16) with --dla")
    if major >= 11:
        raise EngineBuildError(f"chexplain builds DLA engines with TensorRT 10 (JetPack 6), not {tensorrt_version}")
    mixed = precision == "mixed"
    return BuildPlan(major, precision, "mixed" if mixed else "fp32", strongly_typed=False, fp16_flag=True,
                     pin_fp32_layers=mixed, tf32=False, dla_core=dla_core)


def check_dla_core(dla_core: int, available: int) -> None:
    """Refuse a DLA core this device does not have, naming the ones it has."""
    if available == 0:
        raise EngineBuildError("--dla: this device has no DLA (Jetson AGX Orin and Orin NX have two, Orin Nano none)")
    if not 0 <= dla_core < available:
        raise EngineBuildError(f"--dla {dla_core}: this device has {available} DLA cores (0-{available - 1})")


def precision_caveat(manifest: Manifest, precision: str) -> str | None:
    """Why a reduced-precision engine of this graph may not keep its maps, or None: FP16 rounding
    of the forward flips the maps of the LRP composites without ``-bn`` (docs/deployment.md, "Precision plan")."""
    fragile = list(fp16_fragile_methods(manifest).values()) if precision != "fp32" else []
    if fragile:
        return (f"{', '.join(fragile)} does not keep its maps under {precision} (FP16 rounding flips them); "
                f"export a -bn composite (the default) or build --precision fp32")
    return None


def source_graph(onnx_path: Path, wanted: str, log: Callable[[str], None]) -> Path:
    """The graph with precision ``wanted``: the export itself, or a conversion written beside it."""
    current = read_manifest(onnx_path).precision
    if current == wanted:
        return onnx_path
    if current != "fp32":
        raise EngineBuildError(
            f"{onnx_path} is a {current} graph and this build needs a {wanted} one: "
            f"build from the FP32 export (chexplain export --precision fp32)"
        )
    target = onnx_path.with_name(f"{onnx_path.stem}.{wanted}.onnx")
    report = write_precision(onnx_path, target, wanted)
    log(f"  precision plan {report.describe()} -> {target}")
    return target


def profile_shapes(shape: tuple[int, ...], batch: BatchRange, num_classes: int,
                   fixed: bool = False) -> tuple[tuple[int, ...], ...]:
    """min/opt/max shapes of an input: axis 0 is the batch; any other dynamic axis is the class axis.
    ``fixed`` (the DLA): min = opt = max, at the optimum batch and the default top-k."""
    def fill(batch_size: int, classes: int) -> tuple[int, ...]:
        return tuple(batch_size if axis == 0 else classes if size < 0 else size for axis, size in enumerate(shape))

    optimum = fill(batch.optimum, min(3, num_classes))
    if fixed:
        return optimum, optimum, optimum
    return fill(batch.minimum, 1), optimum, fill(batch.maximum, num_classes)


def parser_errors(parser: Any) -> list[str]:
    """Every error the ONNX parser reported, with the node it names."""
    lines = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        where = []
        for attribute in ("node_name", "node_operator"):
            getter = getattr(error, attribute, None)
            value = getter() if callable(getter) else None
            if value:
                where.append(str(value))
        node = f" at node {' '.join(where)}" if where else f" at node #{error.node()}"
        lines.append(f"  [{error.code()}]{node}: {error.desc()}")
    return lines


def pin_fp32_layers(network: Any, trt: Any) -> int:
    """Pin every layer whose floating-point tensors are all FP32 to FP32; returns how many."""
    floats = (trt.float32, trt.float16)
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in (trt.LayerType.CAST, trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
            continue
        tensors = [layer.get_input(i) for i in range(layer.num_inputs)] + [layer.get_output(i) for i in range(layer.num_outputs)]
        kinds = {t.dtype for t in tensors if t is not None and t.dtype in floats}
        if kinds != {trt.float32}:
            continue
        layer.precision = trt.float32
        for i in range(layer.num_outputs):
            if layer.get_output(i).dtype == trt.float32:
                layer.set_output_type(i, trt.float32)
        pinned += 1
    return pinned


def network_flags(trt: Any, plan: BuildPlan) -> int:
    """``create_network``'s flags: STRONGLY_TYPED where the plan wants it and the enum still has it
    (TensorRT 11 types every network strongly and deprecates the flag)."""
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(strongly_typed) if plan.strongly_typed and strongly_typed is not None else 0


def tensorrt_available() -> tuple[bool, str]:
    """Whether an engine can be built here, and if not, why."""
    try:
        trt = import_tensorrt()
        gpu = gpu_info()
    except (ImportError, RuntimeError) as error:
        return False, with_stack_problems(str(error))
    return True, f"TensorRT {trt.__version__} on {gpu.name}"


@dataclass
class EngineBuild:
    path: Path
    sidecar: Path
    seconds: float
    plan: BuildPlan
    manifest: Manifest


def build_engine(
    onnx_path: str | Path,
    precision: str = DEFAULT_ENGINE_PRECISION,
    *,
    batch: BatchRange = BatchRange(1, 1, 8),
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
    timing_cache: str | Path | None = None,
    dla_core: int | None = None,
    log: Callable[[str], None] = print,
) -> EngineBuild:
    """Build ``model.<gpu>.trt<version>.<precision>[.dla<N>].engine`` and its sidecar beside the graph."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineBuildError(f"{onnx_path}: no such ONNX graph; run `chexplain export` first")
    try:
        trt = import_tensorrt()
    except ImportError as error:
        raise TensorRTUnavailableError(str(error)) from None
    try:
        gpu = gpu_info()
    except RuntimeError as error:
        raise TensorRTUnavailableError(str(error)) from None
    plan = plan_build(trt.__version__, precision, dla_core)
    log(f"building a {precision} engine from {onnx_path} on {gpu.name} (compute {gpu.compute_capability}); {plan.describe()}")
    caveat = precision_caveat(read_manifest(onnx_path), precision)
    if caveat:
        log(f"  warning: {caveat}")
    source = source_graph(onnx_path, plan.graph_precision, log)
    manifest = read_manifest(source)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if plan.dla_core is not None:
        check_dla_core(plan.dla_core, builder.num_DLA_cores)
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        raise EngineBuildError(f"{source}: TensorRT's ONNX parser refused the graph:\n" + "\n".join(parser_errors(parser)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    if not plan.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    pinned = 0
    if plan.pin_fp32_layers:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = pin_fp32_layers(network, trt)
        log(f"  {pinned} of {network.num_layers} layers pinned to FP32 (the explanation subgraph)")
    dla_layers = None
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        dla_layers = sum(bool(config.can_run_on_DLA(network.get_layer(i))) for i in range(network.num_layers))
        if dla_layers == 0:
            raise EngineBuildError(f"{source}: no layer can run on the DLA; build without --dla")
        log(f"  {dla_layers} of {network.num_layers} layers can run on DLA core {plan.dla_core}; the rest run on the GPU")
    profile = builder.create_optimization_profile()
    profiles: dict[str, list[list[int]]] = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shapes = profile_shapes(tuple(tensor.shape), batch, len(manifest.classes), fixed=plan.dla_core is not None)
        profile.set_shape(tensor.name, *shapes)
        profiles[tensor.name] = [list(s) for s in shapes]
    if plan.dla_core is not None:
        log(f"  the DLA has no dynamic shapes: fixed at {', '.join(f'{n} {s[0]}' for n, s in profiles.items())}")
    config.add_optimization_profile(profile)
    default_cache = onnx_path.with_name(f"timing.{gpu_slug(gpu.name)}.trt{trt.__version__}.cache")
    cache_path = Path(timing_cache) if timing_cache else default_cache
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {source}; its log above says why")
    engine_path = onnx_path.with_name(engine_filename(onnx_path.stem, gpu.name, trt.__version__, precision, plan.dla_core))
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = write_sidecar(engine_path, _sidecar(
        trt, gpu, plan, manifest, onnx_path, source, engine_path, network, profiles,
        batch=batch, workspace_gb=workspace_gb, pinned=pinned, dla_layers=dla_layers,
        cache_path=cache_path, seconds=seconds,
    ))
    log(f"  engine {engine_path} ({engine_path.stat().st_size / 2**20:.1f} MiB) in {seconds:.0f} s; sidecar {sidecar.name}")
    return EngineBuild(engine_path, sidecar, seconds, plan, manifest)


def _tensors(network: Any, count: int, get: Callable[[int], Any]) -> list[dict[str, Any]]:
    return [{"name": t.name, "dtype": str(t.dtype).rsplit(".", 1)[-1], "shape": list(t.shape)} for t in map(get, range(count))]


def _sidecar(trt: Any, gpu: GpuInfo, plan: BuildPlan, manifest: Manifest, onnx_path: Path, source: Path,
             engine_path: Path, network: Any, profiles: dict[str, list[list[int]]], *, batch: BatchRange,
             workspace_gb: float, pinned: int, dla_layers: int | None, cache_path: Path, seconds: float) -> dict[str, Any]:
    manifest.precision = plan.precision
    return {
        "engine": engine_path.name,
        "engine_sha256": sha256_of(engine_path),
        "precision": plan.precision,
        "build_path": plan.describe(),
        "tf32": plan.tf32,
        "layers_pinned_fp32": pinned,
        "tensorrt": {"version": trt.__version__, "major": plan.tensorrt_major},
        "cuda": {"runtime": gpu.cuda_runtime, "driver": gpu.cuda_driver},
        "gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability},
        "dla_core": plan.dla_core,
        "dla_layers": dla_layers,
        "onnx": {"source": str(onnx_path), "source_sha256": sha256_of(onnx_path),
                 "built_from": str(source), "built_from_sha256": sha256_of(source)},
        "batch": str(batch),
        "profiles": profiles,
        "inputs": _tensors(network, network.num_inputs, network.get_input),
        "outputs": _tensors(network, network.num_outputs, network.get_output),
        "workspace_gb": workspace_gb,
        "timing_cache": str(cache_path),
        "build_seconds": round(seconds, 1),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "chexplain_version": __version__,
        "manifest": manifest.to_dict(),
    }
