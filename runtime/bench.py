"""`chexplain bench`: per-image latency of an exported graph or engine, stage by stage.

For each case (backend, precision, method, classes K, batch): warm-up, then per-iteration
wall times of the inference call alone (trtexec's "latency"; for TensorRT also the GPU
compute time by CUDA events, without transfers), and a second loop from file to overlay
split into decode + preprocess, inference (with host/device transfers), postprocess
(heatmaps mapped onto the original grid and coloured; no file writing) and end to end.
Memory: the process's peak RSS, GPU memory in use, model file size. Fidelity against a
reference (the FP32 PyTorch explainer when torch is installed) is added by the caller.
No torch here.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend
from .explain import GraphMethod, graph_methods
from .heatmaps import overlay
from .preprocess import Geometry, preprocess
from .reader import Radiograph, read_radiograph
from .timing import Summary, summarize, time_calls

BENCH_SCHEMA = "chexplain.bench/1"
STAGES = ("decode+preprocess", "inference", "postprocess", "end-to-end")
STAGE_ITERATIONS = 20
LIBRARIES = ("chexplain", "numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "tensorrt",
             "cuda-python", "torch", "onnx", "zennit", "grad-cam")


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
        raise ValueError("no radiographs to benchmark on")
    return prepared


def example_targets(classes: int, batch: int) -> np.ndarray:
    """K classes per image for a graph with a ``targets`` input: 0..K-1, the same for every image."""
    return np.tile(np.arange(classes, dtype=np.int64), (batch, 1))


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def gpu_memory_used_mb() -> float | None:
    """Memory in use on GPU 0 (all processes), where cuda-python and a GPU are present."""
    try:
        from .cuda import check, cudart

        free, total = check(cudart().cudaMemGetInfo())
    except Exception:
        return None
    return round((total - free) / 2**20, 1)


def feeds_for(backend: Backend, case: Case) -> dict[str, np.ndarray]:
    return {"targets": example_targets(case.classes, case.batch)} if "targets" in backend.input_names else {}


def postprocess(outputs: Mapping[str, np.ndarray], methods: Sequence[GraphMethod], batch: Sequence[Prepared]) -> None:
    """What `chexplain explain` does to every map before writing it: onto the original grid, coloured."""
    for method in methods:
        maps = method.maps(outputs)
        for b, item in enumerate(batch):
            for k in range(maps.shape[1]):
                overlay(item.radiograph.pixels, item.geometry.to_original(maps[b, k]), method.signed)


def bench_case(backend: Backend, case: Case, prepared: Sequence[Prepared], *, warmup_s: float,
               iterations: int | None, duration_s: float | None) -> CaseResult:
    """Time one case: the inference loop, then the file-to-overlay loop by stage."""
    picks = [prepared[i % len(prepared)] for i in range(case.batch)]
    images = np.stack([p.image for p in picks])
    feeds = feeds_for(backend, case)
    methods = [m for m in graph_methods(backend.manifest.explanations) if m.output is not None]

    gpu_samples: list[float] = []
    timing_gpu = hasattr(backend, "time_gpu")
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
        postprocess(outputs, methods, batch)
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
    for name, function in functions.items():
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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine(threads: int | None) -> dict[str, Any]:
    """Where the numbers were measured: CPU, cores, GPU, clocks, library versions, threads."""
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            continue
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": affinity,
        "threads": threads or f"onnxruntime default ({affinity} usable cores)",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": _run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit",
                     "--format=csv,noheader"]),
        "jetson_power_mode": _run(["nvpmodel", "-q"]),
        "libraries": libraries,
    }


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def forward_medians(results: Sequence[CaseResult]) -> dict[tuple[str, str, int], float]:
    """Forward-only median per (backend, precision, batch): the denominator of "vs forward"."""
    return {(r.case.backend, r.case.precision, r.case.batch): r.inference.median
            for r in results if r.case.method == "none"}


def _case_columns(c: Case) -> list[str]:
    return [f"{c.backend} {c.precision}", "forward only" if c.method == "none" else c.method,
            str(c.classes) if c.method != "none" else "-", str(c.batch)]


def latency_rows(results: Sequence[CaseResult]) -> list[list[str]]:
    """The inference call: latency statistics, throughput, variation, cost over forward only."""
    forward = forward_medians(results)
    rows = []
    for r in results:
        s = r.inference
        base = forward.get((r.case.backend, r.case.precision, r.case.batch))
        rows.append(_case_columns(r.case) + [
            _ms(s.median), _ms(s.mean), _ms(s.min), _ms(s.p90), _ms(s.p95), _ms(s.p99), _ms(s.max),
            f"{s.throughput:.1f}", f"{s.cv:.1%}", f"{s.median / base:.2f}x" if base else "n/a",
        ])
    return rows


def stage_rows(results: Sequence[CaseResult]) -> list[list[str]]:
    """File to overlay by stage (medians), GPU compute, memory, sizes and fidelity."""
    rows = []
    for r in results:
        fidelity = r.fidelity or {}
        maps = [v["min_pearson"] for v in fidelity.values() if isinstance(v, dict) and "min_pearson" in v]
        stages = [_ms(r.stages[name].median) for name in STAGES]
        rows.append(_case_columns(r.case) + stages + [
            _ms(r.gpu_compute.median) if r.gpu_compute else "-",
            f"{r.peak_rss_mb:.0f}", f"{r.gpu_memory_mb:.0f}" if r.gpu_memory_mb is not None else "-",
            f"{r.model_bytes / 2**20:.1f}",
            f"{fidelity['probabilities_max_abs_diff']:.1e}" if "probabilities_max_abs_diff" in fidelity else "-",
            f"{min(maps):.4f}" if maps else "-",
        ])
    return rows


CASE_HEADER = ["backend", "method", "K", "batch"]
LATENCY_HEADER = CASE_HEADER + ["median ms", "mean", "min", "p90", "p95", "p99", "max", "img/s", "CV", "vs forward"]
STAGE_HEADER = CASE_HEADER + ["decode+prep ms", "inference ms", "post ms", "end-to-end ms", "GPU compute ms",
                              "peak RSS MB", "GPU mem MB", "model MiB", "max abs dprob", "min map pearson"]
REFERENCE_HEADER = ["what", "reference", "reference median ms", "chexplain median ms", "chexplain faster"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.rjust(w) if i >= 2 else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append("  ".join(str(c).rjust(w) if i >= 2 else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" if i < 2 else "---:" for i in range(len(header))) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def markdown_report(document: Mapping[str, Any], results: Sequence[CaseResult],
                    reference_rows: Sequence[Sequence[str]]) -> str:
    """The Markdown tables with where, when and how they were measured."""
    m, settings = document["machine"], document["settings"]
    lines = [
        f"Measured {m['measured_at']} on {m['cpu']} ({m['cpu_cores_usable']} usable cores"
        + (f"; GPU {m['gpu']}" if m.get("gpu") else "; no GPU") + f"), threads: {m['threads']}; "
        f"{', '.join(f'{k} {v}' for k, v in m['libraries'].items())}.",
        f"Warm-up {settings['warmup_s']} s, then {settings['timing']} per case on {len(settings['images'])} radiographs. "
        "Latency is the inference call (host-device transfers included on a GPU); times in ms.",
        "",
        *markdown_table(LATENCY_HEADER, latency_rows(results)),
        "",
        f"From file to overlay, medians over {STAGE_ITERATIONS} iterations (postprocess: every map onto the "
        "original grid and coloured, no file writing); fidelity against the FP32 PyTorch explainer:",
        "",
        *markdown_table(STAGE_HEADER, stage_rows(results)),
    ]
    if reference_rows:
        lines += ["", "Against the eager references, in the same process, interleaved block by block "
                  f"({document['references_settings']}):", "", *markdown_table(REFERENCE_HEADER, reference_rows)]
    if document.get("warnings"):
        lines += ["", *[f"- warning: {w}" for w in document["warnings"]]]
    return "\n".join(lines) + "\n"
