"""Convolutions and dense layers as maps with a precomputed input-gradient (VJP).

The VJP of a stride-1 convolution (grouped and depthwise ones too) is itself a convolution
with transposed, flipped weights (the fastest kernel in every runtime); strided ones use
ConvTranspose. A convolution with one filter for every pair of channels (the flat and smooth
rules') is a sum over the input channels and that filter, and its VJP a sum over the output
channels and the filter. Each map holds its (possibly modified: W+, W-, W**2, ...) weights as buffers, so
they export as constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedOperator


def fold(t: torch.Tensor) -> torch.Tensor:
    """[B, K, ...] -> [B*K, ...]"""
    return t.flatten(0, 1)


def unfold(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B*K, ...] -> [B, K, ...] with B and K taken from ``like``."""
    return t.unflatten(0, (like.shape[0], like.shape[1]))


def _transposed_filters(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """[C_out, C_in/g, k, k] -> [C_in, C_out/g, k, k]: each group's filters with their in- and
    output channels swapped (a grouped convolution's VJP is a grouped convolution)."""
    c_out, c_in_group = weight.shape[:2]
    per_group = weight.reshape(groups, c_out // groups, c_in_group, *weight.shape[2:])
    return per_group.transpose(1, 2).reshape(groups * c_in_group, c_out // groups, *weight.shape[2:])


class ConvMap(nn.Module):
    """x -> conv(x, W) + b with fixed geometry, and its VJP."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """``weight`` and ``bias`` are kept as given (shared when they are the layer's own)."""
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise UnsupportedOperator(f"unsupported convolution padding {conv.padding!r}/{conv.padding_mode}")
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        weight = weight.detach()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach())
        kernel = weight.shape[2:]
        back_padding = [d * (k - 1) - p for d, k, p in zip(self.dilation, kernel, self.padding)]
        self.as_conv = self.stride == (1, 1) and min(back_padding) >= 0
        self.back_padding = tuple(back_padding)
        self.uniform = self.groups == 1 and bool((weight == weight[:1, :1]).all())
        if self.uniform:
            self.register_buffer("one_filter", weight[:1, :1].clone())
        elif self.as_conv:
            self.register_buffer("flipped", _transposed_filters(weight, self.groups).flip(2, 3).contiguous())

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The map, with ``bias`` [C_out] in place of its own (a runtime adds it in the convolution)."""
        bias = self.bias if bias is None else bias
        if not self.uniform:
            return F.conv2d(x, self.weight, bias, self.stride, self.padding, self.dilation, self.groups)
        out = F.conv2d(x.sum(1, keepdim=True), self.one_filter, None, self.stride, self.padding, self.dilation)
        out = out.expand(-1, self.weight.shape[0], -1, -1)
        return out if bias is None else out + bias.reshape(-1, 1, 1)

    def vjp(self, g: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        """Input-gradient of ``g`` [B, K, C_out, h, w] -> [B, K, C_in, H, W]."""
        flat = fold(g)
        weight, groups = self.weight, self.groups
        if self.uniform:
            flat, weight, groups = flat.sum(1, keepdim=True), self.one_filter, 1
        if self.as_conv:
            flipped = self.one_filter.flip(2, 3) if self.uniform else self.flipped
            out = F.conv2d(flat, flipped, None, 1, self.back_padding, self.dilation, groups)
        else:
            size_out = flat.shape[2:]
            kernel = self.weight.shape[2:]
            extra = [
                int(n_in) - ((int(n_out) - 1) * s - 2 * p + d * (k - 1) + 1)
                for n_in, n_out, s, p, d, k in zip(input_shape[2:], size_out, self.stride, self.padding, self.dilation, kernel)
            ]
            out = F.conv_transpose2d(flat, weight, None, self.stride, self.padding, tuple(extra), groups, self.dilation)
        if self.uniform:
            out = out.expand(-1, self.weight.shape[1], -1, -1)
        return unfold(out, g)


class DenseMap(nn.Module):
    """x -> x W^T + b, and its VJP."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach())
        self.register_buffer("bias", None if bias is None else bias.detach())

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias if bias is None else bias)

    def vjp(self, g: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        return g @ self.weight


def linear_map(layer: nn.Module, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> ConvMap | DenseMap:
    """The map of a Conv2d or Linear layer, with its own or modified parameters."""
    weight = layer.weight if weight is None else weight
    if isinstance(layer, nn.Conv2d):
        return ConvMap(layer, weight, bias)
    return DenseMap(weight, bias)
