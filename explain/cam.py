"""The Grad-CAM family; the formulas live in the torch-free runtime so both use the same code."""

from ..grammar import CAM_VARIANTS as VARIANTS
from ..runtime.maps.cam_formulas import cam

__all__ = ["VARIANTS", "cam"]
