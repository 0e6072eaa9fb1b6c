"""Where a heatmap points: its top-evidence pixels on the source grid, and their outline.

The same region goes into the Segmentation (a mask a PACS overlays) and into the TID 1500
report (a polygon: OHIF and other viewers draw only spatial coordinates of measurement
groups). The outline is the border of the connected part of the region that holds the map's
peak, so the polygon marks the strongest evidence even where the region has several parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The share of the image marked per map: the evaluation's top-region IoU looks at the same 5%.
TOP_REGION_FRACTION = 0.05
# The outline's largest deviation from the pixel border, in pixels (fewer vertices, same region).
OUTLINE_TOLERANCE_PX = 1.0


def relevance_region(heat: np.ndarray, fraction: float = TOP_REGION_FRACTION) -> np.ndarray:
    """The pixels at or above the map's (1 - ``fraction``) quantile among positive values.

    Positive evidence only (negative relevance speaks against the class), ties kept together,
    and linear in the pixel count (a selection, not a sort: a full-size radiograph has
    millions of pixels). Empty when the map has no positive value.
    """
    heat = np.asarray(heat, np.float32)
    positive = heat[heat > 0]  # one copy of the positive values, selected in place below
    if positive.size == 0:
        return np.zeros(heat.shape, bool)
    k = min(positive.size, max(1, int(round(fraction * heat.size))))
    positive.partition(positive.size - k)
    return heat >= positive[positive.size - k]  # the threshold is positive: nothing at or below zero


@dataclass(frozen=True)
class Region:
    """Where ``method``'s map of ``finding`` is strongest, on the source image's rows x columns."""

    finding: str
    method: str
    mask: np.ndarray  # bool
    peak: tuple[int, int] | None = None  # (row, column) of the map's maximum, inside the mask

    @classmethod
    def of(cls, finding: str, method: str, heat: np.ndarray) -> Region:
        mask = relevance_region(heat)
        peak = tuple(int(i) for i in np.unravel_index(int(np.argmax(heat)), heat.shape))
        return cls(finding, method, mask, peak if mask[peak] else None)

    def outline(self) -> np.ndarray | None:
        """A closed polygon [N, 2] of (column, row) in DICOM image coordinates (the top-left
        pixel's centre at 0.5, 0.5) around the part of the region holding the peak (or its
        largest part); None for an empty region."""
        mask = self.mask.astype(np.uint8)
        if not mask.any():
            return None
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        inside = self.peak is not None and bool(self.mask[self.peak])
        part = labels[self.peak] if inside else 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        contours, _ = cv2.findContours((labels == part).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        border = max(contours, key=cv2.contourArea)
        border = cv2.approxPolyDP(border, OUTLINE_TOLERANCE_PX, closed=True)[:, 0, :].astype(np.float32) + 0.5
        if len(border) < 3:  # a single pixel or a line: its pixel square
            column, row = border.min(axis=0) - 0.5
            right, bottom = border.max(axis=0) + 0.5
            border = np.array([[column, row], [right, row], [right, bottom], [column, bottom]], np.float32)
        return np.concatenate([border, border[:1]])  # POLYLINE closed: the first point repeated
