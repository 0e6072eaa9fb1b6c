"""Each LRP rule on tiny layers against the textbook formula, written another way: every layer
(convolution, average pooling, dense) as an explicit matrix found by probing it with basis
vectors, and relevance redistributed by the rule's contributions z_ij summed over that matrix,
not by transposed convolutions or folded factors. Milliseconds each, so a change to one rule is
checked in the quick lane (`make test-fast`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from chexplain.explain import LRP, Explainer
from chexplain.explain.composites import BATCHNORM_EPSILON, Composite
from chexplain.explain.rules import AlphaBeta, Epsilon, Flat, MatmulRelevance, SoftmaxRelevance, WSquare, ZPlus

STABILIZER = 1e-6
SHAPE = (2, 6, 6)  # channels, height, width of the input


def tiny_model() -> nn.Sequential:
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 5),
    ).double().eval()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.bias.uniform_(-0.3, 0.3)
    return model


def stabilised(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """z + epsilon sign(z), sign(0) = +1."""
    return z + torch.where(z >= 0, epsilon, -epsilon)


def as_matrix(layer: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [n_out, n_in], b [n_out]) of an affine layer, probed with the zero input and each basis vector."""
    n_in = math.prod(shape)
    with torch.no_grad():
        bias = layer(torch.zeros(1, *shape, dtype=torch.float64)).flatten()
        responses = layer(torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape)).reshape(n_in, -1)
    return (responses - bias).T, bias


def modified(layer: nn.Module, weight: Callable[[torch.Tensor], torch.Tensor],
             bias: Callable[[torch.Tensor], torch.Tensor] | None) -> nn.Module:
    """A copy of ``layer`` with its weight (and bias; None: no bias) transformed."""
    copy = type(layer).__new__(type(layer))
    copy.__dict__ = {**layer.__dict__, "_parameters": dict(layer._parameters)}
    copy.weight = nn.Parameter(weight(layer.weight.detach()))
    copy.bias = None if bias is None else nn.Parameter(bias(layer.bias.detach()))
    return copy


def share(contributions: torch.Tensor, totals: torch.Tensor, relevance: torch.Tensor, epsilon: float) -> torch.Tensor:
    """R_i = sum_j z_ij / stab(z_j) R_j."""
    return (contributions / stabilised(totals, epsilon)[:, None] * relevance[:, None]).sum(0)


