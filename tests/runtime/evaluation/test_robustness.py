"""Similarity measures and map robustness on maps whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from chexplain.runtime.evaluation.robustness import (
    level_name,
    map_robustness,
    noisy_copies,
    robustness_markdown,
    summarize_robustness,
)
from chexplain.runtime.evaluation.similarity import pearson, relative_change, spearman, ssim


@pytest.fixture()
def blob() -> np.ndarray:
    """A smooth bump off centre on a 48 x 40 grid."""
    y, x = np.mgrid[0:48, 0:40]
    return np.exp(-((y - 18.0) ** 2 + (x - 25.0) ** 2) / 60.0)


def _slow_ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, size: int = 11) -> float:
    """SSIM written out pixel by pixel: Gaussian-weighted statistics over mirrored windows."""
    def unit(m):
        return (m - m.min()) / (m.max() - m.min())

    x, y = unit(a.astype(np.float64)), unit(b.astype(np.float64))
    offsets = np.arange(size) - size // 2
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma ** 2))
    weights /= weights.sum()
    pad = size // 2
    px, py = np.pad(x, pad, mode="symmetric"), np.pad(y, pad, mode="symmetric")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    total = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            wx, wy = px[i:i + size, j:j + size], py[i:i + size, j:j + size]
            mx, my = (weights * wx).sum(), (weights * wy).sum()
            vx, vy = (weights * (wx - mx) ** 2).sum(), (weights * (wy - my) ** 2).sum()
            cov = (weights * (wx - mx) * (wy - my)).sum()
            total += (2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return total / x.size


def test_ssim_equals_a_windowed_reference_and_ignores_scale(blob: np.ndarray):
    rng = np.random.default_rng(0)
    noisy = blob + 0.2 * rng.standard_normal(blob.shape)
    assert ssim(blob, noisy) == pytest.approx(_slow_ssim(blob, noisy), abs=1e-6)
    assert ssim(blob, blob) == pytest.approx(1.0)
    assert ssim(blob, 7.0 * blob - 3.0) == pytest.approx(1.0)  # maps are compared after scaling to [0, 1]
    assert ssim(blob, -blob) < 0  # the inverted map
    assert 0 < ssim(blob, noisy) < 0.9
    with pytest.raises(ValueError, match="2-D maps of one shape"):
        ssim(blob, blob.T)


def test_rank_and_linear_correlation(blob: np.ndarray):
    rng = np.random.default_rng(1)
    other = blob + 0.3 * rng.standard_normal(blob.shape)
    assert spearman(blob, np.exp(5 * blob)) == pytest.approx(1.0)  # monotone: same ranks
    assert pearson(blob, np.exp(5 * blob)) < 0.99  # but not linear
    assert spearman(blob, -blob) == pytest.approx(-1.0) and pearson(blob, -blob) == pytest.approx(-1.0)
    tied = np.round(other, 1)  # many ties: mean ranks, as scipy does
    assert spearman(blob, tied) == pytest.approx(stats.spearmanr(blob.ravel(), tied.ravel()).statistic, abs=1e-12)
    assert pearson(blob, other) == pytest.approx(stats.pearsonr(blob.ravel(), other.ravel()).statistic, abs=1e-12)
    assert pearson(np.ones(4), np.ones(4)) == 1.0 and pearson(np.ones(4), np.arange(4)) == 0.0


def test_relative_change(blob: np.ndarray):
    assert relative_change(blob, 1.1 * blob) == pytest.approx(0.1)
    assert relative_change(blob, blob) == 0.0
    assert relative_change(np.zeros(3), np.zeros(3)) == 0.0 and relative_change(np.zeros(3), np.ones(3)) == np.inf


def test_noisy_copies_are_seeded_and_scaled_to_the_inputs_spread():
    image = np.random.default_rng(2).normal(0.5, 2.0, (3, 64, 64)).astype(np.float32)
    first = noisy_copies(image, 1e-2, 4, np.random.default_rng(7))
    again = noisy_copies(image, 1e-2, 4, np.random.default_rng(7))
    assert first.shape == (4, 3, 64, 64) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    noise = first.astype(np.float64) - image
    assert noise.std() == pytest.approx(1e-2 * image.std(), rel=0.02)
    assert not np.allclose(noise[0], noise[1])  # independent draws
    assert level_name(1e-4) == "1e-04" and level_name(0.01) == "1e-02"


def test_map_robustness_reports_the_worst_draw(blob: np.ndarray):
    same = map_robustness(blob, [blob, blob])
    assert same == pytest.approx({"pearson": 1.0, "ssim": 1.0, "max_sensitivity": 0.0})
    flipped = map_robustness(blob, [blob, 1.5 * blob, -blob])
    assert flipped["pearson"] == pytest.approx(-1.0) and flipped["ssim"] < 0
    assert flipped["max_sensitivity"] == pytest.approx(2.0)  # ||-b - b|| / ||b||
    with pytest.raises(ValueError, match="at least one"):
        map_robustness(blob, [])


def test_summary_and_table_of_robustness():
    records = [{"robustness": {"1e-03": {"pearson": p, "ssim": s, "max_sensitivity": m}}}
               for p, s, m in [(1.0, 0.9, 0.1), (0.5, 0.7, 0.5)]]
    summary = summarize_robustness([*records, {"robustness": {}}])
    assert summary["1e-03"]["pearson"] == {"mean": 0.75, "worst": 0.5}
    assert summary["1e-03"]["ssim"] == pytest.approx({"mean": 0.8, "worst": 0.7})
    assert summary["1e-03"]["max_sensitivity"] == {"mean": 0.3, "worst": 0.5}
    assert summarize_robustness([{"robustness": {}}]) == {}
    table = robustness_markdown([{"method": "gradcam", "finding": "all findings", "n": 2, "robustness": summary}])
    assert "| Pearson @1e-03 |" in table and "| gradcam | all findings | 2 | 0.750 (0.500) | 0.800 (0.700) | 0.300 |" in table
    assert robustness_markdown([{"method": "gradcam", "robustness": {}}]) == ""
