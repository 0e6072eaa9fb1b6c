"""Gradient rules: the exact vector-Jacobian product of each operator kind, as forward ops, and
the table that picks one by kind (GRADIENT_RULES). Grad-CAM's backward is made of them; LRP
uses them where relevance passes as the gradient does (explain/composites.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedOperator
from .attention import AttentionGradient, DotProductAttention, WindowAttention, check_attention
from .core import ACTIVATIONS, Factored, FactoredRule, Pass, Rule, sum_to, with_class_axis
from .graph import OpNode, mean_dims, permute_dims
from .linear_maps import linear_map


class LinearGradient(FactoredRule):
    """Conv2d / Linear: transposed (flipped) convolution or matrix product."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.map = linear_map(layer)

    def factored(self, inputs, output):
        return Factored(None, lambda grad: [self.map.vjp(grad, inputs[0].shape)])


class BatchNormGradient(FactoredRule):
    """Eval-mode BatchNorm2d: a per-channel scale gamma / sqrt(var + eps)."""

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__()
        if norm.training or norm.running_var is None:
            raise UnsupportedOperator("BatchNorm2d must be in eval mode with running statistics")
        scale = norm.weight.detach() if norm.affine else torch.ones_like(norm.running_var)
        self.register_buffer("scale", (scale / torch.sqrt(norm.running_var + norm.eps)).reshape(-1, 1, 1))

    def factored(self, inputs, output):
        return Factored(self.scale)


class ReluGradient(FactoredRule):
    def factored(self, inputs, output):
        return Factored((inputs[0] > 0).to(inputs[0].dtype))


_SQRT_HALF = 0.5**0.5
_INV_SQRT_2PI = (2 * math.pi) ** -0.5
_SQRT_2_OVER_PI = (2 / math.pi) ** 0.5
_GELU_CUBIC = 0.044715


def _between(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return ((x > low) & (x < high)).to(x.dtype)


def _activation_derivative(kind: str, x: torch.Tensor, y: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """f'(x) written with forward operators, equal to PyTorch's own backward (its boundary cases included)."""
    if kind == "relu6":
        return _between(x, 0.0, 6.0)
    if kind == "silu":
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))
    if kind == "gelu" and approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3)
        t = torch.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
    if kind == "gelu":
        return 0.5 * (1 + torch.erf(x * _SQRT_HALF)) + x * _INV_SQRT_2PI * torch.exp(-0.5 * x * x)
    if kind == "hardswish":  # PyTorch: 0 below -3, x/3 + 1/2 up to 3 inclusive, 1 above
        middle = x / 3 + 0.5
        return torch.where(x < -3, torch.zeros_like(x), torch.where(x <= 3, middle, torch.ones_like(x)))
    if kind == "hardsigmoid":
        return _between(x, -3.0, 3.0) / 6
    if kind == "sigmoid":
        return y * (1 - y)
    if kind == "tanh":
        return 1 - y * y
    raise UnsupportedOperator(f"no derivative for activation {kind!r}")


class ActivationGradient(FactoredRule):
    """An elementwise activation: the gradient times f'(x), computed from the stored input (or output)."""

    def __init__(self, kind: str, approximate: str = "none") -> None:
        super().__init__()
        if kind not in ACTIVATIONS:
            raise UnsupportedOperator(f"no gradient rule for activation {kind!r}")
        self.kind, self.approximate = kind, approximate

    def factored(self, inputs, output):
        return Factored(_activation_derivative(self.kind, inputs[0], output, self.approximate))


class MulGradient(Rule):
    """x * y with broadcasting (squeeze-excitation gates, layer scale): each operand gets the gradient
    times the other, summed over the axes it was broadcast along; constants get nothing."""

    def __init__(self, constant: list[bool], scalar: float | None = None) -> None:
        super().__init__()
        self.constant = constant
        self.scalar = scalar  # a Python number among the factors

    def backward(self, grad, inputs, output):
        if self.scalar is not None:
            grad = grad * self.scalar
        if len(inputs) == 1:
            return [grad]
        rank = output.dim()
        return [None if constant else sum_to(grad * with_class_axis(other, rank), mine.shape)
                for mine, other, constant in ((inputs[0], inputs[1], self.constant[0]),
                                              (inputs[1], inputs[0], self.constant[1]))]