def textbook(rule: str, layer: nn.Module, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """One layer's input relevance (flat) by the rule's formula over the layer's matrix."""
    shape = tuple(x.shape)
    flat = x.flatten()
    if isinstance(layer, nn.BatchNorm2d):  # the -bn composites: epsilon (1e-3), the shift absorbing its share
        w, b = as_matrix(layer, shape)
        z = w * flat[None]
        return share(z, z.sum(1) + b, relevance, BATCHNORM_EPSILON)
    if isinstance(layer, nn.AvgPool2d):  # sum pooling's rule (Zennit's Norm): epsilon without bias
        w, _ = as_matrix(layer, shape)
        z = w * flat[None]
        return share(z, z.sum(1), relevance, STABILIZER)
    pos, neg = flat.clamp(min=0), flat.clamp(max=0)
    if rule == "epsilon":
        w, b = as_matrix(layer, shape)
        z = w * flat[None]
        return share(z, z.sum(1) + b, relevance, 0.25)
    if rule in ("zplus", "alpha2beta1"):
        w_pos, b_pos = as_matrix(modified(layer, lambda w: w.clamp(min=0), lambda b: b.clamp(min=0)), shape)
        w_neg, b_neg = as_matrix(modified(layer, lambda w: w.clamp(max=0), lambda b: b.clamp(max=0)), shape)
        activating = w_pos * pos[None] + w_neg * neg[None]
        result = share(activating, activating.sum(1) + b_pos, relevance, STABILIZER)
        if rule == "zplus":
            return result
        inhibiting = w_neg * pos[None] + w_pos * neg[None]
        return 2 * result - share(inhibiting, inhibiting.sum(1) + b_neg, relevance, STABILIZER)
    if rule == "flat":  # every connection of the receptive field alike
        w, _ = as_matrix(modified(layer, torch.ones_like, None), shape)
        z = (w != 0).to(w.dtype)
        return share(z, z.sum(1), relevance, STABILIZER)
    if rule == "wsquare":  # squared weights over the field; the squared bias in z_j too, as Zennit has it
        w, b = as_matrix(modified(layer, lambda w: w * w, lambda b: b * b), shape)
        return share(w, w.sum(1) + b, relevance, STABILIZER)
    raise AssertionError(rule)


def textbook_lrp(model: nn.Sequential, rule: str | Callable[[nn.Module], str], x: torch.Tensor,
                 target: int) -> torch.Tensor:
    """Input relevance [H, W] (summed over channels), seeded with the target's logit; ``rule``
    names one rule for every layer or picks one per layer."""
    rule_of = rule if callable(rule) else (lambda layer: rule)
    inputs = []
    with torch.no_grad():
        a = x[0]
        for layer in model:
            inputs.append(a)
            a = layer(a[None])[0]
    relevance = torch.zeros_like(a)
    relevance[target] = a[target]
    for layer, a_in in zip(reversed(model), reversed(inputs)):
        if isinstance(layer, (nn.ReLU, nn.Flatten)):  # ReLU passes relevance; Flatten reshapes it
            relevance = relevance.reshape(a_in.shape)
            continue
        relevance = textbook(rule_of(layer), layer, a_in, relevance.flatten()).reshape(a_in.shape)
    return relevance.sum(0)


RULES = {
    "epsilon": lambda: Epsilon(0.25),
    "zplus": lambda: ZPlus(STABILIZER),
    "alpha2beta1": lambda: AlphaBeta(2.0, 1.0, STABILIZER),
    "flat": lambda: Flat(STABILIZER),
    "wsquare": lambda: WSquare(STABILIZER),
}


@pytest.mark.parametrize("fold_factors", [True, False], ids=["folded", "as-written"])
@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_equals_its_textbook_formula_on_tiny_layers(rule: str, fold_factors: bool):
    model = tiny_model()
    x = torch.randn(1, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([[1, 4]])
    composite = Composite(rule, conv=RULES[rule](), linear=RULES[rule](), first=RULES[rule](), stabilizer=STABILIZER)
    with torch.no_grad():
        ours = Explainer(model, [LRP(composite)], fold_factors=fold_factors).double()(x, targets)["lrp"]
    for k, target in enumerate(targets[0].tolist()):
        reference = textbook_lrp(model, rule, x, target)
        torch.testing.assert_close(ours[0, k], reference, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fold_factors", [True, False], ids=["folded", "as-written"])
def test_batchnorm_epsilon_with_z_plus_equals_the_textbook_on_a_dense_layer_pattern(fold_factors: bool):
    """The default composites' pattern (BatchNorm -> ReLU -> convolution, as in DenseNet's dense
    layers): the BatchNorm's epsilon rule, z+ on the convolutions, epsilon on the head."""
    torch.manual_seed(11)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    ).double().eval()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
    x = torch.randn(1, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    composite = Composite("zplus-bn", conv=ZPlus(STABILIZER), linear=Epsilon(0.25), first=ZPlus(STABILIZER),
                          stabilizer=STABILIZER, batchnorm="epsilon")
    with torch.no_grad():
        ours = Explainer(model, [LRP(composite)], fold_factors=fold_factors).double()(x, torch.tensor([[0, 3]]))["lrp"]

    def rule_of(layer: nn.Module) -> str:
        return "epsilon" if isinstance(layer, nn.Linear) else "zplus"

    for k, target in enumerate((0, 3)):  # atol: the probed s = BN(e_i) - BN(0) rounds, and 1/y magnifies it near y = 0
        torch.testing.assert_close(ours[0, k], textbook_lrp(model, rule_of, x, target), rtol=1e-9, atol=1e-10)


def test_the_textbook_reference_can_tell_rules_apart():
    """The reference is not blind: on the same model and input, the rules give different maps."""
    model = tiny_model()
    x = torch.randn(1, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    maps = {rule: textbook_lrp(model, rule, x, 1) for rule in RULES}
    for a in RULES:
        for b in RULES:
            if a < b:
                assert not torch.allclose(maps[a], maps[b], rtol=1e-3, atol=1e-6), (a, b)


def test_products_of_two_activations_share_relevance_as_attnlrp_writes_it():
    """``a @ b``: two activations split each output's relevance evenly (AttnLRP's uniform rule), a
    softmax operand is a gate held constant (all to the other), written out element by element."""
    torch.manual_seed(3)
    a, b = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(1, 2, 4, 5, dtype=torch.float64)
    z = a @ b
    relevance = torch.randn(1, 1, 2, 3, 5, dtype=torch.float64)
    share = relevance[0, 0] / stabilised(z[0], STABILIZER)
    to_a, to_b = torch.zeros_like(a[0]), torch.zeros_like(b[0])
    for h, i, k, j in itertools.product(range(2), range(3), range(4), range(5)):
        to_a[h, i, k] += a[0, h, i, k] * b[0, h, k, j] * share[h, i, j]  # z_ikj / z_ij R_ij
        to_b[h, k, j] += a[0, h, i, k] * b[0, h, k, j] * share[h, i, j]
    uniform = MatmulRelevance([0.5, 0.5], STABILIZER).backward(relevance, [a, b], z)
    torch.testing.assert_close(uniform[0][0, 0], to_a / 2)
    torch.testing.assert_close(uniform[1][0, 0], to_b / 2)
    assert torch.isclose(uniform[0].sum() + uniform[1].sum(), (relevance[0, 0] * z[0] / stabilised(z[0], STABILIZER)).sum())
    gated = MatmulRelevance([0.0, 1.0], STABILIZER).backward(relevance, [a, b], z)
    assert gated[0] is None
    torch.testing.assert_close(gated[1][0, 0], to_b)


def test_softmax_relevance_is_x_times_relevance_less_its_share_of_the_sum():
    torch.manual_seed(4)
    x = torch.randn(1, 3, 6, dtype=torch.float64)
    s = torch.softmax(x, -1)
    relevance = torch.randn(1, 2, 3, 6, dtype=torch.float64)
    (ours,) = SoftmaxRelevance(-1).backward(relevance, [x], s)
    for k, row, i in itertools.product(range(2), range(3), range(6)):
        expected = x[0, row, i] * (relevance[0, k, row, i] - s[0, row, i] * relevance[0, k, row].sum())
        assert torch.isclose(ours[0, k, row, i], expected)
