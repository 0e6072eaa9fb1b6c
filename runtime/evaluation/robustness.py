"""Does a map stay put when the radiograph does not change visibly? numpy and OpenCV only.

Each explained map is compared with the maps of the same radiograph after Gaussian noise of
standard deviation ``level`` x the network input's own standard deviation (1e-4 is about 40
times smaller than one step of an 8-bit image), over several seeded draws, for the same
classes. Per map and level it reports the worst draw's Pearson correlation and SSIM with
the clean map, and the maximum sensitivity: the largest relative change
``||map(x + noise) - map(x)|| / ||map(x)||`` over the draws, a Monte Carlo estimate of
SENS_max (Yeh et al., "On the (in)fidelity and sensitivity of explanations", NeurIPS 2019,
eq. 4), scale-free so that methods compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .similarity import pearson, relative_change, ssim

NOISE_LEVELS = (1e-4, 1e-3, 1e-2)
NOISE_DRAWS = 3
MEASURES = ("pearson", "ssim", "max_sensitivity")
WORST = {"pearson": min, "ssim": min, "max_sensitivity": max}  # the worst of several maps, per measure


def level_name(level: float) -> str:
    """The key of a noise level in records and tables: ``1e-04`` ... ``1e-02``."""
    return f"{level:.0e}"


def noisy_copies(image: np.ndarray, level: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    """[draws, C, H, W]: the network input plus Gaussian noise of std ``level`` x its own std."""
    scale = level * float(np.std(image))
    noise = rng.standard_normal((draws, *image.shape)) * scale
    return (image[None].astype(np.float64) + noise).astype(np.float32)


def map_robustness(clean: np.ndarray, noisy: Sequence[np.ndarray]) -> dict[str, float]:
    """The worst draw's Pearson and SSIM with the clean map, and the maximum sensitivity."""
    if not len(noisy):
        raise ValueError("robustness needs at least one noisy map")
    return {
        "pearson": min(pearson(clean, other) for other in noisy),
        "ssim": min(ssim(clean, other) for other in noisy),
        "max_sensitivity": max(relative_change(clean, other) for other in noisy),
    }


def summarize_robustness(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per level and measure over maps: the mean and the worst (lowest similarity, highest
    sensitivity). Records without robustness give an empty summary."""
    measured = [r["robustness"] for r in records if r.get("robustness")]
    if not measured:
        return {}
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for level in measured[0]:
        summary[level] = {}
        for measure in MEASURES:
            values = [entry[level][measure] for entry in measured]
            summary[level][measure] = {"mean": float(np.mean(values)), "worst": float(WORST[measure](values))}
    return summary


def robustness_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One row per method and group: for each level, Pearson and SSIM as mean (worst), and the
    mean maximum sensitivity; empty when nothing was measured."""
    rows = [r for r in rows if r.get("robustness")]
    if not rows:
        return ""
    levels = list(rows[0]["robustness"])
    header = ["method", "finding", "n"]
    for level in levels:
        header += [f"Pearson @{level}", f"SSIM @{level}", f"max-sens. @{level}"]
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    for row in rows:
        cells = []
        for level in levels:
            entry = row["robustness"][level]
            cells += [f"{entry['pearson']['mean']:.3f} ({entry['pearson']['worst']:.3f})",
                      f"{entry['ssim']['mean']:.3f} ({entry['ssim']['worst']:.3f})",
                      f"{entry['max_sensitivity']['mean']:.3f}"]
        lines.append(f"| {row['method']} | {row['finding']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
