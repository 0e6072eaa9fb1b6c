"""The smooth first-layer rule against a slow reference written as loops over the windows, and
the checkerboard it removes. (Zennit has no such rule; on DenseNet121 the smooth composites
also equal Zennit's machinery with the tent in place of Flat's ones: test_explainer.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from chexplain.explain import LRP, Explainer
from chexplain.explain.core import DEFAULT_STABILIZER
from chexplain.explain.graph import trace
from chexplain.explain.rules import Flat, SmoothFlat

TARGETS = torch.tensor([[0, 2]])
GEOMETRIES = {  # kernel, stride, padding; the first two have a tent, the others are the flat rule
    "7x7-stride-2": (7, 2, 3),
    "3x3-stride-2": (3, 2, 1),
    "5x5-stride-2": (5, 2, 2),
    "4x4-patches": (4, 4, 0),
    "3x3-stride-1": (3, 1, 1),
}


def _slow_tent(kernel: int, stride: int) -> list[float]:
    """The tent, written out: 1 - |offset from the centre| / half-width, where the half-width
    (kernel + 1) / 2 is a multiple of the stride; ones otherwise."""
    half = (kernel + 1) / 2
    if stride == 1 or half != int(half) or int(half) % stride:
        return [1.0] * kernel
    return [1 - abs(a - (kernel - 1) / 2) / half for a in range(kernel)]


def _slow_spread(relevance: np.ndarray, kernel: int, stride: int, padding: int, size: int, channels: int) -> np.ndarray:
    """Each output position's relevance (summed over channels) handed to the pixels of its window
    inside the image, in proportion to the tent's weight (the window's total kept but for the
    stabiliser); one window at a time."""
    tent = _slow_tent(kernel, stride)
    out = np.zeros((size, size))
    for oy in range(relevance.shape[0]):
        for ox in range(relevance.shape[1]):
            pixels = [(oy * stride - padding + a, ox * stride - padding + b, tent[a] * tent[b])
                      for a in range(kernel) for b in range(kernel)]
            inside = [(y, x, w) for y, x, w in pixels if 0 <= y < size and 0 <= x < size]
            z = channels * sum(w for _, _, w in inside) + DEFAULT_STABILIZER
            for y, x, w in inside:
                out[y, x] += channels * w * relevance[oy, ox] / z
    return out


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_the_first_layer_spreads_what_reaches_it_as_the_slow_reference_does(geometry: str):
    kernel, stride, padding = GEOMETRIES[geometry]
    torch.manual_seed(0)
    first = nn.Conv2d(3, 8, kernel, stride, padding)
    rest = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 4))
    model = nn.Sequential(first, rest).double().eval()
    x = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        ours = Explainer(model, [LRP("epsilon-plus-smooth")]).double()(x, TARGETS)["lrp"]
        # what reaches the first layer's output: the same rules above it, the first layer's output as input
        above = Explainer(rest, [LRP("epsilon-plus")]).double()(first(x), TARGETS)["lrp"]
    assert above.abs().sum() > 0
    for k in range(TARGETS.shape[1]):
        expected = _slow_spread(above[0, k].numpy(), kernel, stride, padding, 20, 3)
        np.testing.assert_allclose(ours[0, k].numpy(), expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


def _spread_of_even_relevance(rule_factory, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """The input relevance (summed over channels) of one layer whose every output holds relevance 1."""
    conv = nn.Conv2d(3, 8, kernel, stride, padding).double()
    (op,) = [node for node in trace(nn.Sequential(conv))[1] if node.kind == "conv"]
    rule = rule_factory().build(op)
    x = torch.randn(1, 3, 40, 40, dtype=torch.float64)
    output = conv(x).detach()
    return rule.backward(torch.ones(1, 1, *output.shape[1:], dtype=torch.float64), [x], output)[0].sum(2)[0, 0]


def test_even_relevance_lands_evenly_where_the_flat_rule_draws_the_strides_grid():
    smooth = _spread_of_even_relevance(SmoothFlat, 7, 2, 3)[8:-8, 8:-8]  # away from the border
    flat = _spread_of_even_relevance(Flat, 7, 2, 3)[8:-8, 8:-8]
    assert float(smooth.std() / smooth.mean()) < 1e-9
    assert float(flat.std() / flat.mean()) > 0.05  # three or four windows per pixel and axis, alternately
    # the same total either way: each window's relevance kept (up to the stabiliser)
    whole_smooth, whole_flat = _spread_of_even_relevance(SmoothFlat, 7, 2, 3), _spread_of_even_relevance(Flat, 7, 2, 3)
    torch.testing.assert_close(whole_smooth.sum(), whole_flat.sum(), rtol=1e-6, atol=0)
