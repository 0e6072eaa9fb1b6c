"""The Grad-CAM family; the formulas live in the torch-free runtime so both use the same code."""

from ..runtime.cam import VARIANTS, cam

__all__ = ["VARIANTS", "cam"]
