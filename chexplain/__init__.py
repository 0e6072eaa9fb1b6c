"""chexplain: an explainable chest X-ray classifier for the edge.

A DenseNet121 for the 14 CheXpert observations, exported with its explanations
(the Grad-CAM family and LRP) as one ONNX graph, run with ONNX Runtime or TensorRT.
Nothing here is for clinical use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("chexplain")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

SAMPLES_DIR = Path(__file__).parent / "samples"


def sample_images() -> list[Path]:
    """The bundled sample radiographs (NIH ChestX-ray14, see samples/ATTRIBUTION.md)."""
    return sorted(SAMPLES_DIR.glob("*.png"))
