"""LRP on the trained (bundled) model must explain the radiograph, not the noise: the default
composite's maps stay put under input noise far below one 8-bit step."""

from __future__ import annotations

import numpy as np
import torch

from chexplain.explain import LRP, Explainer
from chexplain.export.explained import input_bounds
from chexplain.grammar import DEFAULT_LRP_COMPOSITE
from chexplain.models.zoo import load_model
from chexplain.runtime import preprocess, read_radiograph

from helpers import IMAGES, SIIM

NOISE = 1e-3  # of the normalised input's standard deviation: 1/10 of one 8-bit step
MIN_PEARSON = 0.95  # the bar; measured 0.9997 (lrp:epsilon-plus-bn 0.9994; lrp:epsilon -0.20)


def _min_pearson(composite: str) -> float:
    model, manifest = load_model("densenet121-chexpert")
    x = torch.from_numpy(np.stack([preprocess(read_radiograph(p).pixels, manifest.preprocessing)[0]
                                   for p in (IMAGES / "00013125_000.png", SIIM)]))
    explainer = Explainer(model.float(), [LRP(composite, bounds=input_bounds(manifest))]).eval()
    worst = 1.0
    with torch.no_grad():
        clean = explainer(x, top_k=3)
        for draw in range(2):
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(draw)) * float(x.std()) * NOISE
            noisy = explainer(x + noise, clean["targets"])["lrp"]
            for a, b in zip(clean["lrp"].flatten(2).flatten(0, 1), noisy.flatten(2).flatten(0, 1)):
                worst = min(worst, float(torch.corrcoef(torch.stack([a, b]))[0, 1]))
    return worst


def test_the_default_lrp_is_stable_under_imperceptible_noise():
    assert _min_pearson(DEFAULT_LRP_COMPOSITE) >= MIN_PEARSON
