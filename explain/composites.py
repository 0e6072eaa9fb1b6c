"""Named LRP composites: which rule each layer gets, as Zennit's composites assign them.

Every composite shares Zennit's base map: activations (ReLU, SiLU, GELU, Hardswish, sigmoid,
...) and unmerged BatchNorm get Pass, average pooling, means and additions get Norm; max
pooling, concatenation, reshapes, permutes and slices get the gradient. Beyond Zennit's map:
products get the gating rule (relevance to the signal, none to a sigmoid gate or a constant
scale) and LayerNorm the epsilon rule with its normalisation held constant (explain/rules.py). Conv2d/Linear (and the first layer) get the rules below. The ``-bn`` composites
differ in one place: a BatchNorm gets the epsilon rule with ``BATCHNORM_EPSILON`` instead of
Pass, which keeps relevance stable on trained networks whose BatchNorms cannot be merged
(DenseNet's open every dense layer: BatchNorm -> ReLU -> Conv).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..errors import ConfigError
from ..grammar import BATCHNORM_RULE_SUFFIX, DEFAULT_EPSILON
from .attention import AttentionRelevance, DotProductAttention, WindowAttention, check_attention
from .core import ACTIVATIONS, DEFAULT_STABILIZER, Pass, Rule
from .gradients import gradient_rule, layer_norm_rule, softmax_dim
from .graph import OpNode, consumers, first_layer
from .rules import (
    AlphaBeta,
    BatchNormEpsilon,
    Epsilon,
    Flat,
    Gamma,
    GatedProduct,
    LayerNormEpsilon,
    LayerRule,
    MatmulRelevance,
    NormPool,
    NormSum,
    SmoothFlat,
    SoftmaxRelevance,
    ZBox,
    ZPlus,
)

# The -bn composites' epsilon on BatchNorms. The z rule's 1e-6 leaves a jump where a
# BatchNorm's output crosses zero (the relevance s x R / y of a pre-activation switches
# between s x times the next layer's share and 0); noise of 1e-3 of the input's spread hits
# one now and then (min Pearson 0.885 over 24 maps and draws on the bundled model). 1e-3
# smooths the switch over |y| < 1e-3: every draw >= 0.999, conservation 0.765 for 0.769.
BATCHNORM_EPSILON = 1e-3


@dataclass
class Composite:
    """Rules for convolutions, dense layers and the first layer."""

    name: str
    conv: LayerRule
    linear: LayerRule
    first: LayerRule | None = None
    stabilizer: float = DEFAULT_STABILIZER
    batchnorm: str = "pass"  # pass | epsilon

    def rule_for(self, op: OpNode, nodes: dict[str, OpNode], is_first: bool, nonnegative_input: bool = False) -> Rule:
        """``nonnegative_input``: the layer reads a ReLU's output (directly or through pooling
        and concatenation), so its rule can leave out the negative part's terms."""
        if op.kind in ("conv", "linear"):
            if is_first and self.first is not None:
                return self.first.build(op, nonnegative_input)
            return (self.conv if op.kind == "conv" else self.linear).build(op, nonnegative_input)
        if op.kind == "batchnorm" and self.batchnorm == "epsilon":
            return BatchNormEpsilon(op.module, BATCHNORM_EPSILON, self._rectified(op, nodes))
        if op.kind in ("relu", "batchnorm", *ACTIVATIONS):
            return Pass()
        if op.kind in ("avgpool", "adaptive_avgpool", "mean"):
            return NormPool(gradient_rule(op, nodes), self.stabilizer)
        if op.kind == "add":
            return NormSum(self.stabilizer, [nodes[name].kind == "constant" for name in op.inputs])
        if op.kind == "mul":
            return GatedProduct.of(op, nodes)
        if op.kind == "matmul":
            return MatmulRelevance.of(op, nodes, self.stabilizer)
        if op.kind == "softmax":
            return SoftmaxRelevance(softmax_dim(op))
        if op.kind == "layernorm":
            return LayerNormEpsilon(layer_norm_rule(op), self.stabilizer)
        if op.kind == "attention":
            check_attention(op.module, op.fx_node.kwargs)
            return AttentionRelevance(op.module, self.linear, self.stabilizer)
        if op.kind == "window_attention":
            return WindowAttention(op, nodes, self.linear, self.stabilizer)
        if op.kind == "dot_product_attention":
            return DotProductAttention(op, relevance=True, stabilizer=self.stabilizer)
        return gradient_rule(op, nodes)  # max pooling, concatenation, reshapes, permutes, slices: where the values go

    def _rectified(self, norm: OpNode, nodes: dict[str, OpNode]) -> bool:
        """Whether relevance reaches ``norm``'s output only through one ReLU whose consumers all
        hand it back in proportion to their input (layers with a proportional rule, average
        pooling's Norm), so none arrives where the ReLU's output is zero."""
        after = consumers(nodes.values(), norm.name)
        if len(after) != 1 or after[0].kind != "relu":
            return False
        first = first_layer(nodes.values())

        def proportional(op: OpNode) -> bool:
            if op.kind in ("avgpool", "adaptive_avgpool", "mean"):
                return True
            if op.kind not in ("conv", "linear"):
                return False
            rule = self.first if op.name == first and self.first is not None else getattr(self, op.kind)
            return rule.proportional

        readers = consumers(nodes.values(), after[0].name)
        return bool(readers) and all(proportional(op) for op in readers)


