"""Heatmap quality metrics on maps whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from chexplain.runtime.evaluation.map_metrics import (
    curve_auc,
    gini,
    high_frequency_energy,
    perturbation_curve,
    pointing_game,
    region_components,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_region_iou,
)


@pytest.fixture()
def mask() -> np.ndarray:
    mask = np.zeros((100, 100), bool)
    mask[20:40, 60:90] = True  # 600 pixels, 6% of the image
    return mask


def test_a_map_equal_to_the_mask_scores_perfectly(mask: np.ndarray):
    heatmap = mask.astype(float)
    assert relevance_mass_accuracy(heatmap, mask) == 1.0
    assert relevance_rank_accuracy(heatmap, mask) == 1.0
    assert top_region_iou(heatmap, mask, fraction=0.06) == 1.0
    assert pointing_game(heatmap, mask)
    assert region_components(heatmap, fraction=0.06) == (1, 600.0)


def test_a_uniform_map_scores_the_masks_area(mask: np.ndarray):
    uniform = np.ones_like(mask, float)
    assert relevance_mass_accuracy(uniform, mask) == pytest.approx(0.06)
    assert gini(uniform) == pytest.approx(0.0)


def test_negative_relevance_does_not_point_at_the_finding(mask: np.ndarray):
    heatmap = -mask.astype(float)
    heatmap[80, 10] = 0.5  # a little positive evidence elsewhere
    assert relevance_mass_accuracy(heatmap, mask) == 0.0
    assert not pointing_game(heatmap, mask)
    near = np.zeros_like(heatmap)
    near[45, 70] = 1.0  # five pixels below the mask: inside the 15-pixel tolerance
    assert pointing_game(near, mask) and not pointing_game(near, mask, tolerance_px=0)


def test_sparseness_and_granularity():
    one_hot = np.zeros((10, 10))
    one_hot[3, 3] = 1.0
    assert gini(one_hot) == pytest.approx(1 - 1 / 100)
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 12 ** 2))
    checker = ((yy + xx) % 2).astype(float)
    assert high_frequency_energy(smooth) < 0.01 < 0.99 < high_frequency_energy(checker)
    speckle = np.zeros((64, 64))
    speckle[::8, ::8] = 1.0
    assert region_components(speckle, fraction=64 / 4096)[0] == 64  # 64 separate dots
    assert region_components(smooth, fraction=0.05)[0] == 1


def test_deletion_and_insertion_follow_the_evidence():
    """A linear 'model' whose score is the sum of the pixels it weighs: its own weights are
    the best ordering, so deletion falls fastest and insertion rises fastest with them."""
    rng = np.random.default_rng(0)
    weights = rng.random((16, 16)) ** 4
    image = np.ones((16, 16))
    baseline = np.zeros((16, 16))

    def score(batch: np.ndarray) -> np.ndarray:
        return (batch * weights).sum((1, 2))

    faithful = perturbation_curve(score, image, weights, baseline, steps=16)
    shuffled = perturbation_curve(score, image, rng.permutation(weights.ravel()).reshape(16, 16), baseline, steps=16)
    assert faithful[0] == pytest.approx(weights.sum()) and faithful[-1] == pytest.approx(0.0)
    assert curve_auc(faithful) < curve_auc(shuffled)
    inserted = perturbation_curve(score, image, weights, baseline, steps=16, insertion=True)
    assert inserted[0] == pytest.approx(0.0) and curve_auc(inserted) > curve_auc(
        perturbation_curve(score, image, -weights, baseline, steps=16, insertion=True))
    assert curve_auc(np.array([1.0, 0.0])) == 0.5
