"""Which axis of each traced tensor holds the channels, followed from the input through the trace.

A CAM averages gradients over a feature map's spatial axes and weighs its channels, so it must
know which axis is which. Convolutional layers are channels first [B, C, H, W]; Swin's stages,
ConvNeXt's inner blocks and timm's NHWC stages are channels last [B, H, W, C]; a ViT's tokens
are [B, N, C]. pytorch-grad-cam leaves this to the user's ``reshape_transform``; here each
node's layout is followed from the image through permutes, transposes, reshapes and the
operators that keep it, and a layer whose layout cannot be followed is refused by name rather
than explained over the wrong axes.

Layouts are strings of axis roles: B batch, C channels (c: the channels split into groups), H
and W the spatial grid, N a sequence of tokens, 1 an axis of size one; None where the roles
cannot be followed (inside attention's
heads, across a reshape that mixes channels with positions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..errors import ConfigError
from .core import ACTIVATIONS
from .graph import OpNode, mean_dims, permute_dims

CHANNELS_FIRST, CHANNELS_LAST, TOKENS = "BCHW", "BHWC", "BNC"
FEATURE_MAPS = (CHANNELS_FIRST, CHANNELS_LAST, TOKENS)  # the layouts a CAM can be taken on

# Operators whose output has their (first followed) input's layout.
KEEPING_KINDS = ("relu", *ACTIVATIONS, "identity", "batchnorm", "layernorm", "add", "mul", "cat", "conv", "linear",
                 "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "attention", "window_attention",
                 "patch_merge")
SPATIAL_ROLES = frozenset("HWN")
CHANNEL_ROLES = frozenset("Cc")


def _reshaped(layout: str, before: Sequence[int], after: Sequence[int]) -> str | None:
    """The roles after a reshape of the non-batch axes ``before`` -> ``after``: axes of size one
    carry no role; runs of axes whose sizes multiply to the same number correspond; a run of
    spatial roles merges into N or splits into H, W; channels split into groups and merge back;
    channels mixed with positions cannot be followed."""
    source = [(size, role) for size, role in zip(before, layout[1:]) if size != 1]
    roles = ["1" if size == 1 else "" for size in after]
    targets = [i for i, size in enumerate(after) if size != 1]
    i = j = 0
    while i < len(source) or j < len(targets):
        group, ends, size_in, size_out = [], [], 1, 1
        while True:
            if size_in <= size_out and i < len(source):
                size_in *= source[i][0]
                group.append(source[i][1])
                i += 1
            elif j < len(targets):
                size_out *= after[targets[j]]
                ends.append(targets[j])
                j += 1
            else:
                return None
            if size_in == size_out and group and ends:
                break
        if len(group) == 1 and len(ends) == 1:
            roles[ends[0]] = group[0]
        elif set(group) <= CHANNEL_ROLES:  # channels split into groups (c) and merged back (ShuffleNet's shuffle)
            roles[ends[0]:ends[-1] + 1] = ["C"] if len(ends) == 1 else ["c"] * len(ends)
        elif set(group) <= SPATIAL_ROLES and len(ends) in (1, 2):
            roles[ends[0]:ends[-1] + 1] = ["N"] if len(ends) == 1 else ["H", "W"]
        else:
            return None
    return "B" + "".join(roles)


def _after(op: OpNode, layout: str, before: torch.Tensor, out: torch.Tensor) -> str | None:
    """The layout of ``op``'s output, its input-derived input ``before`` having ``layout``."""
    if len(layout) != before.dim():
        return None
    if op.kind in KEEPING_KINDS:
        return layout if out.dim() == len(layout) else None
    if op.kind == "permute":
        dims = [d % len(layout) for d in permute_dims(op)]
        return "".join(layout[d] for d in dims) if dims[0] == 0 else None
    if op.kind == "transpose":
        a, b = (int(op.argument(i, name)) % len(layout) for i, name in ((1, "dim0"), (2, "dim1")))
        roles = list(layout)
        roles[a], roles[b] = roles[b], roles[a]
        return "".join(roles) if roles[0] == "B" else None
    if op.kind == "reshape":
        return _reshaped(layout, before.shape[1:], out.shape[1:])
    if op.kind == "mean":
        reduced = {d % len(layout) for d in mean_dims(op)}
        if op.argument(2, "keepdim", False):
            return "".join("1" if i in reduced else r for i, r in enumerate(layout))
        return "".join(r for i, r in enumerate(layout) if i not in reduced)
    if op.kind in ("index", "part"):  # slices keep the roles of what they keep (ViT's x[:, 1:])
        return layout if out.dim() == len(layout) else None
    return None


def follow_layouts(nodes: Sequence[OpNode], env: Mapping[str, object]) -> dict[str, str | None]:
    """Every tensor node's layout, from one forward's tensors (``env``)."""
    layouts: dict[str, str | None] = {}
    for op in nodes:
        out = env.get(op.name)
        if not isinstance(out, torch.Tensor) or op.kind in ("shape", "constant", "split"):
            continue
        if op.kind == "input":
            layouts[op.name] = CHANNELS_FIRST if out.dim() == 4 else None
            continue
        followed = [(name, layouts[name]) for name in op.inputs if layouts.get(name) is not None]
        # an operand broadcast against the output (a squeeze-excitation gate [B, C, 1, 1]) does not decide
        full = [(name, layout) for name, layout in followed if env[name].shape == out.shape] or followed
        if not full or len({layout for _, layout in full}) > 1:
            layouts[op.name] = None
            continue
        name, layout = full[0]
        layouts[op.name] = _after(op, layout, env[name], out)
    return layouts


def as_feature_map(activations: torch.Tensor, gradients: torch.Tensor, layout: str | None, layer: str,
                   working: Sequence[str] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's activations [B, ...] and class gradients [B, K, ...] as a channels-first feature
    map [B, C, h, w] and [B, K, C, h, w]: channels last permuted; tokens laid on their patch grid,
    the leading tokens beyond the largest square (a class token, a distillation token) dropped,
    as pytorch-grad-cam's reshape_transform does. Any other layout is refused, naming
    ``working`` layers."""
    if layout == CHANNELS_FIRST:
        return activations, gradients
    if layout == CHANNELS_LAST:
        return activations.permute(0, 3, 1, 2), gradients.permute(0, 1, 4, 2, 3)
    if layout == TOKENS:
        side = math.isqrt(activations.shape[1])
        prefix = activations.shape[1] - side * side
        return (activations[:, prefix:].transpose(1, 2).unflatten(2, (side, side)),
                gradients[:, :, prefix:].transpose(2, 3).unflatten(3, (side, side)))
    shown = ", ".join(working[-4:])
    raise ConfigError(f"layer {layer!r}: its output {list(activations.shape[1:])} has no channel and spatial axes "
                      f"the trace can follow (layout {layout or 'unknown'}), so a CAM there would be taken over the "
                      f"wrong axes; layers with a feature map: ... {shown}")
