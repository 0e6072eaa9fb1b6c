"""Heatmaps onto radiographs: colour maps and overlays.

CAMs are non-negative and use a sequential map (inferno), scaled by their maximum. LRP
relevance is signed and uses a diverging blue-white-red map centred on zero, as in the
study, scaled by the 99.5th percentile of |R| (clipped beyond), since a few pixels
otherwise set the scale for the whole map. Transparency follows the magnitude, so the
anatomy stays visible where a map is near zero.
"""

from __future__ import annotations

import cv2
import numpy as np

SIGNED_PERCENTILE = 99.5


def diverging_lut() -> np.ndarray:
    """256 BGR colours: blue (-1) -> white (0) -> red (+1)."""
    t = np.linspace(-1.0, 1.0, 256)
    red = np.where(t < 0, 1.0 + t, 1.0)
    blue = np.where(t > 0, 1.0 - t, 1.0)
    green = 1.0 - np.abs(t)
    return (np.stack([blue, green, red], axis=1) * 255).round().astype(np.uint8)


def sequential_lut() -> np.ndarray:
    """256 BGR colours of OpenCV's inferno map."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_INFERNO)[:, 0, :]


_LUTS = {"signed": diverging_lut(), "positive": sequential_lut()}


def normalise(heatmap: np.ndarray, signed: bool) -> np.ndarray:
    """To [-1, 1] (signed, by a high percentile of |map|) or [0, 1] (by the maximum)."""
    magnitude = np.abs(heatmap)
    scale = float(magnitude.max()) if heatmap.size else 0.0
    if signed and scale > 0:
        scale = float(np.percentile(magnitude, SIGNED_PERCENTILE)) or scale
    if scale <= 0 or not np.isfinite(scale):
        return np.zeros_like(heatmap, dtype=np.float32)
    return np.clip(heatmap / scale, -1 if signed else 0, 1).astype(np.float32)


def to_bgr(gray01: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((np.clip(gray01, 0, 1) * 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR)


def colour_layer(heatmap: np.ndarray, signed: bool) -> np.ndarray:
    """The heatmap as BGRA uint8: its colour map, and opacity following the magnitude."""
    values = normalise(heatmap, signed)
    index = ((values + 1) * 127.5 if signed else values * 255).round().astype(np.uint8)
    alpha = (np.abs(values) * 255).round().astype(np.uint8)
    return np.dstack([_LUTS["signed" if signed else "positive"][index], alpha])


def lut(signed: bool) -> np.ndarray:
    """The 256 BGR colours a map of this kind is drawn with."""
    return _LUTS["signed" if signed else "positive"]


def overlay(gray01: np.ndarray, heatmap: np.ndarray, signed: bool, opacity: float = 0.6) -> np.ndarray:
    """The radiograph (H, W) in gray with the heatmap (H, W) blended on top, BGR uint8."""
    layer = colour_layer(heatmap, signed).astype(np.float32)
    alpha = opacity * layer[..., 3:] / 255
    return (to_bgr(gray01).astype(np.float32) * (1 - alpha) + layer[..., :3] * alpha).round().astype(np.uint8)
