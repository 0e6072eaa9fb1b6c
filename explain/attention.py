"""Multi-head attention, whole: its exact gradient and its LRP rule, both written as forward
operators from the stored input. Three callers: ``nn.MultiheadAttention`` (batch first, as
torchvision's ViT uses it), Swin's shifted-window attention (torchvision's
``shifted_window_attention``), which runs the same attention inside windows, and
``F.scaled_dot_product_attention`` (timm's fused attention), whose q, k and v the trace has
already projected and split into heads.

The trace keeps each whole (a torch.nn leaf; a function torchvision keeps whole); the rules
recompute q, k, v and the attention weights A = softmax(q k^T / sqrt(d) + bias) from the
input, once per backward, and broadcast them against the class axis.

LRP holds A constant (CP-LRP: Ali et al., "XAI for Transformers: better explanations through
conservative propagation", ICML 2022; AttnLRP, Achtibat et al., ICML 2024, does the same for
the value path): the output projection gets the composite's linear rule, the product A v the
epsilon rule of a linear map of v (relevance to v only; q and k, which only decide A, and the
position bias and window mask, constants, receive none), and the value projection the
composite's linear rule again.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedOperator
from .core import LinearRuleBuilder, Rule, stabilize


def _zeros_if_none(bias: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(like.shape[0], dtype=like.dtype) if bias is None else bias.detach().clone()


def product_gradients(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weights: torch.Tensor,
                      scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients at q, k and v of ``weights @ v`` with weights = softmax(q k^T scale + constant),
    per head (``q`` as it entered the product, already scaled)."""
    g_weights = grad @ v.transpose(-2, -1)
    g_scores = weights * (g_weights - (g_weights * weights).sum(-1, keepdim=True))
    return g_scores @ k * scale, g_scores.transpose(-2, -1) @ q, weights.transpose(-2, -1) @ grad


def value_relevance(relevance: torch.Tensor, v: torch.Tensor, weights: torch.Tensor, mixed: torch.Tensor,
                    stabilizer: float) -> torch.Tensor:
    """The relevance of ``mixed = weights @ v`` sent to v, the weights held constant: the epsilon
    rule of a linear map of v."""
    return v * (weights.transpose(-2, -1) @ (relevance / stabilize(mixed, stabilizer)))


