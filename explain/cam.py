"""The Grad-CAM family from a layer's activations A [B, C, h, w] and class gradients G [B, K, C, h, w].

Raw maps at the layer's resolution, after the final ReLU and never normalised.
Formulas follow the papers and pytorch-grad-cam's implementations.
"""

from __future__ import annotations

import torch

VARIANTS = ("gradcam", "gradcam++", "hirescam", "layercam", "guided-gradcam")
GRADCAM_PLUS_PLUS_EPS = 1e-6


def _weighted(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """relu(sum_c w[b, k, c] * A[b, c]) -> [B, K, h, w]"""
    return torch.relu((weights[..., None, None] * activations.unsqueeze(1)).sum(2))


def cam(variant: str, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """One CAM variant: [B, K, h, w]."""
    a = activations.unsqueeze(1)
    if variant == "gradcam":
        return _weighted(gradients.mean((-2, -1)), activations)
    if variant == "hirescam":
        return torch.relu((gradients * a).sum(2))
    if variant == "layercam":
        return torch.relu((torch.relu(gradients) * a).sum(2))
    if variant == "guided-gradcam":
        # the study's guided weights: positive gradients at positive activations only
        return _weighted((torch.relu(gradients) * (a > 0).to(a.dtype)).mean((-2, -1)), activations)
    if variant == "gradcam++":
        g2 = gradients * gradients
        g3 = g2 * gradients
        total = a.sum((-2, -1), keepdim=True)
        alpha = g2 / (2 * g2 + total * g3 + GRADCAM_PLUS_PLUS_EPS)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return _weighted((torch.relu(gradients) * alpha).sum((-2, -1)), activations)
    raise ValueError(f"unknown CAM variant {variant!r}; known: {', '.join(VARIANTS)}")
