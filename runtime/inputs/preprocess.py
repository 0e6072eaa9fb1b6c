"""Manifest-driven preprocessing that remembers its geometry, so results map back."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..manifest import Preprocessing


@dataclass(frozen=True)
class Geometry:
    """Where the network input lies on the original pixel grid.

    ``box`` = (x0, y0, x1, y1) in original pixels, end-exclusive; it may reach outside
    the image (``pad``) or lie inside it (``center``).
    """

    original_size: tuple[int, int]  # (height, width)
    box: tuple[int, int, int, int]

    def scaled(self, height: int, width: int) -> Geometry:
        """The same placement on the original image shown at ``height`` x ``width`` pixels."""
        sy, sx = height / self.original_size[0], width / self.original_size[1]
        x0, y0, x1, y1 = self.box
        return Geometry((height, width), (round(x0 * sx), round(y0 * sy), max(round(x1 * sx), round(x0 * sx) + 1),
                                          max(round(y1 * sy), round(y0 * sy) + 1)))

    def to_original(self, heatmap: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Resize a map covering the network input straight onto the original grid."""
        x0, y0, x1, y1 = self.box
        height, width = self.original_size
        resized = cv2.resize(heatmap.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        out = np.full((height, width), fill, np.float32)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x1, width), min(y1, height)
        out[sy0:sy1, sx0:sx1] = resized[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
        return out


def input_box(height: int, width: int, prep: Preprocessing) -> tuple[int, int, int, int]:
    """The region of the original image that the crop policy sends to the network."""
    target_h, target_w = prep.size
    aspect = target_w / target_h
    if prep.crop == "resize" or abs(width / height - aspect) < 1e-9:
        return 0, 0, width, height
    wider = width / height > aspect
    if (prep.crop == "center") == wider:  # cut width, or pad height
        box_w = round(height * aspect)
        x0 = (width - box_w) // 2
        return x0, 0, x0 + box_w, height
    box_h = round(width / aspect)
    y0 = (height - box_h) // 2
    return 0, y0, width, y0 + box_h


def preprocess(pixels: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, Geometry]:
    """Gray [0, 1] pixels (H, W) -> normalised network input (C, h, w) float32."""
    height, width = pixels.shape
    x0, y0, x1, y1 = input_box(height, width, prep)
    region = np.zeros((y1 - y0, x1 - x0), np.float32)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    region[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = pixels[sy0:sy1, sx0:sx1]
    target_h, target_w = prep.size
    shrinking = region.shape[0] > target_h
    resized = cv2.resize(region, (target_w, target_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    mean = np.asarray(prep.mean, np.float32)[:, None, None]
    std = np.asarray(prep.std, np.float32)[:, None, None]
    image = (np.broadcast_to(resized, (prep.channels, target_h, target_w)) - mean) / std
    return np.ascontiguousarray(image, dtype=np.float32), Geometry((height, width), (x0, y0, x1, y1))
