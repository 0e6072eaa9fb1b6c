"""Canonizers: rewrite the model's parameters so rules see a simpler network.

``merge_batchnorm`` folds a BatchNorm2d into the Conv2d it directly follows (the conv's
output feeds nothing else), as Zennit's MergeBatchNorm does: the convolution takes the
scale and shift, and the BatchNorm is left computing x / sqrt(1 + eps), so the canonized
forward — and with it every exact zero that decides where relevance goes — is the same.
"""

from __future__ import annotations

import torch
from torch import nn

from .graph import OpNode


def batchnorm_after_conv(nodes: list[OpNode]) -> list[tuple[OpNode, OpNode]]:
    """(conv, batchnorm) node pairs where the BatchNorm is the convolution's only consumer."""
    consumers: dict[str, list[OpNode]] = {}
    for op in nodes:
        for name in op.inputs:
            consumers.setdefault(name, []).append(op)
    by_name = {op.name: op for op in nodes}
    pairs = []
    for op in nodes:
        if op.kind == "batchnorm" and op.fx_node.op == "call_module" and len(op.inputs) == 1:
            source = by_name[op.inputs[0]]
            if source.kind == "conv" and len(consumers[source.name]) == 1 and source.module.groups == 1:
                pairs.append((source, op))
    return pairs


@torch.no_grad()
def merge_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Fold ``norm`` into ``conv`` in place; ``norm`` keeps unit statistics."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros(1, dtype=conv.weight.dtype)
    merged_bias = (bias - norm.running_mean) * scale + norm.bias
    conv.weight.mul_(scale[:, None, None, None])
    conv.bias = nn.Parameter(merged_bias.clone())
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0)
    norm.weight.fill_(1.0)
    norm.bias.zero_()
