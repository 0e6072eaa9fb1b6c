"""The Grad-CAM family from a layer's activations A [B, C, h, w] and class gradients G [B, K, C, h, w].

Written with operations that numpy arrays and torch tensors share, so the explainer builds
its graph from these formulas and the torch-free runtime computes any variant from a
graph's exposed activations and gradients with the very same code. Raw maps at the layer's
resolution, after the final ReLU, never normalised; formulas follow the papers and
pytorch-grad-cam.
"""

from __future__ import annotations

from typing import Any

from ...grammar import CAM_VARIANTS

GRADCAM_PLUS_PLUS_EPS = 1e-6
SPATIAL = (-2, -1)

Array = Any  # numpy.ndarray or torch.Tensor


def _relu(x: Array) -> Array:
    return x.clip(min=0)


def _weighted(weights: Array, activations: Array) -> Array:
    """relu(sum_c w[b, k, c] * A[b, c]) -> [B, K, h, w]"""
    return _relu((weights[..., None, None] * activations[:, None]).sum(axis=2))


def cam(variant: str, activations: Array, gradients: Array) -> Array:
    """One CAM variant: [B, K, h, w]."""
    a = activations[:, None]
    if variant == "gradcam":
        return _weighted(gradients.mean(axis=SPATIAL), activations)
    if variant == "hirescam":
        return _relu((gradients * a).sum(axis=2))
    if variant == "layercam":
        return _relu((_relu(gradients) * a).sum(axis=2))
    if variant == "guided-gradcam":
        # the study's guided weights: positive gradients at positive activations only
        return _weighted((_relu(gradients) * (a > 0)).mean(axis=SPATIAL), activations)
    if variant == "gradcam++":
        g2 = gradients * gradients
        g3 = g2 * gradients
        total = a.sum(axis=SPATIAL, keepdims=True)
        alpha = g2 / (2 * g2 + total * g3 + GRADCAM_PLUS_PLUS_EPS) * (gradients != 0)
        return _weighted((_relu(gradients) * alpha).sum(axis=SPATIAL), activations)
    raise ValueError(f"unknown CAM variant {variant!r}; known: {', '.join(CAM_VARIANTS)}")