class AttentionCore(nn.Module):
    """Projections and heads of one attention, its forward pieces, its gradient and its relevance.

    Tokens carry a class axis: forward tokens [B, 1, ..., N, E] broadcast against gradients and
    relevance [B, K, ..., N, E] (the dots: Swin's windows).
    """

    def __init__(self, in_weight: torch.Tensor, in_bias: torch.Tensor | None, out_weight: torch.Tensor,
                 out_bias: torch.Tensor | None, heads: int, rule: LinearRuleBuilder | None = None) -> None:
        """``rule``: the composite's dense-layer rule, for the projections under LRP."""
        super().__init__()
        self.heads = heads
        in_bias = _zeros_if_none(in_bias, in_weight)
        for name, w, b in zip("qkv", in_weight.detach().chunk(3), in_bias.chunk(3)):
            self.register_buffer(f"w{name}", w.clone())
            self.register_buffer(f"b{name}", b)
        self.register_buffer("wo", out_weight.detach().clone())
        self.register_buffer("bo", _zeros_if_none(out_bias, out_weight))
        if rule is not None:
            self.out_relevance = rule.build_linear(self.wo, self.bo)
            self.value_relevance = rule.build_linear(self.wv, self.bv)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """[..., N, E] -> [..., heads, N, E / heads]"""
        return t.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    @staticmethod
    def merge(t: torch.Tensor) -> torch.Tensor:
        """[..., heads, N, d] -> [..., N, heads * d]"""
        return t.transpose(-3, -2).flatten(-2)

    def pieces(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (scaled by 1/sqrt(d)), k, v per head and A."""
        q, k, v = (self.split(x @ w.T + b) for x, w, b in
                   ((query, self.wq, self.bq), (key, self.wk, self.bk), (value, self.wv, self.bv)))
        q = q / math.sqrt(q.shape[-1])
        scores = q @ k.transpose(-2, -1)
        return q, k, v, torch.softmax(scores if bias is None else scores + bias, dim=-1)

    def output(self, v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The attention's output from the pieces: (A v), heads merged, projected."""
        return self.merge(weights @ v) @ self.wo.T + self.bo

    def gradient(self, grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gradients at the query, key and value inputs."""
        g_q, g_k, g_v = product_gradients(self.split(grad @ self.wo), q, k, v, weights, 1 / math.sqrt(q.shape[-1]))
        return self.merge(g_q) @ self.wq, self.merge(g_k) @ self.wk, self.merge(g_v) @ self.wv

    def relevance(self, relevance: torch.Tensor, value: torch.Tensor, v: torch.Tensor, weights: torch.Tensor,
                  output: torch.Tensor, stabilizer: float) -> torch.Tensor:
        """The relevance at the value input, A held constant (``value``, ``output``: the attention's
        input and output without the class axis; ``v``, ``weights`` from ``pieces``)."""
        mixed = weights @ v
        relevance = self.out_relevance.backward(relevance, [self.merge(mixed).squeeze(1)], output)[0]
        relevance_v = value_relevance(self.split(relevance), v, weights, mixed, stabilizer)
        return self.value_relevance.backward(self.merge(relevance_v), [value], self.merge(v).squeeze(1))[0]


def check_attention(module: nn.MultiheadAttention, kwargs: dict) -> None:
    """What the rules cover: self- or cross-attention, batch first, one packed projection, no masks."""
    problems = []
    if not module.batch_first:
        problems.append("batch_first=False")
    if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
        problems.append("separate q/k/v projections, bias_k/bias_v or add_zero_attn")
    if any(kwargs.get(name) is not None for name in ("key_padding_mask", "attn_mask")) or kwargs.get("is_causal"):
        problems.append("attention masks")
    if problems:
        raise UnsupportedOperator(f"nn.MultiheadAttention with {', '.join(problems)} is not supported")


def _core_of(module: nn.MultiheadAttention, rule: LinearRuleBuilder | None = None) -> AttentionCore:
    return AttentionCore(module.in_proj_weight, module.in_proj_bias, module.out_proj.weight, module.out_proj.bias,
                         module.num_heads, rule)


class AttentionGradient(Rule):
    """nn.MultiheadAttention: the exact gradients at query, key and value."""

    def __init__(self, module: nn.MultiheadAttention) -> None:
        super().__init__()
        self.core = _core_of(module)

    def backward(self, grad, inputs, output):
        return list(self.core.gradient(grad, *self.core.pieces(*(x.unsqueeze(1) for x in inputs[:3]))))


class AttentionRelevance(Rule):
    """nn.MultiheadAttention under LRP, A held constant: relevance reaches the value input only."""

    def __init__(self, module: nn.MultiheadAttention, rule: LinearRuleBuilder, stabilizer: float) -> None:
        super().__init__()
        self.core, self.stabilizer = _core_of(module, rule), stabilizer

    def backward(self, grad, inputs, output):
        _, _, v, weights = self.core.pieces(*(x.unsqueeze(1) for x in inputs[:3]))
        return [None, None, self.core.relevance(grad, inputs[2], v, weights, output[0], self.stabilizer)]


class Windows:
    """Swin's windows over channel-last maps [B', H, W, C]: padded to whole windows, rolled by the
    shift, cut into windows [B', nW, ws*ws, C]; ``reverse`` undoes it. Each is the other's
    vector-Jacobian product (padding and cropping, rolls and permutations are linear)."""

    def __init__(self, window: list[int], shift: list[int]) -> None:
        self.window, self.shift = tuple(window), tuple(shift)

    def geometry(self, height: int, width: int) -> tuple[int, int, tuple[int, int]]:
        """Padded height and width, and the shift (none along an axis that fits one window)."""
        (wh, ww), (sh, sw) = self.window, self.shift
        padded_h, padded_w = height + (wh - height % wh) % wh, width + (ww - width % ww) % ww
        return padded_h, padded_w, (0 if wh >= padded_h else sh, 0 if ww >= padded_w else sw)

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        (wh, ww) = self.window
        padded_h, padded_w, shift = self.geometry(x.shape[1], x.shape[2])
        x = F.pad(x, (0, 0, 0, padded_w - x.shape[2], 0, padded_h - x.shape[1]))
        if sum(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        x = x.view(x.shape[0], padded_h // wh, wh, padded_w // ww, ww, x.shape[-1]).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(x.shape[0], -1, wh * ww, x.shape[-1])

    def reverse(self, windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
        (wh, ww) = self.window
        padded_h, padded_w, shift = self.geometry(height, width)
        x = windows.view(windows.shape[0], padded_h // wh, padded_w // ww, wh, ww, windows.shape[-1])
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(windows.shape[0], padded_h, padded_w, windows.shape[-1])
        if sum(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :height, :width]

    def mask(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor | None:
        """torchvision's -100 between tokens that the roll brought from different regions:
        [nW, 1, N, N], or None without a shift. Made from the shapes alone, so it is a constant of
        the exported graph (no scatter in it)."""
        (wh, ww) = self.window
        padded_h, padded_w, shift = self.geometry(height, width)
        if not sum(shift):
            return None
        rows = np.digitize(np.arange(padded_h), [padded_h - wh, padded_h - shift[0]])
        columns = np.digitize(np.arange(padded_w), [padded_w - ww, padded_w - shift[1]])
        regions = (3 * rows[:, None] + columns[None, :]).reshape(padded_h // wh, wh, padded_w // ww, ww)
        regions = regions.transpose(0, 2, 1, 3).reshape(-1, wh * ww)
        mask = np.where(regions[:, None, :] != regions[:, :, None], -100.0, 0.0)
        return torch.from_numpy(mask).to(like.dtype).unsqueeze(1)


SWIN_ARGUMENTS = ("input", "qkv_weight", "proj_weight", "relative_position_bias", "window_size", "num_heads",
                  "shift_size", "attention_dropout", "dropout", "qkv_bias", "proj_bias", "logit_scale", "training")


def _swin_arguments(op) -> dict:
    given = {**dict(zip(SWIN_ARGUMENTS, op.fx_node.args)), **op.fx_node.kwargs}
    if given.get("logit_scale") is not None:
        raise UnsupportedOperator(f"cosine window attention (Swin V2) at node {op.name!r} is not supported")
    if given.get("training", True):
        raise UnsupportedOperator(f"window attention at node {op.name!r} runs in training mode")
    return given


def window_attention(*args: object, **kwargs: object) -> torch.Tensor:
    """torchvision's ``shifted_window_attention`` (eval, Swin V1) computed from the rules' own pieces,
    its window mask a constant: the explainer's forward, exported without the scatter torchvision's
    mask-building would put in the graph."""
    given = {**dict(zip(SWIN_ARGUMENTS, args)), **kwargs}
    x = given["input"]
    height, width = x.shape[1:3]
    windows = Windows(given["window_size"], given.get("shift_size", [0, 0]))
    core = AttentionCore(given["qkv_weight"], given.get("qkv_bias"), given["proj_weight"], given.get("proj_bias"),
                         int(given["num_heads"]))
    mask = windows.mask(height, width, x)
    bias = given["relative_position_bias"] if mask is None else given["relative_position_bias"] + mask
    tokens = windows.partition(x)
    _, _, v, weights = core.pieces(tokens, tokens, tokens, bias)
    return windows.reverse(core.output(v, weights), height, width)


class WindowAttention(Rule):
    """Swin's shifted-window attention (torchvision's ``shifted_window_attention``, its weights
    parameters among the inputs): the gradient, or with ``rule`` the relevance, through the windows."""

    def __init__(self, op, nodes: dict, rule: LinearRuleBuilder | None = None, stabilizer: float = 0.0) -> None:
        super().__init__()
        given = _swin_arguments(op)
        self.windows = Windows(given["window_size"], given.get("shift_size", [0, 0]))

        def parameter(name: str) -> torch.Tensor | None:
            node = given.get(name)
            return None if node is None else nodes[node.name].value

        self.core = AttentionCore(parameter("qkv_weight"), parameter("qkv_bias"), parameter("proj_weight"),
                                  parameter("proj_bias"), int(given["num_heads"]), rule)
        self.bias_input = op.inputs.index(given["relative_position_bias"].name)  # computed from parameters
        self.relevance, self.stabilizer = rule is not None, stabilizer

    def backward(self, grad, inputs, output):
        x = inputs[0]
        batch, height, width, _ = x.shape
        windows = self.windows.partition(x)  # [B, nW, N, C]
        mask = self.windows.mask(height, width, x)
        bias = inputs[self.bias_input] if mask is None else inputs[self.bias_input] + mask
        q, k, v, weights = self.core.pieces(*(windows.unsqueeze(1),) * 3, bias)
        grad_windows = self.windows.partition(grad.flatten(0, 1)).unflatten(0, (batch, -1))  # [B, K, nW, N, C]
        if self.relevance:
            result = self.core.relevance(grad_windows, windows, v, weights, self.windows.partition(output),
                                         self.stabilizer)
        else:
            result = sum(self.core.gradient(grad_windows, q, k, v, weights))
        back = self.windows.reverse(result.flatten(0, 1), height, width)
        return [back.unflatten(0, (batch, -1))] + [None] * (len(inputs) - 1)


class DotProductAttention(Rule):
    """``F.scaled_dot_product_attention(q, k, v)`` (timm's fused attention; no mask, no dropout):
    the exact gradients at q, k and v, or with ``relevance`` the relevance, A held constant: all
    of it to v, none to q and k, as for the whole attention above."""

    def __init__(self, op, relevance: bool = False, stabilizer: float = 0.0) -> None:
        super().__init__()
        if op.argument(3, "attn_mask") is not None or op.argument(5, "is_causal") or op.argument(7, "enable_gqa"):
            raise UnsupportedOperator(f"scaled_dot_product_attention at node {op.name!r} with a mask, causal or "
                             "grouped heads is not supported")
        dropout = op.argument(4, "dropout_p", 0.0)
        if not isinstance(dropout, int | float) or dropout:
            raise UnsupportedOperator(f"scaled_dot_product_attention at node {op.name!r} runs with dropout (training mode)")
        self.scale, self.relevance, self.stabilizer = op.argument(6, "scale"), relevance, stabilizer

    def backward(self, grad, inputs, output):
        q, k, v = (x.unsqueeze(1) for x in inputs[:3])
        scale = self.scale if self.scale is not None else 1 / math.sqrt(q.shape[-1])
        weights = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)
        if self.relevance:
            return [None, None, value_relevance(grad, v, weights, output.unsqueeze(1), self.stabilizer)]
        return list(product_gradients(grad, q * scale, k, v, weights, scale))