class MatmulGradient(Rule):
    """a @ b of two tensors (batched, broadcast over leading axes): grad @ b^T to a, a^T @ grad to b,
    each summed over the axes it was broadcast along; constants get nothing."""

    def __init__(self, constant: list[bool]) -> None:
        super().__init__()
        self.constant = constant

    def backward(self, grad, inputs, output):
        if any(x.dim() != output.dim() or x.dim() < 2 for x in inputs):
            raise UnsupportedOperator(f"matmul of shapes {[tuple(x.shape) for x in inputs]}: only batched matrix "
                                      "products of equal rank (attention's) are supported")
        a, b = (with_class_axis(x, output.dim()) for x in inputs)
        return [None if self.constant[0] else sum_to(grad @ b.transpose(-2, -1), inputs[0].shape),
                None if self.constant[1] else sum_to(a.transpose(-2, -1) @ grad, inputs[1].shape)]


class SoftmaxGradient(Rule):
    """s = softmax(x) along ``dim``: s * (g - sum(g s))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    @property
    def class_dim(self) -> int:
        """The axis in tensors with a class axis after the batch."""
        return self.dim if self.dim < 0 else self.dim + 1

    def backward(self, grad, inputs, output):
        s = output.unsqueeze(1)
        return [s * (grad - (grad * s).sum(self.class_dim, keepdim=True))]


def softmax_dim(op: OpNode) -> int:
    """softmax's axis (``x.softmax(-1)``, ``F.softmax(x, dim=-1)``); one left implicit is refused."""
    dim = op.argument(1, "dim")
    if not isinstance(dim, int):
        raise UnsupportedOperator(f"softmax at node {op.name!r} without an explicit dim")
    return dim


def _matmul_rule(op: OpNode, nodes: dict[str, OpNode]) -> MatmulGradient:
    if len(op.inputs) != 2:
        raise UnsupportedOperator(f"matmul at node {op.name!r}: expected two tensor operands")
    return MatmulGradient(_constant_flags(op, nodes))


