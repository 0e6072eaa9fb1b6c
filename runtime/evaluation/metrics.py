"""Classification metrics for multi-label validation: AUROC and Youden's J thresholds. numpy only."""

from __future__ import annotations

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    for group in np.split(np.arange(len(values)), boundaries):
        if len(group) > 1:
            ranks[order[group]] = ranks[order[group]].mean()
    return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); None when
    only one class is present."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The score threshold (predict positive at >= threshold) maximising sensitivity + specificity - 1."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    if labels.all() or not labels.any():
        return None
    best, best_j = None, -np.inf
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        j = (predicted & labels).sum() / labels.sum() - (predicted & ~labels).sum() / (~labels).sum()
        if j > best_j:
            best, best_j = float(threshold), j
    return best


def per_class(labels: np.ndarray, scores: np.ndarray, known: np.ndarray, classes: tuple[str, ...],
              metric) -> dict[str, float | None]:
    """``metric`` per class over the samples whose label is known."""
    return {name: metric(labels[known[:, i] > 0, i], scores[known[:, i] > 0, i]) for i, name in enumerate(classes)}
