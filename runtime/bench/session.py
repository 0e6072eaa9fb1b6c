"""`chexplain bench` end to end: which graphs and engines, which cases, fidelity, references.

Nothing here imports torch: what needs it (exporting the bench graphs of ``--model``, the FP32
PyTorch reference of the fidelity column, the eager references of ``--compare-reference``) and
building TensorRT engines come from the layers above as ``BenchTools`` (the command lends
them; export/bench_graphs.py, export/tensorrt_build.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MissingDependency
from ...optional import hint
from ..backends import Backend, OnnxRuntimeBackend, artifacts_dir, open_backend
from ..backends.sidecars import engines_beside
from ..backends.tensorrt_runner import TensorRTBackend
from ..evaluation.fidelity import fidelity
from ..maps.methods import graph_methods
from .cases import (
    BENCH_SCHEMA,
    Case,
    CaseResult,
    Prepared,
    bench_case,
    example_targets,
    feeds_for,
    interleaved,
    prepare,
)
from .machine import machine
from .memory import session_memory_mb
from .timing import summarize

REFERENCE_ROUNDS = 3
REFERENCE_BLOCK_S = 1.0
FORWARD = "eager PyTorch forward"


# (model, method, precision, folder, log) -> the bench graph's path
GraphMaker = Callable[[str, str, str, Path, Callable[[str], None]], Path]
# (graph, precision, log) -> the engine's path
EngineBuilder = Callable[[Path, str, Callable[[str], None]], Path]


@dataclass(frozen=True)
class BenchTools:
    """What the bench borrows from the layers above the runtime. The PyTorch side (None without
    torch; ``unavailable`` says why): ``bench_graph`` exports a model's graph per method and
    precision, ``reference_outputs(model, method, images, targets)`` are the FP32 PyTorch
    explainer's outputs, ``reference_timers(model, method, classes, image, threads)`` the eager
    references by name. ``build_engine`` builds a TensorRT engine from a graph."""

    bench_graph: GraphMaker | None = None
    reference_outputs: Callable[..., dict[str, np.ndarray]] | None = None
    reference_timers: Callable[..., dict[str, Callable[[], object]]] | None = None
    build_engine: EngineBuilder | None = None
    unavailable: str = ""


@dataclass
class Settings:
    model: str
    onnx: Path | None
    engine: Path | None
    backends: list[str]
    precisions: list[str]
    batches: list[int]
    methods: list[str]
    classes: list[int]
    images: list[Path]
    warmup_s: float
    iterations: int | None
    duration_s: float | None
    threads: int | None
    fidelity: bool = True
    compare_reference: bool = False
    tools: BenchTools = field(default_factory=BenchTools)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Source:
    """A backend opened on one graph or engine, and what it explains."""

    backend: Backend
    kind: str
    precision: str
    method: str


def graph_classes(backend: Backend, wanted: Sequence[int]) -> list[int]:
    """The K values a graph can time: any with a targets input, else the K it was exported with."""
    settings = backend.manifest.explanations
    if not settings.methods:
        return [0]
    if settings.targets_input:
        return list(wanted)
    return [settings.class_count()]


def method_of(backend: Backend) -> str:
    methods = [m.label for m in graph_methods(backend.manifest.explanations) if m.output is not None]
    return ",".join(methods) if methods else "none"


def _open(graph: Path, kind: str, precision: str, settings: Settings, log: Callable[[str], None]) -> Backend:
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(graph, threads=settings.threads)
    if kind == "tensorrt":
        engines = [e for e in engines_beside(graph.parent) if e.precision == precision]
        if engines:
            return TensorRTBackend(engines[0].path)
        if settings.tools.build_engine is None:
            raise MissingDependency(f"no {precision} engine beside {graph}, and building one needs the export side: "
                                    f"pip install 'chexplain[tensorrt]'")
        return TensorRTBackend(settings.tools.build_engine(graph, precision, log))
    return open_backend(str(graph), "auto", threads=settings.threads, notify=settings.warnings.append)


def open_sources(settings: Settings, log: Callable[[str], None]) -> list[Source]:
    """The backends to time: an engine, an exported graph on each backend, or bench graphs
    of ``--model`` (one per method, forward only included) per precision and backend."""
    if settings.engine is not None:
        backend = open_backend(str(settings.engine), "tensorrt")
        return [Source(backend, "tensorrt", backend.manifest.precision, method_of(backend))]
    if settings.onnx is not None:
        sources = []
        for kind in settings.backends:
            # TensorRT: an engine of each precision built from the graph; otherwise the graph as exported.
            for precision in settings.precisions if kind == "tensorrt" else settings.precisions[:1]:
                backend = _open(settings.onnx, kind, precision, settings, log)
                sources.append(Source(backend, backend.name, backend.manifest.precision, method_of(backend)))
        if settings.precisions != ["fp32"] and any(kind != "tensorrt" for kind in settings.backends):
            settings.warnings.append(f"--precision does not convert --onnx {settings.onnx} for ONNX Runtime: it runs "
                                     f"as exported; export with --precision for another plan")
        return sources
    bench_graph = settings.tools.bench_graph
    if bench_graph is None:
        raise MissingDependency(f"bench --model exports its graphs and needs torch ({settings.tools.unavailable}): "
                                f"{hint('torch')}; or time an exported graph with --onnx / --engine")
    root = artifacts_dir() / "bench"
    methods = settings.methods if "none" in settings.methods else ["none", *settings.methods]
    sources = []
    for method in methods:
        for precision in settings.precisions:
            for kind in settings.backends:
                # TensorRT builds each precision from the FP32 graph; ONNX Runtime runs the converted graph.
                graph = bench_graph(settings.model, method, "fp32" if kind == "tensorrt" else precision, root, log)
                backend = _open(graph, kind, precision, settings, log)
                sources.append(Source(backend, backend.name, precision, method))
    return sources


def _model_name(settings: Settings, backend: Backend) -> str:
    return backend.manifest.name if settings.onnx or settings.engine else settings.model


def _reference(settings: Settings, model: str, method: str, images: np.ndarray, targets: np.ndarray | None,
               cache: dict[tuple, dict[str, np.ndarray] | None]) -> dict[str, np.ndarray] | None:
    key = (model, method, images.shape[0], None if targets is None else targets.tobytes())
    if key not in cache:
        cache[key] = None
        reference_outputs = settings.tools.reference_outputs
        if reference_outputs is None:
            settings.warnings.append(f"fidelity of {method} not measured: no FP32 PyTorch reference "
                                     f"({settings.tools.unavailable}): {hint('torch')}")
            return None
        try:
            cache[key] = reference_outputs(model, method, images, targets)
        except Exception as error:  # a model the zoo cannot load, a method PyTorch refuses: time anyway, say so
            settings.warnings.append(f"fidelity of {method} not measured: no FP32 PyTorch reference ({error})")
    return cache[key]


def case_fidelity(settings: Settings, source: Source, case: Case, prepared: Sequence[Prepared],
                  cache: dict[tuple, dict[str, np.ndarray] | None]) -> dict[str, Any] | None:
    """The case's outputs on its batch against the FP32 PyTorch explainer on the same classes."""
    images = np.stack([prepared[i % len(prepared)].image for i in range(case.batch)])
    feeds = {"targets": example_targets(case.classes, case.batch)} if "targets" in source.backend.input_names else {}
    outputs = source.backend.run(images, **feeds)
    targets = feeds.get("targets", outputs.get("targets"))
    reference = _reference(settings, _model_name(settings, source.backend), case.method, images, targets, cache)
    if reference is None:
        return None
    maps = [m.output for m in graph_methods(source.backend.manifest.explanations) if m.output is not None]
    return fidelity(outputs, reference, maps)


