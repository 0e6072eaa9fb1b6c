"""Images for people: the side-by-side sheet (radiograph, then each method, one row per
class) and the one rule for shrinking an image to a longest side."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .colour import to_bgr

TILE_HEIGHT = 384
LABEL_HEIGHT = 28


def fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` scaled down (area interpolation) so that its longest side is at most ``max_side``."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def _tile(image: np.ndarray, label: str) -> np.ndarray:
    height, width = image.shape[:2]
    scaled = cv2.resize(image, (max(1, round(width * TILE_HEIGHT / height)), TILE_HEIGHT), interpolation=cv2.INTER_AREA)
    banner = np.zeros((LABEL_HEIGHT, scaled.shape[1], 3), np.uint8)
    cv2.putText(banner, label[:48], (6, LABEL_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([banner, scaled])


def sheet(gray01: np.ndarray, rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]]) -> np.ndarray:
    """One row per explained class: the radiograph, then each method's overlay, labelled."""
    original = to_bgr(gray01)
    lines = []
    for class_label, overlays in rows:
        tiles = [_tile(original, class_label)] + [_tile(image, name) for name, image in overlays]
        lines.append(np.hstack(tiles))
    width = max(line.shape[1] for line in lines)
    return np.vstack([np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0))) for line in lines])
