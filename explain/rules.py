"""Relevance rules: LRP's layer rules (epsilon, z+, alpha-beta, gamma, flat, smooth, w-square, z-box)
and the rules of the other operators LRP treats its own way (pooling, sums, gates, norms), defined
as Zennit defines them.

A layer rule redistributes relevance R through ``z = sum_t sign_t * (W_t src_t(x) + b_t)``:
``R_in = sum_t sign_t * src_t(x) * W_t^T (R / stabilise(z))``, group by group (AlphaBeta
and Gamma have a positive and a negative group). The modified weights (W+, W-, ones,
W**2, W + gamma W+ ...) are built once, when the explainer is built, and kept as buffers;
the denominators depend on the forward only and are computed once for every class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import ConfigError
from .attention import value_relevance
from .core import (
    DEFAULT_STABILIZER,
    GATE_KINDS,
    Divisor,
    Factored,
    FactoredRule,
    Factors,
    Pass,
    Rule,
    combine,
    stabilize,
    sum_to,
    times,
)
from .gradients import BatchNormGradient, LayerNormGradient, SoftmaxGradient
from .graph import OpNode, consumers
from .linear_maps import linear_map


@dataclass(frozen=True)
class Term:
    source: str  # x | pos | neg | ones | low | high
    weight: str  # key of the modified weight
    bias: str | None  # key of the modified bias, None for no bias
    sign: float = 1.0


UNMODIFIED = Term("x", "w", "b")


@dataclass(frozen=True)
class Group:
    terms: tuple[Term, ...]
    scale: float = 1.0
    where: str | None = None  # "positive"/"negative": only where the unmodified output is


ParamFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LayerRule:
    """A rule for Conv2d/Linear layers: named parameter modifications and groups of terms."""

    name: str
    groups: tuple[Group, ...]
    params: dict[str, ParamFn]
    stabilizer: float = DEFAULT_STABILIZER
    bounds: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def proportional(self) -> bool:
        """Whether the relevance it hands back vanishes where the input is zero: every term
        reads x or its positive or negative part."""
        return all(t.source in ("x", "pos", "neg") for g in self.groups for t in g.terms)

    def build(self, op: OpNode, nonnegative_input: bool = False) -> LayerRelevance:
        return LayerRelevance(self, op.module, nonnegative_input)

    def build_linear(self, weight: torch.Tensor, bias: torch.Tensor | None) -> LayerRelevance:
        """The rule on a dense map given by its parameters (an attention module's projections)."""
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        return LayerRelevance(self, layer)


def _pos(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(min=0)


def _neg(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(max=0)


def Epsilon(epsilon: float = DEFAULT_STABILIZER) -> LayerRule:
    """LRP-epsilon; epsilon = 1e-6 is LRP-0 (the z rule) with a stabiliser."""
    return LayerRule("epsilon", (Group((UNMODIFIED,)),), {"w": lambda p: p}, stabilizer=epsilon)


def ZPlus(stabilizer: float = DEFAULT_STABILIZER) -> LayerRule:
    """z+ (alpha1-beta0), as Zennit's ZPlus: positive bias only in the positive term."""
    group = Group((Term("pos", "w+", "b+"), Term("neg", "w-", None)))
    return LayerRule("zplus", (group,), {"w+": _pos, "w-": _neg}, stabilizer)


def AlphaBeta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = DEFAULT_STABILIZER) -> LayerRule:
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
        raise ConfigError("alpha-beta needs alpha, beta >= 0 and alpha - beta = 1")
    positive = Group((Term("pos", "w+", "b+"), Term("neg", "w-", None)), scale=alpha)
    negative = Group((Term("pos", "w-", "b-"), Term("neg", "w+", None)), scale=-beta)
    return LayerRule(f"alpha{alpha:g}beta{beta:g}", (positive, negative), {"w+": _pos, "w-": _neg}, stabilizer)


def Gamma(gamma: float = 0.25, stabilizer: float = DEFAULT_STABILIZER) -> LayerRule:
    """Generalised gamma rule (Zennit's Gamma), for positive and negative outputs."""
    params = {"g+": lambda p: p + gamma * p.clamp(min=0), "g-": lambda p: p + gamma * p.clamp(max=0)}
    positive = Group((Term("pos", "g+", "g+"), Term("neg", "g-", None)), where="positive")
    negative = Group((Term("pos", "g-", "g-"), Term("neg", "g+", None)), where="negative")
    return LayerRule(f"gamma{gamma:g}", (positive, negative), params, stabilizer)


def Flat(stabilizer: float = DEFAULT_STABILIZER) -> LayerRule:
    """Uniform redistribution over the receptive field."""
    return LayerRule("flat", (Group((Term("ones", "1", None),)),), {"1": torch.ones_like}, stabilizer)


def tent_weights(kernel: int, stride: int) -> torch.Tensor:
    """Per-axis weights of the smooth first-layer rule: a tent of half-width (kernel + 1) / 2
    where that is a multiple of the stride (7 at stride 2: 1/4, 1/2, 3/4, 1, 3/4, 1/2, 1/4),
    whose copies at the stride's spacing add up to the same value at every position; ones
    (the flat rule) elsewhere: at stride 1, or where no such tent fits the kernel."""
    half = (kernel + 1) / 2
    if stride == 1 or half % stride:
        return torch.ones(kernel, dtype=torch.float64)
    offsets = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    return 1 - offsets.abs() / half


@dataclass
class SmoothFlatRule(LayerRule):
    """The flat rule with tent weights instead of ones (``SmoothFlat``): bound to each layer's
    kernel and stride when built."""

    def build(self, op: OpNode, nonnegative_input: bool = False) -> LayerRelevance:
        layer = op.module
        if not isinstance(layer, nn.Conv2d):
            return LayerRelevance(Flat(self.stabilizer), layer, nonnegative_input)
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        window = torch.outer(tent_weights(kh, sh), tent_weights(kw, sw))
        params = {"tent": lambda p: window.to(p.dtype).expand_as(p).clone()}
        return LayerRelevance(replace(self, params=params), layer, nonnegative_input)


def SmoothFlat(stabilizer: float = DEFAULT_STABILIZER) -> LayerRule:
    """The first layer's relevance spread over each receptive field by a tent instead of evenly.

    The flat rule ignores the pixels and spreads each output's relevance evenly over its
    window; where windows overlap unevenly (7x7 at stride 2: a pixel lies in three or four
    windows per axis, alternately) the map shows the stride's grid as a checkerboard. A tent
    of half-width (k + 1) / 2 covers every pixel equally, so the same relevance (each
    window's total kept: the weights are normalised over the window's part inside the image)
    lands as a smooth field. Where the stride or kernel has no such tent it is the flat rule.
    """
    return SmoothFlatRule("smooth", (Group((Term("ones", "tent", None),)),), {}, stabilizer)


def WSquare(stabilizer: float = DEFAULT_STABILIZER) -> LayerRule:
    """Redistribution by squared weights (Zennit squares the bias too)."""
    return LayerRule("wsquare", (Group((Term("ones", "w2", "w2"),)),), {"w2": lambda p: p**2}, stabilizer)


def ZBox(low: torch.Tensor, high: torch.Tensor, stabilizer: float = DEFAULT_STABILIZER) -> LayerRule:
    """z-box for the first layer: the input lies in [low, high] (per channel)."""
    terms = (Term("x", "w", "b"), Term("low", "w+", "b+", -1.0), Term("high", "w-", "b-", -1.0))
    rule = LayerRule("zbox", (Group(terms),), {"w": lambda p: p, "w+": _pos, "w-": _neg}, stabilizer)
    rule.bounds = (low, high)
    return rule


# The sign of each source and modified parameter that has one (>= 0: 1, <= 0: -1), for telling
# when every contribution to z is >= 0.
_SOURCE_SIGNS = {"pos": 1, "neg": -1, "ones": 1}
_PARAMETER_SIGNS = {"w+": 1, "b+": 1, "w-": -1, "b-": -1, "1": 1, "tent": 1, "w2": 1}

_ATTRIBUTE_NAMES = {
    "w": "w", "w+": "wpos", "w-": "wneg", "1": "ones", "tent": "tent", "w2": "wsq", "g+": "gpos", "g-": "gneg",
    "b": "b", "b+": "bpos", "b-": "bneg",
}


class LayerRelevance(Rule):
    """A LayerRule bound to one Conv2d/Linear layer, with its modified parameters as buffers.

    With ``nonnegative_input`` (the layer reads a ReLU's output) the terms of the input's
    negative part are left out: they are exactly zero, and z+ and alpha-beta then cost one
    convolution and one transposed convolution per group instead of two each.
    """

    def __init__(self, rule: LayerRule, layer: nn.Module, nonnegative_input: bool = False) -> None:
        super().__init__()
        groups = rule.groups
        if nonnegative_input:
            groups = tuple(replace(g, terms=tuple(t for t in g.terms if t.source != "neg")) for g in groups)
        self.groups, self.stabilizer = groups, rule.stabilizer
        self.nonnegative_input = nonnegative_input
        weight_keys = {t.weight for g in groups for t in g.terms}
        bias_keys = {t.bias for g in groups for t in g.terms if t.bias}
        self.maps = nn.ModuleDict({self._key(k): linear_map(layer, self._modified(rule, k, layer.weight)) for k in weight_keys})
        self.backward_maps = self.maps  # the maps whose VJPs hand relevance back (see scale_inputs)
        self.has_bias = layer.bias is not None
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])
        for key in bias_keys:
            self.register_buffer(self._bias_name(key), self._modified(rule, key, bias).detach())
        self.spatial = isinstance(layer, nn.Conv2d)
        if rule.bounds is not None:
            shape = (1, -1, 1, 1) if self.spatial else (1, -1)
            self.register_buffer("low", torch.as_tensor(rule.bounds[0], dtype=torch.float32).reshape(shape))
            self.register_buffer("high", torch.as_tensor(rule.bounds[1], dtype=torch.float32).reshape(shape))

    def scale_inputs(self, scale: torch.Tensor, layer: nn.Conv2d) -> None:
        """Hand back relevance already multiplied by ``scale`` per input channel ([C, 1, 1]) of
        ``layer`` (the layer this rule was built on): the transposed weights carry it, the
        forward's z keeps the layer's own."""
        weight = next(iter(self.maps.values())).weight
        per_group = scale.reshape(layer.groups, -1)  # [groups, C_in / groups]
        per_filter = per_group.repeat_interleave(weight.shape[0] // layer.groups, dim=0)  # [C_out, C_in / groups]
        per_filter = per_filter.reshape(*per_filter.shape, *[1] * (weight.dim() - 2)).to(weight.dtype)
        self.backward_maps = nn.ModuleDict({key: linear_map(layer, m.weight * per_filter) for key, m in self.maps.items()})

    @staticmethod
    def _modified(rule: LayerRule, key: str, param: torch.Tensor) -> torch.Tensor:
        if key in rule.params:
            return rule.params[key](param.detach())
        return {"b": lambda p: p, "b+": _pos, "b-": _neg}[key](param.detach())

    @staticmethod
    def _key(key: str) -> str:
        return _ATTRIBUTE_NAMES[key]

    def _bias_name(self, key: str) -> str:
        return "bias_" + _ATTRIBUTE_NAMES[key]

    def _source(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name == "x" or (name == "pos" and self.nonnegative_input):
            return x
        if name == "pos":
            return x.clamp(min=0)
        if name == "neg":
            return x.clamp(max=0)
        if name == "ones":
            return torch.ones_like(x)
        return getattr(self, name).expand_as(x)  # low / high

    def _bias(self, key: str, like: torch.Tensor) -> torch.Tensor:
        bias = getattr(self, self._bias_name(key))
        return bias.reshape(-1, 1, 1) if self.spatial else bias

    def _nonnegative_term(self, term: Term) -> bool:
        """Whether the term's contribution to z is >= 0 for every input."""
        source = 1 if term.source == "x" and self.nonnegative_input else _SOURCE_SIGNS.get(term.source, 0)
        bias_nonnegative = term.bias is None or _PARAMETER_SIGNS.get(term.bias, 0) * term.sign > 0
        return source * _PARAMETER_SIGNS.get(term.weight, 0) * term.sign > 0 and bias_nonnegative

    def _denominator(self, group: Group, sources: list[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
        """stabilise(z) of the group. Where z >= 0 by construction the stabiliser is a constant,
        and a single term (z+ on a ReLU's output, the flat rule) takes it, with its bias, as its
        convolution's bias: no pass of its own."""
        if group.terms == (UNMODIFIED,):
            return stabilize(output, self.stabilizer)  # the layer's own output: no recomputation
        nonnegative = group.where is None and all(self._nonnegative_term(t) for t in group.terms)
        if nonnegative and len(group.terms) == 1 and group.terms[0].sign == 1:
            (term,), (source,) = group.terms, sources
            weight = self.maps[self._key(term.weight)].weight
            bias = torch.full(weight.shape[:1], self.stabilizer, dtype=weight.dtype, device=weight.device)
            if term.bias and self.has_bias:
                bias = bias + getattr(self, self._bias_name(term.bias))
            return self.maps[self._key(term.weight)](source, bias)
        z = None
        for term, source in zip(group.terms, sources):
            contribution = self.maps[self._key(term.weight)](source)
            if term.bias and self.has_bias:
                contribution = contribution + self._bias(term.bias, contribution)
            contribution = contribution if term.sign == 1 else contribution * term.sign
            z = contribution if z is None else z + contribution
        return stabilize(z, self.stabilizer, nonnegative)

    def _share(self, group: Group, sources: list[torch.Tensor], output: torch.Tensor) -> Factors:
        """The group's class-independent factor: scale / stabilise(z), masked by ``where``."""
        denominator = self._denominator(group, sources, output)
        if group.scale == 1 and group.where is None:
            return (Divisor(denominator),)
        share = group.scale / denominator
        if group.where == "positive":
            share = share * (output > 0).to(share.dtype)
        elif group.where == "negative":
            share = share * (output < 0).to(share.dtype)
        return (share,)

    def factored(self, inputs, output):
        """One group: the share, then per class one VJP per term. One term (epsilon, z+ on a
        ReLU's output, flat, w-square) hands its source on as a factor for the next rule to take;
        several (z+ on signed inputs, z-box) multiply each VJP by its source, and only the share
        joins the chain of factors."""
        if len(self.groups) != 1:
            return None
        x, group = inputs[0], self.groups[0]
        sources = [self._source(t.source, x) for t in group.terms]
        share = self._share(group, sources, output)
        if len(group.terms) == 1:
            (term,), (source,) = group.terms, sources
            vjp = self.backward_maps[self._key(term.weight)].vjp
            return Factored(share if term.sign == 1 else combine(share) * term.sign, lambda grad: [vjp(grad, x.shape)],
                            [None if term.source == "ones" else source])
        if group.scale != 1 or group.where is not None:
            return None

        def terms(grad: torch.Tensor) -> list[torch.Tensor]:
            relevance = None
            for term, source in zip(group.terms, sources):
                part = self.backward_maps[self._key(term.weight)].vjp(grad, x.shape)
                part = part if term.source == "ones" else times(part, source)
                part = part if term.sign == 1 else part * term.sign
                relevance = part if relevance is None else relevance + part
            return [relevance]

        return Factored(share, terms)

    def backward(self, grad, inputs, output):
        x = inputs[0]
        relevance = None
        for group in self.groups:
            sources = [self._source(t.source, x) for t in group.terms]
            share = times(grad, self._share(group, sources, output))
            for term, source in zip(group.terms, sources):
                part = source.unsqueeze(1) * self.backward_maps[self._key(term.weight)].vjp(share, x.shape) * term.sign
                relevance = part if relevance is None else relevance + part
        return [relevance]


class NormPool(FactoredRule):
    """Zennit's Norm on average pooling or a mean over axes: x * spread(R / stabilise(mean)), with
    ``spread`` the pooling's own gradient rule."""

    def __init__(self, spread: Rule, stabilizer: float = DEFAULT_STABILIZER) -> None:
        super().__init__()
        self.spread = spread
        self.stabilizer = stabilizer

    def factored(self, inputs, output):
        return Factored(Divisor(stabilize(output, self.stabilizer)), lambda grad: self.spread.backward(grad, inputs, output),
                        [inputs[0]])


class NormSum(Rule):
    """Zennit's Norm on an addition: each summand's share of the sum (a constant summand, such as a
    position embedding, keeps its share)."""

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER, constant: list[bool] | None = None) -> None:
        super().__init__()
        self.stabilizer = stabilizer
        self.constant = constant

    def backward(self, grad, inputs, output):
        share = grad / stabilize(output, self.stabilizer).unsqueeze(1)
        constant = self.constant or [False] * len(inputs)
        return [None if fixed else sum_to(x.unsqueeze(1) * share, x.shape) for x, fixed in zip(inputs, constant)]

    def factored(self, inputs, output):
        """Summands of the sum's own shape (a residual connection): the share handed to each, times it."""
        constant = self.constant or [False] * len(inputs)
        if any(not fixed and x.shape != output.shape for x, fixed in zip(inputs, constant)):
            return None
        return Factored(Divisor(stabilize(output, self.stabilizer)), lambda grad: [None if fixed else grad for fixed in constant],
                        [None if fixed else x for x, fixed in zip(inputs, constant)])


class GatedProduct(Rule):
    """A product of factors: relevance to the signal, none to the gate.

    The gating rule of Arras et al. ("Explaining recurrent neural network predictions in
    sentiment analysis", WASSA 2017), as squeeze-excitation blocks need it: the gate (a
    sigmoid's or hard sigmoid's output) is a constant weight of the signal, so the signal
    receives the whole relevance and the gate none. A constant factor (ConvNeXt's layer
    scale, a Python number) is such a weight too. Two input-derived factors neither or both
    of which is a gate share it equally (AttnLRP's uniform rule for products, Achtibat et al.,
    ICML 2024).
    """

    def __init__(self, shares: list[float]) -> None:
        super().__init__()
        self.shares = shares

    @classmethod
    def of(cls, op: OpNode, nodes: dict[str, OpNode]) -> GatedProduct:
        derived = [nodes[name].kind != "constant" for name in op.inputs]
        gates = [d and nodes[name].kind in GATE_KINDS for name, d in zip(op.inputs, derived)]
        signals = [d and not g for d, g in zip(derived, gates)]
        if sum(signals) == 1:
            return cls([1.0 if s else 0.0 for s in signals])
        return cls([1.0 / sum(derived) if d else 0.0 for d in derived])

    def backward(self, grad, inputs, output):
        return [None if share == 0 else sum_to(grad * share, x.shape) for x, share in zip(inputs, self.shares)]


class MatmulRelevance(Rule):
    """``a @ b`` of two activations.

    An operand that is a gate (attention's weights A = softmax(...) in A @ v) is held constant,
    and the other receives all of the relevance by the epsilon rule of the linear map it goes
    through: the same relevance as the fused attention's (explain/attention.py), so timm's
    unfused attention explains as its fused one does. Two activations neither of which is a
    gate share it equally (AttnLRP's uniform rule, Achtibat et al., ICML 2024): each gets half of
    its epsilon-rule relevance with the other held constant, together conservative. A constant
    operand is a weight.
    """

    def __init__(self, shares: list[float], stabilizer: float = DEFAULT_STABILIZER) -> None:
        super().__init__()
        self.shares = shares
        self.stabilizer = stabilizer

    @classmethod
    def of(cls, op: OpNode, nodes: dict[str, OpNode], stabilizer: float = DEFAULT_STABILIZER) -> MatmulRelevance:
        def gate(name: str) -> bool:
            while nodes[name].kind == "identity":  # attention's dropout
                name = nodes[name].inputs[0]
            return nodes[name].kind in GATE_KINDS

        derived = [nodes[name].kind != "constant" for name in op.inputs]
        signals = [d and not gate(name) for name, d in zip(op.inputs, derived)]
        if sum(signals) == 1:
            return cls([1.0 if s else 0.0 for s in signals], stabilizer)
        return cls([1.0 / sum(derived) if d else 0.0 for d in derived], stabilizer)

    def backward(self, grad, inputs, output):
        a, b = (x.unsqueeze(1) for x in inputs)
        mixed = output.unsqueeze(1)
        to_a = None if self.shares[0] == 0 else self.shares[0] * value_relevance(
            grad.transpose(-2, -1), a.transpose(-2, -1), b.transpose(-2, -1), mixed.transpose(-2, -1),
            self.stabilizer).transpose(-2, -1)
        to_b = None if self.shares[1] == 0 else self.shares[1] * value_relevance(grad, b, a, mixed, self.stabilizer)
        return [to_a, to_b]


class SoftmaxRelevance(SoftmaxGradient):
    """Softmax's rule of AttnLRP (Achtibat et al., ICML 2024): R_x = x (R - s sum(R)) along its
    axis, the deep Taylor decomposition of s = softmax(x) at x with the bias it implies
    absorbing the rest. Relevance reaches a softmax only where it is not a gate (see
    MatmulRelevance, GatedProduct)."""

    def backward(self, grad, inputs, output):
        s = output.unsqueeze(1)
        return [inputs[0].unsqueeze(1) * (grad - s * grad.sum(self.class_dim, keepdim=True))]


class LayerNormEpsilon(Rule):
    """The epsilon rule on a LayerNorm whose normalisation is held constant.

    With 1/std fixed, y = w (x - mean(x)) / std + b is a linear map of x (the centring is
    linear), and the epsilon rule applies to it: R_x = x * J^T (R_y / stabilise(y)), with
    J^T v = (w v - mean(w v)) / std; the bias b keeps its share. This is CP-LRP's treatment
    (Ali et al., "XAI for Transformers: better explanations through conservative
    propagation", ICML 2022: the normalisation detached) and AttnLRP's (Achtibat et al.,
    ICML 2024: the identity rule on the division by std, epsilon on the rest).
    """

    def __init__(self, gradient: LayerNormGradient, stabilizer: float = DEFAULT_STABILIZER) -> None:
        super().__init__()
        self.gradient = gradient
        self.stabilizer = stabilizer

    def backward(self, grad, inputs, output):
        x = inputs[0]
        _, inverse_std = self.gradient.normalised(x)
        weight = self.gradient.scale(inputs)
        share = grad / stabilize(output, self.stabilizer).unsqueeze(1)
        scaled = share if weight is None else share * weight
        axes = self.gradient.axes
        relevance = x.unsqueeze(1) * inverse_std * (scaled - scaled.mean(axes, keepdim=True))
        return [relevance] + [None] * (len(inputs) - 1)


class BatchNormEpsilon(FactoredRule):
    """The epsilon rule on an eval-mode BatchNorm, an affine map y = s x + t per channel:
    R_x = s x R_y / stabilise(y), as Zennit's Epsilon on a BatchNorm computes it.

    With a small epsilon this is the z rule on the BatchNorm merged into the layer after its
    ReLU (the gate held fixed): the shift t absorbs its share, so a pre-activation near zero
    receives relevance in proportion to itself. Passing relevance through the BatchNorm
    instead hands such a neuron the relevance of the shifted value, and the next rule's
    division by z + eps sign(z) then lets noise decide its sign. The epsilon itself must not
    be tiny either: it is the width over which R_x falls to 0 as y crosses zero.

    ``s x / stabilise(y)`` depends on the image only: it is computed once, and each class's
    relevance is multiplied by it, one multiply per class instead of a division and two. Its
    multiplicands stay apart: x after a concatenation (DenseNet) reaches each part as that
    part (see gradients.CatGradient) and is multiplied in at the part's width; the division
    joins the next layer's source, relu(y) / (relu(y) + epsilon) in one pass; and with
    ``scale_taken`` the layers after its ReLU carry s in their transposed weights
    (fold_batchnorm_scales).
    ``rectified`` (the BatchNorm feeds a ReLU whose layers all hand back relevance in
    proportion to their input) divides by relu(y) + epsilon instead: where y <= 0 the
    relevance arriving is exactly zero, elsewhere the two denominators are equal.
    """

    def __init__(self, norm: nn.BatchNorm2d, stabilizer: float = DEFAULT_STABILIZER, rectified: bool = False) -> None:
        super().__init__()
        self.gradient = BatchNormGradient(norm)
        self.stabilizer = stabilizer
        self.rectified = rectified
        self.scale_taken = False

    def factored(self, inputs, output):
        if self.rectified:
            denominator = torch.relu(output) + self.stabilizer  # the forward's own ReLU: runtimes compute it once
        else:
            denominator = stabilize(output, self.stabilizer)
        scale = () if self.scale_taken else (self.gradient.scale,)
        return Factored((*scale, Divisor(denominator), inputs[0]))



def fold_batchnorm_scales(rules: dict[str, Rule], nodes: list[OpNode]) -> None:
    """Move each epsilon-ruled BatchNorm's per-channel scale s into the transposed weights of the
    layers after its ReLU (norm -> relu -> conv, as in DenseNet and ResNet): s multiplies the
    relevance those layers hand back channel by channel, so their filters can carry it and the
    BatchNorm's per-image factor is one pass shorter."""
    for op in nodes:
        rule = rules.get(op.name)
        if not isinstance(rule, BatchNormEpsilon):
            continue
        after = consumers(nodes, op.name)
        if len(after) != 1 or after[0].kind != "relu" or not isinstance(rules.get(after[0].name), Pass):
            continue
        readers = consumers(nodes, after[0].name)
        if not readers or not all(r.kind == "conv" and isinstance(rules.get(r.name), LayerRelevance) for r in readers):
            continue
        for reader in readers:
            rules[reader.name].scale_inputs(rule.gradient.scale, reader.module)
        rule.scale_taken = True