def case_session_memory(settings: Settings, source: Source, case: Case, prepared: Sequence[Prepared]) -> float | None:
    """The case's graph on its own in a fresh process (None, with a warning, where that cannot be measured)."""
    images = np.stack([prepared[i % len(prepared)].image for i in range(case.batch)])
    try:
        return session_memory_mb(source.backend.path, source.backend.name, settings.threads, images,
                                 feeds_for(source.backend, case))
    except (OSError, RuntimeError, ValueError) as error:
        settings.warnings.append(f"{case.label}: session memory not measured ({error})")
        return None


def run_benchmark(settings: Settings, log: Callable[[str], None]) -> tuple[dict[str, Any], list[CaseResult], list[list[str]]]:
    """Every case, then the references; returns the JSON document, the results and the reference rows."""
    where = machine(settings.threads)
    sources = open_sources(settings, log)
    prepared = prepare(settings.images, sources[0].backend)
    cases = [(source, Case(source.kind, source.precision, source.method, k, batch))
             for source in sources for k in graph_classes(source.backend, settings.classes)
             for batch in settings.batches]
    results: list[CaseResult] = []
    cache: dict[tuple, dict[str, np.ndarray] | None] = {}
    for index, (source, case) in enumerate(cases, 1):
        log(f"[{index}/{len(cases)}] {case.label}")
        result = bench_case(source.backend, case, prepared, warmup_s=settings.warmup_s,
                            iterations=settings.iterations, duration_s=settings.duration_s)
        if settings.fidelity:
            result.fidelity = case_fidelity(settings, source, case, prepared, cache)
        result.session_mb = case_session_memory(settings, source, case, prepared)
        results.append(result)
        log(f"    median {result.inference.median:.2f} ms, p99 {result.inference.p99:.2f} ms, "
            f"{result.inference.throughput:.1f} img/s, CV {result.inference.cv:.1%}"
            + (f", session {result.session_mb:.0f} MB" if result.session_mb is not None else ""))
        settings.warnings += [f"{case.label}: {w}" for w in result.warnings]
    reference_rows: list[list[str]] = []
    reference_data: list[dict[str, Any]] = []
    if settings.compare_reference:
        reference_rows, reference_data = compare_references(settings, sources, [c for _, c in cases], prepared, log)
    timing = f"{settings.iterations} iterations" if settings.iterations else f"{settings.duration_s} s of iterations"
    document = {
        "schema": BENCH_SCHEMA,
        "machine": where,
        "settings": {"model": settings.model, "onnx": str(settings.onnx) if settings.onnx else None,
                     "engine": str(settings.engine) if settings.engine else None, "backends": settings.backends,
                     "precisions": settings.precisions, "batches": settings.batches, "methods": settings.methods,
                     "classes": settings.classes, "images": [str(p) for p in settings.images],
                     "warmup_s": settings.warmup_s, "timing": timing, "threads": settings.threads},
        "cases": [r.to_dict() for r in results],
        "references": reference_data,
        "references_settings": (f"{REFERENCE_ROUNDS} rounds, blocks of about {REFERENCE_BLOCK_S:g} s per "
                                f"implementation, batch 1, the same threads"),
        "warnings": settings.warnings,
    }
    return document, results, reference_rows


