"""Seeded models whose activations look like a trained network's, for tests that need non-trivial
maps: torchvision's initialisation alone leaves some families (MobileNet, EfficientNet) with
logits near 1e-9, where every explanation is zero."""

from __future__ import annotations

import torch
from torch import nn

from chexplain.models.architectures import build


def calibrated(architecture: str, num_classes: int = 14, seed: int = 0, size: int = 96,
               dtype: torch.dtype = torch.float32) -> nn.Module:
    """``architecture`` seeded, every BatchNorm with random scale and shift and the running
    statistics of a batch of noise (so each layer's output is of order one), in eval mode,
    nothing in place."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build(architecture, num_classes)
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False  # autograd hooks, pytorch-grad-cam and Zennit need stored activations intact
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a cumulative average: the batch's own statistics
            module.reset_running_stats()
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0.0, 0.2, generator=generator)
    model = model.to(dtype).train()
    with torch.no_grad():
        model(torch.randn(8, 3, size, size, dtype=dtype, generator=generator))
    return model.eval()


def small_swin(dtype: torch.dtype = torch.float64) -> nn.Module:
    """Two stages of two blocks, 4x4 windows, on 36 x 36 inputs: the 9 x 9 tokens are padded to
    whole windows, every second block shifts them (the mask matters), patch merging pads an odd side."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                            num_classes=14)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.to(dtype).eval()
