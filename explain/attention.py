"""Multi-head self-attention (``nn.MultiheadAttention``, batch first, as torchvision's ViT uses it):
its exact gradient and its LRP rule, both written as forward operators from the stored input.

The trace keeps the module whole (a torch.nn leaf); the rules recompute q, k, v and the
attention weights A = softmax(q k^T / sqrt(d)) from the module's input, once per backward,
and broadcast them against the class axis.

LRP holds A constant (CP-LRP: Ali et al., "XAI for Transformers: better explanations through
conservative propagation", ICML 2022; AttnLRP, Achtibat et al., ICML 2024, does the same for
the value path): the output projection gets the composite's linear rule, the product A v the
epsilon rule of a linear map of v (relevance to v only; q and k, which only decide A,
receive none), and the value projection the composite's linear rule again.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .lrp import LayerRule, stabilize
from .rules import Rule


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
        raise ValueError(f"nn.MultiheadAttention with {', '.join(problems)} is not supported")


class _Projections(nn.Module):
    """The packed in-projection and the out-projection of one attention module, as buffers."""

    def __init__(self, module: nn.MultiheadAttention) -> None:
        super().__init__()
        self.heads = module.num_heads
        weight, bias = module.in_proj_weight.detach(), module.in_proj_bias
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if bias is None else bias.detach()
        for name, w, b in zip("qkv", weight.chunk(3), bias.chunk(3)):
            self.register_buffer(f"w{name}", w.clone())
            self.register_buffer(f"b{name}", b.clone())
        self.register_buffer("wo", module.out_proj.weight.detach().clone())
        out_bias = module.out_proj.bias
        self.register_buffer("bo", torch.zeros(self.wo.shape[0], dtype=self.wo.dtype) if out_bias is None
                             else out_bias.detach().clone())

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """[..., N, E] -> [..., heads, N, E / heads]"""
        return t.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    @staticmethod
    def merge(t: torch.Tensor) -> torch.Tensor:
        """[..., heads, N, d] -> [..., N, heads * d]"""
        return t.transpose(-3, -2).flatten(-2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v per head [B, 1, h, N, d] (a class axis to broadcast against) and A [B, 1, h, N, N]."""
        q, k, v = (self.split(x @ w.T + b).unsqueeze(1) for x, w, b in
                   ((query, self.wq, self.bq), (key, self.wk, self.bk), (value, self.wv, self.bv)))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return q, k, v, weights


class AttentionGradient(Rule):
    """The exact input-gradients of multi-head attention for query, key and value."""

    def __init__(self, module: nn.MultiheadAttention) -> None:
        super().__init__()
        self.projections = _Projections(module)

    def backward(self, grad, inputs, output):
        p = self.projections
        q, k, v, weights = p(*inputs)
        g_heads = p.split(grad @ p.wo)  # [B, K, h, N, d]
        g_weights = g_heads @ v.transpose(-2, -1)
        g_v = weights.transpose(-2, -1) @ g_heads
        g_scores = weights * (g_weights - (g_weights * weights).sum(-1, keepdim=True)) / math.sqrt(q.shape[-1])
        g_q = g_scores @ k
        g_k = g_scores.transpose(-2, -1) @ q
        return [p.merge(g_q) @ p.wq, p.merge(g_k) @ p.wk, p.merge(g_v) @ p.wv]


class AttentionRelevance(Rule):
    """LRP through attention with A held constant (CP-LRP): relevance reaches the value input only."""

    def __init__(self, module: nn.MultiheadAttention, rule: LayerRule, stabilizer: float) -> None:
        super().__init__()
        self.projections = _Projections(module)
        self.out_rule = rule.build_linear(module.out_proj.weight, module.out_proj.bias)
        self.value_rule = rule.build_linear(self.projections.wv, self.projections.bv)
        self.stabilizer = stabilizer

    def backward(self, grad, inputs, output):
        p = self.projections
        _, _, v, weights = p(*inputs)
        mixed = weights @ v  # [B, 1, h, N, d]
        merged = p.merge(mixed).squeeze(1)  # [B, N, E]: the out-projection's input
        relevance = self.out_rule.backward(grad, [merged], output[0])[0]  # [B, K, N, E]
        share = p.split(relevance) / stabilize(mixed, self.stabilizer)
        relevance_v = v * (weights.transpose(-2, -1) @ share)
        value = inputs[2]
        relevance_x = self.value_rule.backward(p.merge(relevance_v), [value], p.merge(v).squeeze(1))[0]
        return [None, None, relevance_x]