def _runner(backend: Backend, classes: int, image: np.ndarray) -> Callable[[], object]:
    feeds = {"targets": example_targets(classes, 1)} if "targets" in backend.input_names else {}
    return lambda: backend.run(image, **feeds)


def _block_size(function: Callable[[], object]) -> int:
    """Iterations that take about REFERENCE_BLOCK_S (at least 1, at most 20)."""
    start = time.perf_counter()
    function()
    return int(min(20, max(1, REFERENCE_BLOCK_S / max(time.perf_counter() - start, 1e-6))))


def compare_references(settings: Settings, sources: Sequence[Source], cases: Sequence[Case],
                       prepared: Sequence[Prepared], log: Callable[[str], None]) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Time chexplain and the eager references in one process, interleaved block by block, at
    batch 1 on the first backend; ratios of medians."""
    reference_timers = settings.tools.reference_timers
    if reference_timers is None:
        raise MissingDependency(f"--compare-reference times PyTorch, pytorch-grad-cam and Zennit and needs torch "
                                f"({settings.tools.unavailable}): {hint('torch')}")
    first = sources[0]
    mine = {(s.method, s.kind, s.precision): s for s in sources}
    forward = mine.get(("none", first.kind, first.precision))
    image = prepared[0].image[None]
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    done: set[tuple[str, int]] = set()
    for case in cases:
        if (case.backend, case.precision) != (first.kind, first.precision) or (case.method, case.classes) in done:
            continue
        done.add((case.method, case.classes))
        source = mine[(case.method, case.backend, case.precision)]
        timers = reference_timers(_model_name(settings, source.backend), case.method, max(case.classes, 1),
                                  prepared[0].image, settings.threads)
        functions: dict[str, Callable[[], object]] = {"chexplain": _runner(source.backend, case.classes, image)}
        if case.method == "none":
            pairs = [(FORWARD, "chexplain", "forward")]
            functions[FORWARD] = timers[FORWARD]
        else:
            what = f"{case.method}, {case.classes} class{'es' if case.classes != 1 else ''}"
            pairs = [(name, "chexplain", what) for name in timers if name != FORWARD]
            functions.update({name: timers[name] for name in timers if name != FORWARD})
            if forward is None:
                pairs.append((FORWARD, "chexplain", what))
                functions[FORWARD] = timers[FORWARD]
        log(f"references for {case.label}: {', '.join(n for n in functions if n != 'chexplain')}")
        per_block = {name: _block_size(function) for name, function in functions.items()}
        samples = interleaved(functions, rounds=REFERENCE_ROUNDS, per_block=per_block, progress=lambda m: log(f"    {m}"))
        medians = {name: summarize(values).median for name, values in samples.items()}
        for reference, own, what in pairs:
            ratio = medians[reference] / medians[own]
            rows.append([what, reference, f"{medians[reference]:.1f}", f"{medians[own]:.1f}", f"{ratio:.1f}x"])
            data.append({"what": what, "reference": reference, "reference_median_ms": medians[reference],
                         "chexplain_median_ms": medians[own], "speedup": ratio,
                         "reference_samples_ms": samples[reference], "chexplain_samples_ms": samples[own]})
    return rows, data
