"""How alike two heatmaps are: the similarity measures robustness and the randomisation
check share. numpy and OpenCV only.

- Pearson correlation: do the two maps rise and fall together (sign and scale matter)?
- Spearman rank correlation: do they rank the pixels alike? (Adebayo et al., "Sanity checks
  for saliency maps", NeurIPS 2018, compare maps by it, with and without the absolute value.)
- SSIM: structural similarity (Wang et al., "Image quality assessment: from error visibility
  to structural similarity", IEEE TIP 2004, eq. 13) of the maps scaled to [0, 1], with the
  paper's 11x11 Gaussian window (sigma 1.5) and constants K1 = 0.01, K2 = 0.03.
"""

from __future__ import annotations

import cv2
import numpy as np

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1, SSIM_K2 = 0.01, 0.03


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; 1 for two equal constant maps, 0 when only one is constant."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        if x.size > 1 and x.std() > 0 and y.std() > 0:
            return float(np.corrcoef(x, y)[0, 1])
    return float(np.array_equal(x, y))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their mean rank (so constant regions do not order at random)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.arange(values.size)
    unique, inverse = np.unique(values, return_inverse=True)
    if unique.size < values.size:
        ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: the Pearson correlation of the pixels' ranks."""
    return pearson(_ranks(np.asarray(a, np.float64).ravel()), _ranks(np.asarray(b, np.float64).ravel()))


def unit_range(heatmap: np.ndarray) -> np.ndarray:
    """The map scaled to [0, 1] (a constant map becomes zeros)."""
    values = np.asarray(heatmap, np.float64)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two 2-D maps, each scaled to [0, 1] first (data range 1)."""
    x, y = unit_range(a), unit_range(b)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"SSIM compares two 2-D maps of one shape, not {x.shape} and {y.shape}")

    def local_mean(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mean_x ** 2
    var_y = local_mean(y * y) - mean_y ** 2
    covariance = local_mean(x * y) - mean_x * mean_y
    index = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def relative_change(reference: np.ndarray, other: np.ndarray) -> float:
    """||other - reference|| / ||reference|| (Frobenius): how far a map moved, scale-free."""
    ref = np.asarray(reference, np.float64)
    norm = float(np.linalg.norm(ref))
    change = float(np.linalg.norm(np.asarray(other, np.float64) - ref))
    return change / norm if norm > 0 else (0.0 if change == 0 else float("inf"))
