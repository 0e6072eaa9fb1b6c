"""Gradient rules: the exact vector-Jacobian product of each operator kind, as forward ops.

Every rule maps what arrives at a node's output, shaped [B, K, ...] (K target classes
broadcast against one forward of batch B), to what goes to each tensor input. Forward
tensors are [B, ...] and broadcast over K.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from .graph import OpNode
from .linear_maps import linear_map


class Rule(nn.Module, ABC):
    """Relevance (or gradient) at a node's output -> one tensor per tensor input."""

    @abstractmethod
    def backward(self, grad: torch.Tensor, inputs: list[torch.Tensor], output: torch.Tensor) -> list[torch.Tensor]:
        """What goes to each tensor input of the node."""


class Pass(Rule):
    """Hands what arrives straight to the single input (identity, dropout, and LRP's Pass)."""

    def backward(self, grad, inputs, output):
        return [grad]


class LinearGradient(Rule):
    """Conv2d / Linear: transposed (flipped) convolution or matrix product."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.map = linear_map(layer)

    def backward(self, grad, inputs, output):
        return [self.map.vjp(grad, inputs[0].shape)]


class BatchNormGradient(Rule):
    """Eval-mode BatchNorm2d: a per-channel scale gamma / sqrt(var + eps)."""

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__()
        if norm.training or norm.running_var is None:
            raise ValueError("BatchNorm2d must be in eval mode with running statistics")
        scale = norm.weight.detach() if norm.affine else torch.ones_like(norm.running_var)
        self.register_buffer("scale", (scale / torch.sqrt(norm.running_var + norm.eps)).reshape(-1, 1, 1))

    def backward(self, grad, inputs, output):
        return [grad * self.scale]


class ReluGradient(Rule):
    def backward(self, grad, inputs, output):
        return [grad * (inputs[0] > 0).unsqueeze(1).to(grad.dtype)]


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
    one ConvTranspose with one-hot kernels export to any runtime.
    """

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        if pool.ceil_mode or _pair(pool.dilation) != (1, 1) or pool.return_indices:
            raise ValueError("MaxPool2d with ceil_mode, dilation or indices is not supported")
        self.kernel, self.stride, self.padding = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size), _pair(pool.padding)
        kh, kw = self.kernel
        self.register_buffer("onehot", torch.eye(kh * kw).reshape(kh * kw, 1, kh, kw))

    def routes(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """[B, C, k*k, ho, wo]: 1 where a window offset holds the (first) maximum."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        padded = F.pad(x, (pw, pw, ph, ph), value=float("-inf"))
        ho, wo = output.shape[-2:]
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
        routed = grad.unsqueeze(3) * self.routes(x, output).unsqueeze(1)  # [B, K, C, k*k, ho, wo]
        flat = routed.flatten(0, 2)
        scattered = _scatter_windows(flat, self.kernel, self.stride, tuple(x.shape[-2:]), self.padding, self.onehot)
        return [scattered.reshape(grad.shape[0], grad.shape[1], *x.shape[1:])]


class AvgPoolGradient(Rule):
    """AvgPool2d (no padding) and adaptive average pooling with whole-number windows."""

    def __init__(self, pool: nn.Module | None = None) -> None:
        super().__init__()
        if isinstance(pool, nn.AvgPool2d):
            if _pair(pool.padding) != (0, 0) or pool.ceil_mode or pool.divisor_override:
                raise ValueError("AvgPool2d with padding, ceil_mode or divisor_override is not supported")
            self.kernel, self.stride = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
        else:
            self.kernel = self.stride = None  # adaptive: from the shapes

    def geometry(self, x: torch.Tensor, output: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.kernel is not None:
            return self.kernel, self.stride
        (h, w), (ho, wo) = x.shape[-2:], output.shape[-2:]
        if h % ho or w % wo:
            raise ValueError(f"adaptive average pooling {h}x{w} -> {ho}x{wo} has uneven windows")
        return (h // ho, w // wo), (h // ho, w // wo)

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


class CatGradient(Rule):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def backward(self, grad, inputs, output):
        dim = self.dim % inputs[0].dim() + 1  # skip the class axis
        return list(torch.split(grad, [t.shape[dim - 1] for t in inputs], dim=dim))


class AddGradient(Rule):
    def backward(self, grad, inputs, output):
        return [grad for _ in inputs]


class ReshapeGradient(Rule):
    def backward(self, grad, inputs, output):
        return [grad.reshape(grad.shape[0], grad.shape[1], *inputs[0].shape[1:])]


def _cat_dim(op: OpNode) -> int:
    node = op.fx_node
    return int(node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0))


def gradient_rule(op: OpNode) -> Rule:
    """The exact gradient rule for an operator node."""
    kind = op.kind
    if kind in ("conv", "linear"):
        return LinearGradient(op.module)
    if kind == "batchnorm":
        return BatchNormGradient(op.module)
    if kind == "relu":
        return ReluGradient()
    if kind == "maxpool":
        return MaxPoolGradient(op.module)
    if kind in ("avgpool", "adaptive_avgpool"):
        return AvgPoolGradient(op.module)
    if kind == "cat":
        return CatGradient(_cat_dim(op))
    if kind == "add":
        return AddGradient()
    if kind == "reshape":
        return ReshapeGradient()
    if kind == "identity":
        return Pass()
    raise ValueError(f"no gradient rule for {kind} at node {op.name!r}")
