"""How good is a heatmap? Localisation against a ground-truth mask, granularity, sparseness
and faithfulness, on maps at the radiograph's (or the network input's) pixel grid. numpy
and OpenCV only.

Localisation counts positive evidence: LRP maps are signed, and negative relevance speaks
against the class, so it does not count as pointing at the finding.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

POINTING_TOLERANCE_PX = 15  # the pointing game's customary tolerance around the mask


def _positive(heatmap: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(heatmap, np.float64), 0, None)


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tolerance_px: int = POINTING_TOLERANCE_PX) -> bool:
    """Does the map's maximum fall on the mask (grown by ``tolerance_px``)?"""
    mask = np.asarray(mask, bool)
    if tolerance_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance_px + 1,) * 2)
        mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    y, x = np.unravel_index(int(np.argmax(heatmap)), np.shape(heatmap))
    return bool(mask[y, x])


def relevance_mass_accuracy(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """The share of the positive relevance that lies inside the mask."""
    positive = _positive(heatmap)
    total = positive.sum()
    return float(positive[np.asarray(mask, bool)].sum() / total) if total > 0 else 0.0


def relevance_rank_accuracy(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Of the K highest-ranked pixels (K = the mask's size), the share inside the mask."""
    mask = np.asarray(mask, bool)
    k = int(mask.sum())
    if k == 0:
        return 0.0
    top = np.argsort(np.asarray(heatmap, np.float64).ravel(), kind="stable")[::-1][:k]
    return float(mask.ravel()[top].mean())


def top_region(heatmap: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of pixels with the highest values (at least one)."""
    flat = np.asarray(heatmap, np.float64).ravel()
    k = max(1, int(round(fraction * flat.size)))
    region = np.zeros(flat.size, bool)
    region[np.argsort(flat, kind="stable")[::-1][:k]] = True
    return region.reshape(np.shape(heatmap))


def top_region_iou(heatmap: np.ndarray, mask: np.ndarray, fraction: float = 0.05) -> float:
    """Intersection over union of the top ``fraction`` region with the mask."""
    region, mask = top_region(heatmap, fraction), np.asarray(mask, bool)
    union = (region | mask).sum()
    return float((region & mask).sum() / union) if union else 0.0


def gini(heatmap: np.ndarray) -> float:
    """Sparseness of |map|: 0 when uniform, towards 1 when all of it sits in one pixel."""
    values = np.sort(np.abs(np.asarray(heatmap, np.float64)).ravel())
    n, total = values.size, values.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * values).sum() / (n * total))


def high_frequency_energy(heatmap: np.ndarray, cutoff: float = 0.25) -> float:
    """Share of the map's spectral energy (mean removed) above ``cutoff`` x the Nyquist
    frequency: how much fine detail it carries."""
    values = np.asarray(heatmap, np.float64)
    spectrum = np.abs(np.fft.fft2(values - values.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(values.shape[0]), np.fft.fftfreq(values.shape[1]), indexing="ij")
    radius = np.sqrt(fy ** 2 + fx ** 2) / 0.5  # 1 at Nyquist
    total = spectrum.sum()
    return float(spectrum[radius > cutoff].sum() / total) if total > 0 else 0.0


def region_components(heatmap: np.ndarray, fraction: float = 0.05) -> tuple[int, float]:
    """Connected components of the top ``fraction`` region: how many, and their mean size in pixels."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(top_region(heatmap, fraction).astype(np.uint8), connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    return int(count - 1), float(sizes.mean()) if len(sizes) else 0.0


def perturbation_curve(score: Callable[[np.ndarray], np.ndarray], image: np.ndarray, heatmap: np.ndarray,
                       baseline: np.ndarray, steps: int = 10, insertion: bool = False) -> np.ndarray:
    """The class score as the most relevant pixels are removed (deletion: replaced by
    ``baseline``) or revealed (insertion: starting from ``baseline``), in ``steps`` equal
    shares; ``score`` maps a batch [N, ...] of images to N scores. Returns steps + 1 scores."""
    order = np.argsort(np.asarray(heatmap, np.float64).ravel(), kind="stable")[::-1]
    height, width = np.shape(heatmap)
    batch = []
    for step in range(steps + 1):
        chosen = np.zeros(height * width, bool)
        chosen[order[: int(round(step / steps * chosen.size))]] = True
        chosen = chosen.reshape(height, width)
        start, end = (baseline, image) if insertion else (image, baseline)
        batch.append(np.where(chosen, end, start))
    return np.asarray(score(np.stack(batch)), np.float64)


def curve_auc(curve: np.ndarray) -> float:
    """Area under a perturbation curve over [0, 1] (trapezoids)."""
    curve = np.asarray(curve, np.float64)
    return float(((curve[1:] + curve[:-1]) / 2).sum() / (len(curve) - 1))
