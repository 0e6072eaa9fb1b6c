"""Whether JetPack, the CUDA driver, TensorRT and cuda-python on this machine fit together.

The usual first-run failure of the TensorRT path is a mismatch, not a bug: pip's newest
cuda-python is built for a newer CUDA than the driver runs (every CUDA call then fails with
cudaErrorInsufficientDriver), or a virtual environment hides JetPack's TensorRT behind a
PyPI wheel. ``gpu_stack`` reads the versions without importing TensorRT or cuda-python;
``stack_problems`` judges a recorded set, so the verdicts are tested on data.
"""

from __future__ import annotations

import ctypes
import importlib.util
import platform
import re
from pathlib import Path
from typing import Any

from ..probes import package_version
from .cuda import cuda_version_text

L4T_RELEASE = Path("/etc/nv_tegra_release")
# L4T release -> JetPack (NVIDIA's JetPack archive); 36.x is JetPack 6 (CUDA 12.6, TensorRT 10.3).
JETPACK_OF_L4T = {"36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1", "38.2": "7.0"}
JETPACK6_PYTHON = "3.10"
CUDA_PYTHON_PIN = "cuda-python>=12.3,<13"


def l4t_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 4.3, ...`` -> ``36.4.3``."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None
    return f"{match.group(1)}.{match.group(2).rstrip('.').removesuffix('.0')}"


def jetpack_of(l4t: str) -> str | None:
    """The JetPack release of an L4T release (the most specific entry that matches)."""
    for key in sorted(JETPACK_OF_L4T, key=len, reverse=True):
        if l4t == key or l4t.startswith(key + "."):
            return JETPACK_OF_L4T[key]
    return None


def driver_cuda_version() -> str | None:
    """The CUDA version the installed driver runs (``cuDriverGetVersion`` of libcuda), or None."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    number = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(number)) != 0 or number.value <= 0:
        return None
    return cuda_version_text(number.value)


def gpu_stack() -> dict[str, Any]:
    """The versions that decide whether engines can be built and run here."""
    spec = importlib.util.find_spec("tensorrt")
    l4t = l4t_release(L4T_RELEASE.read_text(errors="replace")) if L4T_RELEASE.is_file() else None
    return {
        "l4t": l4t,
        "jetpack": jetpack_of(l4t) if l4t else None,
        "python": ".".join(platform.python_version_tuple()[:2]),
        "driver_cuda": driver_cuda_version(),
        "tensorrt": package_version("tensorrt") or package_version("tensorrt-cu12") or package_version("tensorrt-cu13")
        or package_version("tensorrt-libs"),
        "tensorrt_location": str(Path(spec.origin).parent) if spec and spec.origin else None,
        "cuda_python": package_version("cuda-python") or package_version("cuda-bindings"),
    }


def _major(text: str | None) -> int | None:
    try:
        return int(str(text).split(".")[0]) if text else None
    except ValueError:
        return None


def stack_problems(stack: dict[str, Any]) -> list[str]:
    """What does not fit together, each with its fix; empty when the stack is coherent."""
    problems = []
    cuda_python, driver = _major(stack.get("cuda_python")), _major(stack.get("driver_cuda"))
    if cuda_python and driver and cuda_python > driver:
        problems.append(f"cuda-python {stack['cuda_python']} is built for CUDA {cuda_python}, but this driver runs "
                        f"CUDA {stack['driver_cuda']}: every CUDA call fails (cudaErrorInsufficientDriver); "
                        f"pip install '{CUDA_PYTHON_PIN}'")
    tensorrt = _major(stack.get("tensorrt"))
    if tensorrt is not None and tensorrt < 10:
        problems.append(f"TensorRT {stack['tensorrt']} is too old: chexplain builds engines with TensorRT 10 or 11")
    if str(stack.get("jetpack") or "").startswith("6"):
        location = stack.get("tensorrt_location") or ""
        if stack.get("tensorrt") and not location.startswith("/usr/lib/python3"):
            problems.append(f"JetPack {stack['jetpack']}: TensorRT is imported from {location}, not JetPack's "
                            f"(/usr/lib/python3/dist-packages): use a virtual environment with --system-site-packages "
                            f"(make VENV_FLAGS=--system-site-packages) and pip uninstall tensorrt")
        elif not stack.get("tensorrt"):
            problems.append(f"JetPack {stack['jetpack']}: TensorRT is not visible; install it with JetPack "
                            f"(apt install nvidia-tensorrt) and use --system-site-packages")
        if stack.get("python") != JETPACK6_PYTHON:
            problems.append(f"JetPack 6's TensorRT bindings are for Python {JETPACK6_PYTHON}; this is Python "
                            f"{stack.get('python')}")
    return problems


def with_stack_problems(reason: str) -> str:
    """``reason`` (why TensorRT or CUDA failed) followed by what does not fit together, where
    something does: a CUDA error alone does not say that cuda-python is too new for the driver."""
    problems = stack_problems(gpu_stack())
    return "; ".join([reason, *problems])
