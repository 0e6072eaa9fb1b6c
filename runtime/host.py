"""What this machine has: packages, ONNX Runtime providers, NVIDIA GPUs, DICOM decoders, and
what each command will therefore use (`chexplain doctor`, the benchmark's machine record).
Read from package metadata and nvidia-smi: nothing heavy is imported."""

from __future__ import annotations

import importlib
import platform
from typing import Any

from .. import __version__
from .backends.compatibility import gpu_stack, stack_problems
from .probes import nvidia_smi, package_version

DICOM_DECODERS = {
    "pylibjpeg-libjpeg": "JPEG baseline/extended/lossless, JPEG-LS",
    "pylibjpeg-openjpeg": "JPEG 2000",
    "pylibjpeg-rle": "RLE lossless (faster)",
    "python-gdcm": "most compressed syntaxes",
    "pillow": "JPEG baseline, JPEG 2000 (with OpenJPEG)",
    "pyjpegls": "JPEG-LS (and encoding it)",
}


def _onnxruntime_providers() -> list[str]:
    try:
        return importlib.import_module("onnxruntime").get_available_providers()
    except Exception:
        return []


def collect() -> dict[str, Any]:
    """Versions and capabilities, read from package metadata (no torch import)."""
    ort = package_version("onnxruntime") or package_version("onnxruntime-gpu")
    stack = gpu_stack()
    tensorrt = stack["tensorrt"]
    torch = package_version("torch")
    onnx_ok = bool(package_version("onnx") and package_version("onnxscript"))
    gpus = nvidia_smi(("name", "compute_cap", "driver_version"))
    cuda_python = stack["cuda_python"]
    engines_possible = bool(tensorrt and cuda_python and gpus)
    providers = _onnxruntime_providers()
    try:
        from .backends.onnxruntime_runner import preferred_providers

        usable = preferred_providers(providers)
    except ImportError:  # the runtime's own dependencies are missing; doctor still reports
        usable = providers
    decoders = {name: package_version(name) for name in DICOM_DECODERS}
    return {
        "chexplain": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "packages": {
            "numpy": package_version("numpy"),
            "opencv": package_version("opencv-python-headless") or package_version("opencv-python"),
            "pydicom": package_version("pydicom"),
            "onnxruntime": ort,
            "torch": torch,
            "torchvision": package_version("torchvision"),
            "onnx": package_version("onnx"),
            "onnxscript": package_version("onnxscript"),
            "tensorrt": tensorrt,
            "cuda-python": cuda_python,
        },
        "onnxruntime_providers": providers,
        "gpus": gpus,
        "gpu_stack": stack,
        "problems": stack_problems(stack),
        "dicom_decoders": {k: v for k, v in decoders.items() if v},
        "commands": {
            "predict": (("a TensorRT engine where one was built here, else " if engines_possible else "")
                        + (f"onnxruntime ({usable[0]})" if usable else "nothing: pip install 'chexplain[cpu]'")),
            "export": "torch + onnx" if torch and onnx_ok else "unavailable: pip install 'chexplain[export]'",
            "build-engine": "tensorrt" if engines_possible and package_version("onnx")
            else "unavailable: needs TensorRT, cuda-python, onnx and an NVIDIA GPU",
        },
    }


def render(report: dict[str, Any]) -> list[str]:
    lines = [f"chexplain {report['chexplain']} on Python {report['python']} ({report['platform']})", "", "packages:"]
    for name, ver in report["packages"].items():
        lines.append(f"  {name:<12} {ver or '-- not installed'}")
    lines.append(f"onnxruntime providers: {', '.join(report['onnxruntime_providers']) or 'none'}")
    lines.append(f"NVIDIA GPUs: {'; '.join(report['gpus']) or 'none found'}")
    stack = report["gpu_stack"]
    if stack["l4t"]:
        lines.append(f"Jetson: L4T {stack['l4t']} (JetPack {stack['jetpack'] or 'unknown'})")
    if stack["driver_cuda"]:
        lines.append(f"CUDA driver: runs CUDA {stack['driver_cuda']}")
    lines += [f"problem: {problem}" for problem in report["problems"]]
    decoders = report["dicom_decoders"]
    lines.append("DICOM decoders: " + (", ".join(f"{k} ({DICOM_DECODERS[k]})" for k in decoders) or "none (uncompressed DICOM only)"))
    lines += ["", "each command will use:"]
    lines += [f"  {cmd:<13} {use}" for cmd, use in report["commands"].items()]
    return lines
