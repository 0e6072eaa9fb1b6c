"""Optional dependencies: import one, or fail with a line that names the extra to install.

chexplain runs on machines with very different installs (a Jetson with JetPack's TensorRT
and no torch, a workstation with ONNX Runtime only), so every optional import goes through
here and every failure says the same kind of thing: what is missing and how to get it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependency

# Each optional module: the name people know it by, and what to install (pip extras of this package,
# or where it comes from).
HINTS = {
    "onnxruntime": ("ONNX Runtime", "pip install 'chexplain[cpu]' (or 'chexplain[gpu]' for CUDA)"),
    "onnx": ("onnx", "pip install 'chexplain[export]'"),
    "torch": ("PyTorch", "pip install 'chexplain[export]'"),
    "pydicom": ("pydicom", "pip install 'chexplain[dicom]'"),
    "pynetdicom": ("pynetdicom", "pip install 'chexplain[node]'"),
    "highdicom": ("highdicom", "pip install 'chexplain[node]'"),
    "requests": ("requests", "pip install 'chexplain[node]'"),
    "tomli": ("tomli", "pip install 'chexplain[node]'"),
    "tensorrt": ("TensorRT", "on a Jetson it comes with JetPack (python3-libnvinfer; a venv with "
                 "--system-site-packages, then pip install 'chexplain[jetson]'); elsewhere pip install 'chexplain[tensorrt]'"),
    "cuda": ("cuda-python", "pip install 'chexplain[tensorrt]' (on a Jetson 'chexplain[jetson]'): cuda-python 12, "
             "which runs on every driver from CUDA 12 on"),
    "zennit": ("Zennit", "pip install 'chexplain[dev]'"),
    "pytorch_grad_cam": ("pytorch-grad-cam", "pip install 'chexplain[dev]'"),
}


def _known(module: str) -> tuple[str, str]:
    top = module.split(".")[0]
    return HINTS.get(top, (top, f"pip install {top}"))


def hint(module: str) -> str:
    """What to install for ``module``."""
    return _known(module)[1]


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` (dotted names allowed) or raise MissingDependency naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        name, install = _known(module)
        absent = isinstance(error, ModuleNotFoundError) and error.name == module.split(".")[0]
        if purpose:
            what = f"{purpose} needs {name}" + ("" if absent else f" ({error})")
        else:  # a broken install says what broke
            what = f"{name} is not installed" if absent else f"{name} cannot be imported ({error})"
        raise MissingDependency(f"{what}: {install}") from None


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that cannot be found, without importing any of them."""
    return [m for m in modules if importlib.util.find_spec(m) is None]
