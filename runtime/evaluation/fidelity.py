"""How close one run's outputs are to a reference's: shared by the export's parity check and
the benchmark."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .similarity import pearson

# The precision plan's criteria for FP16 and mixed graphs and engines against FP32.
REDUCED_PROBABILITY_TOLERANCE = 1e-2
REDUCED_MIN_MAP_PEARSON = 0.99


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Max |difference|, the reference's scale, relative L2 error and Pearson correlation."""
    ref, got = reference.astype(np.float64).ravel(), candidate.astype(np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf maps (overflowing rules) are judged, not warned about
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        norm = float(np.linalg.norm(ref))
        return {
            "max_abs_diff": float(np.abs(ref - got).max()) if ref.size else 0.0,
            "scale": scale,
            "relative_l2": float(np.linalg.norm(ref - got) / norm) if norm > 0 else 0.0,
            "pearson": pearson(ref, got),
        }


def comparable_maps(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """[B, K]: the maps worth comparing — the same class explained in both, with its logit on the
    same side of zero (LRP's relevance starts from the logit, so a logit that crosses zero in
    reduced precision flips the whole map's sign)."""
    if "targets" not in reference or "targets" not in candidate:
        return None
    same = reference["targets"] == candidate["targets"]
    if "logits" in reference and "logits" in candidate:
        targets = reference["targets"].astype(np.int64)
        same &= (np.take_along_axis(reference["logits"], targets, axis=1) > 0) == \
                (np.take_along_axis(candidate["logits"], targets, axis=1) > 0)
    return same


def map_pearsons(reference: np.ndarray, candidate: np.ndarray, same_class: np.ndarray | None) -> list[float]:
    """Pearson correlation of each [B, K, ...] map with its reference, where the classes agree."""
    values = []
    for b in range(reference.shape[0]):
        for k in range(reference.shape[1]):
            if same_class is None or same_class[b, k]:
                values.append(agreement(reference[b, k], candidate[b, k])["pearson"])
    return values


def fidelity(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
             map_outputs: Sequence[str]) -> dict[str, Any]:
    """Probabilities' max |difference|, how often the explained classes agree, and for each
    heatmap output the Pearson correlation per map (where the classes agree)."""
    result: dict[str, Any] = {
        "probabilities_max_abs_diff": float(np.abs(outputs["probabilities"] - reference["probabilities"]).max()),
    }
    same = comparable_maps(reference, outputs)
    if same is not None:
        result["targets_agreement"] = float((outputs["targets"] == reference["targets"]).mean())
    for name in map_outputs:
        pearsons = map_pearsons(reference[name], outputs[name], same)
        if pearsons:
            result[name] = {"min_pearson": min(pearsons), "median_pearson": float(np.median(pearsons)),
                            "max_abs_diff": float(np.abs(reference[name] - outputs[name]).max()),
                            "maps": len(pearsons)}
    return result