def _scatter_windows(windows: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                     size: tuple[int, int], padding: tuple[int, int], onehot: torch.Tensor) -> torch.Tensor:
    """Sum per-window-offset values [N, k*k, ho, wo] back onto the input grid [N, H, W].

    A grouped-free ConvTranspose with one-hot kernels places offset (i, j) of every
    window; the padded border is then cut away.
    """
    out = F.conv_transpose2d(windows, onehot, stride=stride)
    padded_h, padded_w = size[0] + 2 * padding[0], size[1] + 2 * padding[1]
    out = F.pad(out, (0, max(padded_w - out.shape[-1], 0), 0, max(padded_h - out.shape[-2], 0)))
    return out[:, 0, padding[0]:padding[0] + size[0], padding[1]:padding[1] + size[1]]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class MaxPoolGradient(Rule):
    """Routes each window's gradient to its first maximum, in PyTorch's scan order.

    Ties are common after a ReLU (windows of zeros); a plain "equals the max" mask would
    duplicate the gradient. Strided slices, comparisons with a running "taken" mask, and
    one ConvTranspose with one-hot kernels export to any runtime. ``ceil_mode`` windows that
    run past the input see -inf there. Adaptive max pooling (``pool`` None) takes its
    whole-number windows from the shapes.
    """

    def __init__(self, pool: nn.MaxPool2d | None = None) -> None:
        super().__init__()
        if pool is None:
            self.kernel = self.stride = None
            self.padding = (0, 0)
            return
        if _pair(pool.dilation) != (1, 1) or pool.return_indices:
            raise UnsupportedOperator("MaxPool2d with dilation or indices is not supported")
        self.kernel, self.stride, self.padding = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size), _pair(pool.padding)

    def geometry(self, x: torch.Tensor, output: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.kernel is not None:
            return self.kernel, self.stride
        return _whole_windows(x, output, "adaptive max pooling")

    def routes(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """[B, C, k*k, ho, wo]: 1 where a window offset holds the (first) maximum."""
        (kh, kw), (sh, sw) = self.geometry(x, output)
        ph, pw = self.padding
        ho, wo = output.shape[-2:]
        beyond_h = max(0, (ho - 1) * sh + kh - x.shape[-2] - 2 * ph)  # ceil_mode's last windows
        beyond_w = max(0, (wo - 1) * sw + kw - x.shape[-1] - 2 * pw)
        padded = F.pad(x, (pw, pw + beyond_w, ph, ph + beyond_h), value=float("-inf"))
        taken = torch.zeros_like(output, dtype=torch.bool)
        masks = []
        for i in range(kh):
            for j in range(kw):
                candidate = padded[..., i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                wins = (candidate == output) & ~taken
                taken = taken | wins
                masks.append(wins)
        return torch.stack(masks, dim=2).to(x.dtype)

    def backward(self, grad, inputs, output):
        x = inputs[0]
        kernel, stride = self.geometry(x, output)
        onehot = torch.eye(kernel[0] * kernel[1], dtype=x.dtype, device=x.device).reshape(-1, 1, *kernel)
        routed = grad.unsqueeze(3) * self.routes(x, output).unsqueeze(1)  # [B, K, C, k*k, ho, wo]
        flat = routed.flatten(0, 2)
        scattered = _scatter_windows(flat, kernel, stride, tuple(x.shape[-2:]), self.padding, onehot)
        return [scattered.reshape(grad.shape[0], grad.shape[1], *x.shape[1:])]


def _whole_windows(x: torch.Tensor, output: torch.Tensor, what: str) -> tuple[tuple[int, int], tuple[int, int]]:
    (h, w), (ho, wo) = x.shape[-2:], output.shape[-2:]
    if h % ho or w % wo:
        raise UnsupportedOperator(f"{what} {h}x{w} -> {ho}x{wo} has uneven windows")
    return (h // ho, w // wo), (h // ho, w // wo)


class AvgPoolGradient(Rule):
    """AvgPool2d (no padding) and adaptive average pooling with whole-number windows."""

    def __init__(self, pool: nn.Module | None = None) -> None:
        super().__init__()
        if isinstance(pool, nn.AvgPool2d):
            if _pair(pool.padding) != (0, 0) or pool.ceil_mode or pool.divisor_override:
                raise UnsupportedOperator("AvgPool2d with padding, ceil_mode or divisor_override is not supported")
            self.kernel, self.stride = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
        else:
            self.kernel = self.stride = None  # adaptive: from the shapes

    def geometry(self, x: torch.Tensor, output: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.kernel is not None:
            return self.kernel, self.stride
        return _whole_windows(x, output, "adaptive average pooling")

    def spread(self, grad: torch.Tensor, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Input-gradient: each output value shared equally by its window."""
        kernel, stride = self.geometry(x, output)
        if tuple(output.shape[-2:]) == (1, 1):
            share = grad / float(x.shape[-1] * x.shape[-2])
            return share.expand(*grad.shape[:-2], *x.shape[-2:])
        weight = torch.full((1, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=grad.dtype, device=grad.device)
        flat = grad.flatten(0, 2).unsqueeze(1)
        out = F.conv_transpose2d(flat, weight, stride=stride)
        out = F.pad(out, (0, x.shape[-1] - out.shape[-1], 0, x.shape[-2] - out.shape[-2]))
        return out.reshape(*grad.shape[:3], *x.shape[-2:])

    def backward(self, grad, inputs, output):
        return [self.spread(grad, inputs[0], output)]


class CatGradient(FactoredRule):
    """Each input gets its part. A pending factor that is the concatenation's own output splits the
    same way into the inputs themselves: LRP's BatchNorm after a DenseNet concatenation multiplies
    by its input, and each part then takes that factor on at its own next rule, once per image,
    instead of once per class and reader."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def factored(self, inputs, output):
        def split(grad: torch.Tensor) -> list[torch.Tensor]:
            dim = self.dim % inputs[0].dim() + 1  # skip the class axis
            return list(torch.split(grad, [t.shape[dim - 1] for t in inputs], dim=dim))

        return Factored(None, split, parts=(output, inputs))


class AddGradient(Rule):
    """Each summand gets the gradient (summed over the axes it was broadcast along); constants nothing."""

    def __init__(self, constant: list[bool] | None = None) -> None:
        super().__init__()
        self.constant = constant

    def backward(self, grad, inputs, output):
        constant = self.constant or [False] * len(inputs)
        return [None if fixed else sum_to(grad, x.shape) for x, fixed in zip(inputs, constant)]


class ReshapeGradient(Rule):
    def backward(self, grad, inputs, output):
        return [grad.reshape(grad.shape[0], grad.shape[1], *inputs[0].shape[1:])]


def _axis(dim: int, rank: int, what: str) -> int:
    """A forward axis (of a rank-``rank`` tensor with its batch first) in [0, rank); the batch axis stays."""
    axis = dim % rank
    if axis == 0:
        raise UnsupportedOperator(f"{what} moves or reduces the batch axis")
    return axis


class PermuteGradient(Rule):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def backward(self, grad, inputs, output):
        rank = inputs[0].dim()
        dims = [d % rank for d in self.dims]
        if dims[0] != 0:
            raise UnsupportedOperator(f"permute {self.dims} moves the batch axis")
        inverse = sorted(range(rank), key=dims.__getitem__)
        return [grad.permute(0, 1, *(d + 1 for d in inverse[1:]))]


class TransposeGradient(Rule):
    def __init__(self, dim0: int, dim1: int) -> None:
        super().__init__()
        self.dims = (dim0, dim1)

    def backward(self, grad, inputs, output):
        rank = inputs[0].dim()
        a, b = (_axis(d, rank, f"transpose {self.dims}") for d in self.dims)
        return [grad.transpose(a + 1, b + 1)]


def _pad_axis(grad: torch.Tensor, axis: int, before: int, after: int) -> torch.Tensor:
    """Zeros before and after ``grad`` along its ``axis`` (an axis of [B, K, ...])."""
    if before == 0 and after == 0:
        return grad
    return F.pad(grad, [0, 0] * (grad.dim() - 1 - axis) + [before, after])


class PartGradient(Rule):
    """One part of ``chunk``/``split`` (or of ``unbind``, whose parts lose the axis): the gradient
    in its place, zeros around it."""

    def __init__(self, dim: int, index: int, sections: int | list[int], chunks: bool, unbound: bool = False) -> None:
        super().__init__()
        self.dim, self.index, self.sections, self.chunks, self.unbound = dim, index, sections, chunks, unbound

    def bounds(self, size: int) -> tuple[int, int]:
        """Where part ``index`` starts and ends along an axis of ``size``."""
        if isinstance(self.sections, list):
            starts = [0, *itertools.accumulate(self.sections)]
        else:
            step = -(-size // self.sections) if self.chunks else self.sections
            starts = list(range(0, size, step)) + [size]
        return starts[self.index], min(starts[self.index + 1], size)

    def backward(self, grad, inputs, output):
        x = inputs[0]
        axis = _axis(self.dim, x.dim(), "chunk/split")
        start, stop = self.bounds(x.shape[axis])
        if self.unbound:
            grad = grad.unsqueeze(axis + 1)
        return [_pad_axis(grad, axis + 1, start, x.shape[axis] - stop)]


class IndexGradient(Rule):
    """``x[...]`` with integers, unit-step slices and an ellipsis (a class token ``x[:, 0]``): the
    gradient in place, zeros elsewhere."""

    def __init__(self, index: Any) -> None:
        super().__init__()
        self.index = index if isinstance(index, tuple) else (index,)
        for entry in self.index:
            if not (isinstance(entry, int) or entry is Ellipsis
                    or (isinstance(entry, slice) and entry.step in (None, 1))):
                raise UnsupportedOperator(f"indexing with {entry!r} is not supported (integers, unit-step slices, ...)")

    def backward(self, grad, inputs, output):
        shape = inputs[0].shape
        entries = list(self.index)
        if Ellipsis in entries:
            at = entries.index(Ellipsis)
            entries[at:at + 1] = [slice(None)] * (len(shape) - len(entries) + 1)
        entries += [slice(None)] * (len(shape) - len(entries))
        if entries[0] != slice(None):
            raise UnsupportedOperator("indexing that selects along the batch axis is not supported")
        for axis, entry in enumerate(entries[1:], 1):  # in order: an integer's axis is restored before the next
            if isinstance(entry, int):
                grad = grad.unsqueeze(axis + 1)
                start = entry % shape[axis]
                grad = _pad_axis(grad, axis + 1, start, shape[axis] - start - 1)
            else:
                start, stop, _ = entry.indices(shape[axis])
                grad = _pad_axis(grad, axis + 1, start, shape[axis] - stop)
        return [grad]


class MeanGradient(Rule):
    """A mean over axes: the gradient shared equally by the values averaged."""

    def __init__(self, dims: list[int], keepdim: bool) -> None:
        super().__init__()
        self.dims, self.keepdim = dims, keepdim

    def backward(self, grad, inputs, output):
        x = inputs[0]
        axes = sorted(_axis(d, x.dim(), f"mean over {self.dims}") for d in self.dims)
        if not self.keepdim:
            for axis in axes:
                grad = grad.unsqueeze(axis + 1)
        count = math.prod(x.shape[a] for a in axes)
        return [(grad / count).expand(grad.shape[0], grad.shape[1], *x.shape[1:])]


class LayerNormGradient(Rule):
    """LayerNorm over the last axes (nn.LayerNorm, or F.layer_norm with its weight and bias among
    the inputs): the exact input-gradient, from the stored input's mean and variance."""

    def __init__(self, normalized_ndim: int, eps: float, weight: torch.Tensor | None = None,
                 weight_input: int | None = None) -> None:
        super().__init__()
        self.axes = tuple(range(-normalized_ndim, 0))
        self.eps = eps
        self.register_buffer("weight", None if weight is None else weight.detach())
        self.weight_input = weight_input  # the weight's position among the inputs (F.layer_norm)

    def normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x - mean) / std and 1 / std, each with a class axis."""
        mean = x.mean(self.axes, keepdim=True)
        centred = x - mean
        inverse_std = torch.rsqrt((centred * centred).mean(self.axes, keepdim=True) + self.eps)
        return (centred * inverse_std).unsqueeze(1), inverse_std.unsqueeze(1)

    def scale(self, inputs: list[torch.Tensor]) -> torch.Tensor | None:
        return inputs[self.weight_input] if self.weight_input is not None else self.weight

    def backward(self, grad, inputs, output):
        x_hat, inverse_std = self.normalised(inputs[0])
        weight = self.scale(inputs)
        g = grad if weight is None else grad * weight
        dx = inverse_std * (g - g.mean(self.axes, keepdim=True) - x_hat * (g * x_hat).mean(self.axes, keepdim=True))
        return [dx] + [None] * (len(inputs) - 1)


class PatchMergeGradient(Rule):
    """Swin's patch merging (torchvision's ``_patch_merging_pad``): a map [B, H, W, C] padded to even
    sides, its four interleaved quarters concatenated on the channels. The gradient puts each
    quarter's part back in its place and cuts the padding away."""

    def backward(self, grad, inputs, output):
        x = inputs[0]
        g0, g1, g2, g3 = grad.chunk(4, dim=-1)  # rows even/odd x columns even/odd: (0,0) (1,0) (0,1) (1,1)
        even_rows = torch.stack([g0, g2], dim=-2).flatten(-3, -2)  # columns interleaved
        odd_rows = torch.stack([g1, g3], dim=-2).flatten(-3, -2)
        full = torch.stack([even_rows, odd_rows], dim=-3).flatten(-4, -3)  # rows interleaved
        return [full[..., :x.shape[1], :x.shape[2], :]]


def _cat_dim(op: OpNode) -> int:
    return int(op.argument(1, "dim", 0))


def _numbers(op: OpNode) -> list[float]:
    return [a for a in op.fx_node.args if isinstance(a, int | float) and not isinstance(a, bool)]


def _constant_flags(op: OpNode, nodes: dict[str, OpNode]) -> list[bool]:
    return [nodes[name].kind == "constant" for name in op.inputs]


def layer_norm_rule(op: OpNode) -> LayerNormGradient:
    if op.module is not None:
        norm = op.module
        return LayerNormGradient(len(norm.normalized_shape), norm.eps, norm.weight if norm.elementwise_affine else None)
    weight = op.argument(2, "weight")
    position = op.inputs.index(weight.name) if weight is not None else None
    return LayerNormGradient(len(tuple(op.argument(1, "normalized_shape"))), float(op.argument(4, "eps", 1e-5)),
                             weight_input=position)


def split_rule(op: OpNode, split: OpNode) -> PartGradient:
    """The part of ``split`` (a chunk/split/unbind node) that ``op`` (its getitem) takes."""
    index = int(op.fx_node.args[1])
    if split.target == "unbind":
        return PartGradient(int(split.argument(1, "dim", 0)), index, 1, chunks=False, unbound=True)
    chunks = split.target == "chunk"
    sections = split.argument(1, "chunks" if chunks else "split_size_or_sections")
    if sections is None:
        sections = split.argument(1, "split_size")
    return PartGradient(int(split.argument(2, "dim", 0)), index,
                        list(sections) if isinstance(sections, list | tuple) else int(sections), chunks)


def _activation_rule(op: OpNode, nodes: dict[str, OpNode]) -> ActivationGradient:
    approximate = getattr(op.module, "approximate", None) or op.fx_node.kwargs.get("approximate", "none")
    return ActivationGradient(op.kind, approximate)


def _mul_rule(op: OpNode, nodes: dict[str, OpNode]) -> MulGradient:
    numbers = _numbers(op)
    return MulGradient(_constant_flags(op, nodes), math.prod(numbers) if numbers else None)


def _attention_rule(op: OpNode, nodes: dict[str, OpNode]) -> AttentionGradient:
    check_attention(op.module, op.fx_node.kwargs)
    return AttentionGradient(op.module)


def _mean_rule(op: OpNode, nodes: dict[str, OpNode]) -> MeanGradient:
    return MeanGradient(mean_dims(op), bool(op.argument(2, "keepdim", False)))


# Operator kind -> the factory of its exact gradient rule (node, every node by name).
GRADIENT_RULES: dict[str, Callable[[OpNode, dict[str, OpNode]], Rule]] = {
    "conv": lambda op, nodes: LinearGradient(op.module),
    "linear": lambda op, nodes: LinearGradient(op.module),
    "batchnorm": lambda op, nodes: BatchNormGradient(op.module),
    "layernorm": lambda op, nodes: layer_norm_rule(op),
    "relu": lambda op, nodes: ReluGradient(),
    **{kind: _activation_rule for kind in ACTIVATIONS},
    "maxpool": lambda op, nodes: MaxPoolGradient(op.module),
    "adaptive_maxpool": lambda op, nodes: MaxPoolGradient(None),
    "avgpool": lambda op, nodes: AvgPoolGradient(op.module),
    "adaptive_avgpool": lambda op, nodes: AvgPoolGradient(op.module),
    "cat": lambda op, nodes: CatGradient(_cat_dim(op)),
    "add": lambda op, nodes: AddGradient(_constant_flags(op, nodes)),
    "mul": _mul_rule,
    "matmul": _matmul_rule,
    "softmax": lambda op, nodes: SoftmaxGradient(softmax_dim(op)),
    "reshape": lambda op, nodes: ReshapeGradient(),
    "permute": lambda op, nodes: PermuteGradient(permute_dims(op)),
    "transpose": lambda op, nodes: TransposeGradient(int(op.argument(1, "dim0")), int(op.argument(2, "dim1"))),
    "mean": _mean_rule,
    "part": lambda op, nodes: split_rule(op, nodes[op.fx_node.args[0].name]),
    "index": lambda op, nodes: IndexGradient(op.fx_node.args[1]),
    "attention": _attention_rule,
    "window_attention": lambda op, nodes: WindowAttention(op, nodes),
    "dot_product_attention": lambda op, nodes: DotProductAttention(op),
    "patch_merge": lambda op, nodes: PatchMergeGradient(),
    "identity": lambda op, nodes: Pass(),
}


def gradient_rule(op: OpNode, nodes: dict[str, OpNode]) -> Rule:
    """The exact gradient rule for an operator node (``nodes``: every node by name, for the rules
    that look at their operands)."""
    if op.kind not in GRADIENT_RULES:
        raise UnsupportedOperator(f"no gradient rule for {op.kind} at node {op.name!r}")
    return GRADIENT_RULES[op.kind](op, nodes)
