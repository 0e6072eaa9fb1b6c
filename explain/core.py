"""What every rule is made of: the rule's interface, its factored form, the class axis, the
stabiliser, and the operator kinds the rules are chosen by.

Every rule maps what arrives at a node's output, shaped [B, K, ...] (K target classes broadcast
against one forward of batch B), to what goes to each tensor input; forward tensors are [B, ...]
and broadcast over K. Gradient rules (explain/gradients.py) give the exact vector-Jacobian
product, relevance rules (explain/rules.py) LRP's redistribution; both are Rules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

# Nodes that carry no rule (explain/graph.py).
STRUCTURAL_KINDS = ("input", "output", "shape", "constant", "split")
# Elementwise activations other than ReLU, with an exact derivative (explain/gradients.py).
ACTIVATIONS = ("relu6", "silu", "gelu", "hardswish", "hardsigmoid", "sigmoid", "tanh")
# Activations that gate a product (SE blocks; attention's weights A in A @ v): LRP sends the
# product's relevance past them.
GATE_KINDS = ("sigmoid", "hardsigmoid", "softmax")

DEFAULT_STABILIZER = 1e-6


def stabilize(z: torch.Tensor, epsilon: float, nonnegative: bool = False) -> torch.Tensor:
    """z + epsilon * sign(z), with sign(0) = +1 (Zennit's stabiliser), bit for bit.

    Written as z + (2 epsilon [z >= 0] - epsilon): a comparison, a cast and three cheap
    arithmetic operators, without Sign, which ONNX Runtime's CPU kernels run ten times
    slower than an addition. A ``nonnegative`` z (z+ on a ReLU's output, the flat rule)
    needs the addition alone.
    """
    if nonnegative:
        return z + epsilon
    return z + ((z >= 0).to(z.dtype) * (2 * epsilon) - epsilon)


@dataclass(frozen=True, eq=False)
class Divisor:
    """A multiplicand 1 / ``value``, applied as a division: x / z costs one pass over the tensor
    where a reciprocal and a multiply cost two."""

    value: torch.Tensor


# A class-independent factor still to be multiplied in, as its multiplicands (empty: 1): kept
# apart so that one equal to a concatenation's output can reach each part as that part's input.
Factors = tuple[torch.Tensor | Divisor, ...]


@dataclass
class Factored:
    """A rule's backward as class-independent factors around one class-dependent linear core.

    What arrives is multiplied by ``pre``, passed through ``core`` (None: handed unchanged to
    the single input) and each input's result multiplied by its ``post``. Factors are forward
    tensors [B, ...] or constants that broadcast against them (None: 1; a tuple: their
    product); they are computed once per image, and a chain of them (BatchNorm -> ReLU ->
    Conv) multiplies into one, so each class pays one multiply where the chain has many.
    ``parts`` (a concatenation's output and inputs): a pending multiplicand that is the output
    itself reaches each input as that input, unmultiplied (the core only splits).
    """

    pre: torch.Tensor | Divisor | Factors | None
    core: Callable[[torch.Tensor], list[torch.Tensor | None]] | None = None
    post: list[torch.Tensor | None] | None = None
    parts: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def apply(self, grad: torch.Tensor, factor: Factors = ()) -> list[tuple[torch.Tensor, Factors] | None]:
        """What goes to each input for ``grad`` still to be multiplied by ``factor``: a class tensor
        and the factor it in turn is still to be multiplied by (the next rule may take it on)."""
        factor = factor + factors(self.pre)
        if self.core is None:
            return [(grad, factor)]
        passed = self.parts is not None and any(f is self.parts[0] for f in factor)
        if passed:
            factor = tuple(f for f in factor if f is not self.parts[0])
        results = self.core(times(grad, factor))
        posts = self.post or [None] * len(results)
        inputs = self.parts[1] if passed else [None] * len(results)
        return [None if r is None else (r, factors(part) + factors(post))
                for r, post, part in zip(results, posts, inputs)]


def factors(factor: torch.Tensor | Divisor | Factors | None) -> Factors:
    """A factor as its multiplicands (None: none)."""
    if factor is None:
        return ()
    return factor if isinstance(factor, tuple) else (factor,)


def _product(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    result = None
    for t in tensors:
        result = t if result is None else result * t
    return result


def combine(factor: torch.Tensor | Factors | None) -> torch.Tensor | None:
    """A factor's multiplicands as one forward tensor (None: 1): the numerators' product divided
    by the divisors' (see Divisor)."""
    multiplicands = factors(factor)
    numerator = _product([m for m in multiplicands if not isinstance(m, Divisor)])
    denominator = _product([m.value for m in multiplicands if isinstance(m, Divisor)])
    if denominator is None:
        return numerator
    return 1 / denominator if numerator is None else numerator / denominator


def times(grad: torch.Tensor, factor: torch.Tensor | Factors | None) -> torch.Tensor:
    """``grad`` [B, K, ...] times a forward factor (see Factored): its multiplicands combined once
    per image, then one multiply per class (a division where the factor is a divisor alone)."""
    multiplicands = factors(factor)
    if len(multiplicands) == 1 and isinstance(multiplicands[0], Divisor):
        return grad / with_class_axis(multiplicands[0].value, grad.dim() - 1)
    combined = combine(multiplicands)
    return grad if combined is None else grad * with_class_axis(combined, grad.dim() - 1)


class Rule(nn.Module, ABC):
    """Relevance (or gradient) at a node's output -> one tensor per tensor input."""

    @abstractmethod
    def backward(self, grad: torch.Tensor, inputs: list[torch.Tensor], output: torch.Tensor) -> list[torch.Tensor]:
        """What goes to each tensor input of the node."""

    def factored(self, inputs: list[torch.Tensor], output: torch.Tensor) -> Factored | None:
        """The same backward as a Factored, where it has that form (None: only ``backward``)."""
        return None


class FactoredRule(Rule):
    """A rule whose backward is a Factored: ``backward`` applies it, so both agree by construction."""

    def backward(self, grad, inputs, output):
        return [None if part is None else times(*part) for part in self.factored(inputs, output).apply(grad)]

    @abstractmethod
    def factored(self, inputs: list[torch.Tensor], output: torch.Tensor) -> Factored:
        """The backward as a Factored."""


class Pass(FactoredRule):
    """Hands what arrives straight to the single input (identity, dropout, and LRP's Pass)."""

    def factored(self, inputs, output):
        return Factored(None)


def sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``t`` [B, K, *out] summed over the axes an input-derived operand of ``shape`` [B, ...] (the
    output's rank) was broadcast along: [B, K, *shape[1:]]."""
    axes = [i + 1 for i in range(1, len(shape)) if shape[i] == 1 and t.shape[i + 1] != 1]
    return t.sum(dim=axes, keepdim=True) if axes else t


def with_class_axis(t: torch.Tensor, rank: int) -> torch.Tensor:
    """A forward tensor broadcast against [B, K, ...]: a class axis after its batch axis (a constant
    without a batch axis broadcasts as it is)."""
    return t.unsqueeze(1) if t.dim() == rank else t


class LinearRuleBuilder(Protocol):
    """A composite's rule for linear layers, applied to weights that are not a module's (the
    projections inside an attention): explain/rules.py's LayerRule."""

    def build_linear(self, weight: torch.Tensor, bias: torch.Tensor | None) -> Rule: ...
