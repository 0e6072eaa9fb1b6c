"""`chexplain bench`: per-image latency of an exported graph or engine, stage by stage.

For each case (backend, precision, method, classes K, batch): warm-up, then per-iteration
wall times of the inference call alone (trtexec's "latency"; for TensorRT also the GPU
compute time by CUDA events, without transfers), and a second loop from file to overlay
split into decode + preprocess, inference (with host/device transfers), postprocess
(heatmaps mapped onto the original grid and coloured; no file writing) and end to end.
Memory: the process's peak RSS, the session's own (``memory.py``), GPU memory in use, model
file size. Fidelity against a
reference (the FP32 PyTorch explainer when torch is installed) is added by the caller.
No torch here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...grammar import DEFAULT_OPACITY
from ..backends import Backend
from ..inputs.preprocess import Geometry, preprocess
from ..inputs.reader import Radiograph, read_radiograph
from ..maps.methods import GraphMethod, graph_methods
from ..maps.render import class_maps
from .machine import gpu_memory_used_mb, peak_rss_mb
from .timing import Summary, summarize, time_calls

BENCH_SCHEMA = "chexplain.bench/1"
STAGES = ("decode+preprocess", "inference", "postprocess", "end-to-end")
STAGE_ITERATIONS = 20


@dataclass(frozen=True)
class Case:
    """One configuration to time."""

    backend: str
    precision: str
    method: str  # none | gradcam | lrp:epsilon | ...
    classes: int  # K classes explained per image (0 for none)
    batch: int

    @property
    def label(self) -> str:
        what = "forward only" if self.method == "none" else f"{self.method}, {self.classes} class{'es' if self.classes != 1 else ''}"
        return f"{self.backend} {self.precision} | {what} | batch {self.batch}"


@dataclass
class CaseResult:
    case: Case
    model_file: str
    model_bytes: int
    backend: str
    inference: Summary
    stages: dict[str, Summary]
    gpu_compute: Summary | None = None
    peak_rss_mb: float = 0.0
    session_mb: float | None = None
    gpu_memory_mb: float | None = None
    fidelity: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": {**self.case.__dict__, "label": self.case.label},
            "model_file": self.model_file,
            "model_bytes": self.model_bytes,
            "backend": self.backend,
            "inference_ms": self.inference.to_dict(),
            "gpu_compute_ms": self.gpu_compute.to_dict() if self.gpu_compute else None,
            "transfers_in_inference": True,
            "stages_ms": {name: s.to_dict() for name, s in self.stages.items()},
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "session_mb": self.session_mb,
            "gpu_memory_mb": self.gpu_memory_mb,
            "fidelity": self.fidelity,
            "warnings": self.warnings,
        }


@dataclass
class Prepared:
    """A radiograph read and preprocessed once, for the inference loop."""

    radiograph: Radiograph
    image: np.ndarray
    geometry: Geometry


def prepare(paths: Sequence[Path], backend: Backend) -> list[Prepared]:
    prepared = []
    for path in paths:
        radiograph = read_radiograph(path, allow_any_view=True)
        image, geometry = preprocess(radiograph.pixels, backend.manifest.preprocessing)
        prepared.append(Prepared(radiograph, image, geometry))
    if not prepared:
        raise ConfigError("no radiographs to benchmark on")
    return prepared


def example_targets(classes: int, batch: int) -> np.ndarray:
    """K classes per image for a graph with a ``targets`` input: 0..K-1, the same for every image."""
    return np.tile(np.arange(classes, dtype=np.int64), (batch, 1))


def feeds_for(backend: Backend, case: Case) -> dict[str, np.ndarray]:
    return {"targets": example_targets(case.classes, case.batch)} if "targets" in backend.input_names else {}


def postprocess(outputs: Mapping[str, np.ndarray], methods: Sequence[GraphMethod], batch: Sequence[Prepared],
                feeds: Mapping[str, np.ndarray]) -> None:
    """What `chexplain explain` does to every map before writing it: onto the original grid, coloured."""
    if not methods:
        return
    targets = outputs.get("targets", feeds.get("targets"))
    for b, item in enumerate(batch):
        for rendered in class_maps(outputs, item.geometry, methods, targets[b], b):
            rendered.overlay(item.radiograph.pixels, DEFAULT_OPACITY)


def bench_case(backend: Backend, case: Case, prepared: Sequence[Prepared], *, warmup_s: float,
               iterations: int | None, duration_s: float | None) -> CaseResult:
    """Time one case: the inference loop, then the file-to-overlay loop by stage."""
    picks = [prepared[i % len(prepared)] for i in range(case.batch)]
    images = np.stack([p.image for p in picks])
    feeds = feeds_for(backend, case)
    methods = [m for m in graph_methods(backend.manifest.explanations) if m.output is not None]

    gpu_samples: list[float] = []
    timing_gpu = backend.gpu_timing
    if timing_gpu:
        backend.time_gpu = True

    def infer() -> None:
        backend.run(images, **feeds)
        if timing_gpu and backend.last_gpu_ms is not None:
            gpu_samples.append(backend.last_gpu_ms)

    samples = time_calls(infer, warmup_s=warmup_s, iterations=iterations, duration_s=duration_s)
    gpu_samples = gpu_samples[-len(samples):]
    if timing_gpu:
        backend.time_gpu = False

    stage_times: dict[str, list[float]] = {name: [] for name in STAGES}
    count = min(STAGE_ITERATIONS, len(samples))
    for iteration in range(count + 1):  # the first pass warms the file cache and is dropped
        paths = [prepared[(iteration * case.batch + i) % len(prepared)].radiograph.path for i in range(case.batch)]
        start = time.perf_counter()
        batch = []
        for path in paths:
            radiograph = read_radiograph(path, allow_any_view=True)
            image, geometry = preprocess(radiograph.pixels, backend.manifest.preprocessing)
            batch.append(Prepared(radiograph, image, geometry))
        decoded = time.perf_counter()
        outputs = backend.run(np.stack([b.image for b in batch]), **feeds)
        inferred = time.perf_counter()
        postprocess(outputs, methods, batch, feeds)
        done = time.perf_counter()
        if iteration:
            for name, value in zip(STAGES, (decoded - start, inferred - decoded, done - inferred, done - start)):
                stage_times[name].append(value * 1e3)
    result = CaseResult(
        case=case,
        model_file=str(backend.path),
        model_bytes=Path(backend.path).stat().st_size,
        backend=backend.describe(),
        inference=summarize(samples, case.batch),
        stages={name: summarize(values, case.batch) for name, values in stage_times.items()},
        gpu_compute=summarize(gpu_samples, case.batch) if gpu_samples else None,
        peak_rss_mb=peak_rss_mb(),
        gpu_memory_mb=gpu_memory_used_mb() if backend.name == "tensorrt" else None,
    )
    if result.inference.unstable:
        result.warnings.append(f"coefficient of variation {result.inference.cv:.0%}: the machine is busy or "
                               f"throttling; rerun, or time longer with --duration-s")
    return result


def interleaved(functions: Mapping[str, Callable[[], object]], *, rounds: int, per_block: Mapping[str, int],
                warmup: int = 1, progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Time several functions in the same process, block by block, ``rounds`` times over, so that
    a slow phase of the machine affects them all alike; returns each one's samples in ms."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(rounds):
        for name, function in functions.items():
            if progress:
                progress(f"round {round_index + 1}/{rounds}: {name}")
            for _ in range(per_block[name]):
                start = time.perf_counter()
                function()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return samples
