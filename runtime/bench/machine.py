"""Where a benchmark ran: CPU, cores, GPU and clocks, library versions, memory in use."""

from __future__ import annotations

import os
import platform
import resource
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..probes import nvidia_smi, run_tool

LIBRARIES = ("chexplain", "numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "tensorrt",
             "cuda-python", "torch", "onnx", "zennit", "grad-cam")
GPU_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.max.sm", "power.draw", "power.limit")


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def gpu_memory_used_mb() -> float | None:
    """Memory in use on GPU 0 (all processes), where cuda-python and a GPU are present."""
    try:
        from ..backends.cuda import check, cudart

        free, total = check(cudart().cudaMemGetInfo())
    except Exception:
        return None
    return round((total - free) / 2**20, 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        "gpu": "\n".join(nvidia_smi(GPU_FIELDS)) or None,
        "jetson_power_mode": run_tool(["nvpmodel", "-q"]),
        "libraries": libraries,
    }


