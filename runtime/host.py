"""What this machine has: packages, ONNX Runtime providers, NVIDIA GPUs, DICOM decoders, and
what each command will therefore use (`chexplain doctor`, the benchmark's machine record).
Read from package metadata and nvidia-smi: nothing heavy is imported."""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Any

DICOM_DECODERS = {
    "pylibjpeg-libjpeg": "JPEG baseline/extended/lossless, JPEG-LS",
    "pylibjpeg-openjpeg": "JPEG 2000",
    "pylibjpeg-rle": "RLE lossless (faster)",
    "python-gdcm": "most compressed syntaxes",
    "pillow": "JPEG baseline, JPEG 2000 (with OpenJPEG)",
}


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def run_tool(command: list[str]) -> str | None:
    """A tool's stripped output, or None when it is missing or fails."""
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def nvidia_smi(fields: tuple[str, ...]) -> list[str]:
    """One CSV line of ``fields`` per NVIDIA GPU, by nvidia-smi, without importing a framework."""
    out = run_tool(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"]) or ""
    return [line.strip() for line in out.splitlines() if line.strip()]


def _onnxruntime_providers() -> list[str]:
    try:
        return importlib.import_module("onnxruntime").get_available_providers()
    except Exception:
        return []


def collect() -> dict[str, Any]:
    """Versions and capabilities, read from package metadata (no torch import)."""
    from .. import __version__

    ort = _version("onnxruntime") or _version("onnxruntime-gpu")
    tensorrt = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13")
    torch = _version("torch")
    onnx_ok = bool(_version("onnx") and _version("onnxscript"))
    gpus = nvidia_smi(("name", "compute_cap", "driver_version"))
    cuda_python = _version("cuda-python") or _version("cuda-bindings")
    engines_possible = bool(tensorrt and cuda_python and gpus)
    providers = _onnxruntime_providers()
    try:
        from .backends.onnxruntime_runner import PREFERRED_PROVIDERS

        usable = [p for p in PREFERRED_PROVIDERS if p in providers]
    except ImportError:  # the runtime's own dependencies are missing; doctor still reports
        usable = providers
    decoders = {name: _version(name) for name in DICOM_DECODERS}
    return {
        "chexplain": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "packages": {
            "numpy": _version("numpy"),
            "opencv": _version("opencv-python-headless") or _version("opencv-python"),
            "pydicom": _version("pydicom"),
            "onnxruntime": ort,
            "torch": torch,
            "torchvision": _version("torchvision"),
            "onnx": _version("onnx"),
            "onnxscript": _version("onnxscript"),
            "tensorrt": tensorrt,
            "cuda-python": cuda_python,
        },
        "onnxruntime_providers": providers,
        "gpus": gpus,
        "dicom_decoders": {k: v for k, v in decoders.items() if v},
        "commands": {
            "predict": (("a TensorRT engine where one was built here, else " if engines_possible else "")
                        + (f"onnxruntime ({usable[0]})" if usable else "nothing: pip install 'chexplain[cpu]'")),
            "export": "torch + onnx" if torch and onnx_ok else "unavailable: pip install 'chexplain[export]'",
            "build-engine": "tensorrt" if engines_possible and _version("onnx")
            else "unavailable: needs TensorRT, cuda-python, onnx and an NVIDIA GPU",
        },
    }


def render(report: dict[str, Any]) -> list[str]:
    lines = [f"chexplain {report['chexplain']} on Python {report['python']} ({report['platform']})", "", "packages:"]
    for name, ver in report["packages"].items():
        lines.append(f"  {name:<12} {ver or '-- not installed'}")
    lines.append(f"onnxruntime providers: {', '.join(report['onnxruntime_providers']) or 'none'}")
    lines.append(f"NVIDIA GPUs: {'; '.join(report['gpus']) or 'none found'}")
    decoders = report["dicom_decoders"]
    lines.append("DICOM decoders: " + (", ".join(f"{k} ({DICOM_DECODERS[k]})" for k in decoders) or "none (uncompressed DICOM only)"))
    lines += ["", "each command will use:"]
    lines += [f"  {cmd:<13} {use}" for cmd, use in report["commands"].items()]
    return lines
