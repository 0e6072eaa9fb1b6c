"""The independent implementations chexplain is checked and timed against, called through
their public APIs as a user would: pytorch-grad-cam (PyPI ``grad-cam``) and Zennit.

Neither is a runtime dependency: the test suite and ``chexplain bench --compare-reference``
import them here, and a missing one is a clear error naming the package to install.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..optional import require
from .composites import BATCHNORM_EPSILON


def _cam_class(variant: str) -> Any:
    cams = require("pytorch_grad_cam")
    classes = {"gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus, "hirescam": cams.HiResCAM,
               "layercam": cams.LayerCAM}
    if variant not in classes:
        raise ValueError(f"pytorch-grad-cam has no {variant!r} to compare with; it has {', '.join(classes)}")
    return classes[variant]


def pytorch_grad_cam(model: nn.Module, layer: nn.Module, variant: str, x: torch.Tensor,
                     classes: Sequence[int]) -> np.ndarray:
    """pytorch-grad-cam's maps [B, K, H, W] for each class, one call per class (min-max scaled as it returns them)."""
    targets = require("pytorch_grad_cam.utils.model_targets")
    with _cam_class(variant)(model=model, target_layers=[layer]) as cam:
        return np.stack([cam(input_tensor=x, targets=[targets.ClassifierOutputTarget(c)]) for c in classes], 1)


def pytorch_grad_cam_batched(model: nn.Module, layer: nn.Module, variant: str, x: torch.Tensor,
                             classes: Sequence[int]) -> np.ndarray:
    """K classes of one image in one call: the image repeated K times, one target each."""
    targets = require("pytorch_grad_cam.utils.model_targets")
    with _cam_class(variant)(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=x.expand(len(classes), -1, -1, -1),
                   targets=[targets.ClassifierOutputTarget(c) for c in classes])


def zennit_composite(name: str, epsilon: float = 1.0,
                     bounds: tuple[Sequence[float], Sequence[float]] | None = None, dtype: torch.dtype = torch.float32):
    """The Zennit composite configured with the rules chexplain's composite ``name`` assigns."""
    composites = require("zennit.composites")
    rules = require("zennit.rules")
    types = require("zennit.types")
    box = None
    if bounds is not None:
        box = rules.ZBox(*(torch.tensor(b, dtype=dtype).reshape(1, -1, 1, 1) for b in bounds))
    conv, linear, first = {
        "epsilon": (rules.Epsilon(epsilon), rules.Epsilon(epsilon), None),
        "z": (rules.Epsilon(1e-6), rules.Epsilon(1e-6), None),
        "alpha2beta1": (rules.AlphaBeta(2, 1), rules.AlphaBeta(2, 1), None),
        "alpha1beta0": (rules.AlphaBeta(1, 0), rules.AlphaBeta(1, 0), None),
        "epsilon-plus": (rules.ZPlus(), rules.Epsilon(epsilon), None),
        "epsilon-plus-flat": (rules.ZPlus(), rules.Epsilon(epsilon), rules.Flat()),
        "epsilon-alpha2beta1": (rules.AlphaBeta(2, 1), rules.Epsilon(epsilon), None),
        "epsilon-gamma-box": (rules.Gamma(0.25), rules.Epsilon(epsilon), box),
        "deep-taylor": (rules.ZPlus(), rules.ZPlus(), box),
    }[name.removesuffix("-bn")]
    if name in ("epsilon-gamma-box", "deep-taylor") and box is None:
        raise ValueError(f"composite {name} needs the input bounds")
    batchnorm = rules.Epsilon(BATCHNORM_EPSILON) if name.endswith("-bn") else rules.Pass()
    layer_map = [(types.Activation, rules.Pass()), (types.AvgPool, rules.Norm()), (types.BatchNorm, batchnorm),
                 (nn.Conv2d, conv), (nn.Linear, linear)]
    if first is None:
        return composites.LayerMapComposite(layer_map=layer_map)
    return composites.SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[((nn.Conv2d, nn.Linear), first)])


def zennit_lrp(model: nn.Module, composite: Any, x: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Zennit's input relevance [B, K, H, W] (summed over channels), one attribution per class,
    each seeded with the class's logit."""
    attribution = require("zennit.attribution")
    maps = []
    with attribution.Gradient(model=model, composite=composite) as attributor:
        for c in classes:
            def seed(output: torch.Tensor, c: int = c) -> torch.Tensor:
                return nn.functional.one_hot(torch.tensor([c]), output.shape[1]).to(output) * output
            _, relevance = attributor(x, seed)
            maps.append(relevance.sum(1))
    return torch.stack(maps, 1)