Bounds = tuple[torch.Tensor, torch.Tensor]


def _require(bounds: Bounds | None, name: str) -> Bounds:
    if bounds is None:
        raise ConfigError(f"the {name} composite needs the input bounds (low, high) of the normalised image")
    return bounds


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "epsilon", Epsilon(epsilon), Epsilon(epsilon), stabilizer=stabilizer),
    "z": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "z", Epsilon(stabilizer), Epsilon(stabilizer), stabilizer=stabilizer),
    "alpha2beta1": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "alpha2beta1", AlphaBeta(2, 1, stabilizer), AlphaBeta(2, 1, stabilizer), stabilizer=stabilizer),
    "alpha1beta0": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "alpha1beta0", AlphaBeta(1, 0, stabilizer), AlphaBeta(1, 0, stabilizer), stabilizer=stabilizer),
    "epsilon-plus": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "epsilon-plus", ZPlus(stabilizer), Epsilon(epsilon), stabilizer=stabilizer),
    "epsilon-plus-flat": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "epsilon-plus-flat", ZPlus(stabilizer), Epsilon(epsilon), Flat(stabilizer), stabilizer),
    "epsilon-plus-smooth": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "epsilon-plus-smooth", ZPlus(stabilizer), Epsilon(epsilon), SmoothFlat(stabilizer), stabilizer),
    "epsilon-alpha2beta1": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "epsilon-alpha2beta1", AlphaBeta(2, 1, stabilizer), Epsilon(epsilon), stabilizer=stabilizer),
    "epsilon-gamma-box": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "epsilon-gamma-box", Gamma(gamma, stabilizer), Epsilon(epsilon),
        ZBox(*_require(bounds, "epsilon-gamma-box"), stabilizer), stabilizer),
    "deep-taylor": lambda epsilon, stabilizer, gamma, bounds: Composite(
        "deep-taylor", ZPlus(stabilizer), ZPlus(stabilizer), ZBox(*_require(bounds, "deep-taylor"), stabilizer), stabilizer),
}


def _batchnorm_epsilon(base: Callable[..., Composite], name: str) -> Callable[..., Composite]:
    """``base`` with the epsilon rule (``BATCHNORM_EPSILON``) on every BatchNorm."""
    return lambda epsilon, stabilizer, gamma, bounds: replace(base(epsilon, stabilizer, gamma, bounds), name=name,
                                                             batchnorm="epsilon")


# The same composites with the epsilon rule on every BatchNorm (measured in docs/explanations.md, "Trustworthy LRP").
COMPOSITES.update({name + BATCHNORM_RULE_SUFFIX: _batchnorm_epsilon(COMPOSITES[name], name + BATCHNORM_RULE_SUFFIX)
                   for name in ("epsilon", "alpha2beta1", "epsilon-plus", "epsilon-alpha2beta1", "epsilon-plus-flat",
                                "epsilon-plus-smooth")})


def make_composite(name: str, epsilon: float = DEFAULT_EPSILON, stabilizer: float = DEFAULT_STABILIZER,
                   gamma: float = 0.25, bounds: Bounds | None = None) -> Composite:
    try:
        factory = COMPOSITES[name]
    except KeyError:
        raise ConfigError(f"unknown LRP composite {name!r}; known: {', '.join(COMPOSITES)}") from None
    return factory(epsilon, stabilizer, gamma, bounds)
