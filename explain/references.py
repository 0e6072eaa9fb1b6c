"""The independent implementations chexplain is checked and timed against, called through
their public APIs as a user would: pytorch-grad-cam (PyPI ``grad-cam``) and Zennit.

Neither is a runtime dependency: the test suite and ``chexplain bench --compare-reference``
import them here, and a missing one is a clear error naming the package to install.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..optional import require
from .composites import BATCHNORM_EPSILON
from .core import DEFAULT_STABILIZER
from .rules import tent_weights


def _cam_class(variant: str) -> Any:
    cams = require("pytorch_grad_cam")
    classes = {"gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus, "hirescam": cams.HiResCAM,
               "layercam": cams.LayerCAM}
    if variant not in classes:
        raise ConfigError(f"pytorch-grad-cam has no {variant!r} to compare with; it has {', '.join(classes)}")
    return classes[variant]


def patch_grid(tensor: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``reshape_transform`` for a transformer's tokens [B, N, C]: the leading
    tokens beyond the largest square dropped, the rest on their grid [B, C, s, s]; a feature map
    passes unchanged."""
    if tensor.dim() != 3:
        return tensor
    side = math.isqrt(tensor.shape[1])
    return tensor[:, tensor.shape[1] - side * side:].reshape(tensor.shape[0], side, side, -1).permute(0, 3, 1, 2)


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``reshape_transform`` for a channels-last feature map [B, H, W, C]."""
    return tensor.permute(0, 3, 1, 2)


def pytorch_grad_cam(model: nn.Module, layer: nn.Module, variant: str, x: torch.Tensor, classes: Sequence[int],
                     reshape_transform: Callable[[torch.Tensor], torch.Tensor] = patch_grid) -> np.ndarray:
    """pytorch-grad-cam's maps [B, K, H, W] for each class, one call per class (min-max scaled as it returns
    them), with the ``reshape_transform`` the layer's layout needs."""
    targets = require("pytorch_grad_cam.utils.model_targets")
    with _cam_class(variant)(model=model, target_layers=[layer], reshape_transform=reshape_transform) as cam:
        return np.stack([cam(input_tensor=x, targets=[targets.ClassifierOutputTarget(c)]) for c in classes], 1)


def pytorch_grad_cam_batched(model: nn.Module, layer: nn.Module, variant: str, x: torch.Tensor,
                             classes: Sequence[int]) -> np.ndarray:
    """K classes of one image in one call: the image repeated K times, one target each."""
    targets = require("pytorch_grad_cam.utils.model_targets")
    with _cam_class(variant)(model=model, target_layers=[layer], reshape_transform=patch_grid) as cam:
        return cam(input_tensor=x.expand(len(classes), -1, -1, -1),
                   targets=[targets.ClassifierOutputTarget(c) for c in classes])


def zennit_smooth_flat(stride: Sequence[int]) -> Any:
    """The smooth first-layer rule (explain/rules.py ``SmoothFlat``) on Zennit's machinery: its
    Flat rule with the tent weights of a convolution of this stride in place of the ones
    (Zennit has no such rule; the tent itself is chexplain's)."""
    rules = require("zennit.rules")

    def tent(param: torch.Tensor, name: str) -> torch.Tensor:
        window = torch.outer(tent_weights(param.shape[2], stride[0]), tent_weights(param.shape[3], stride[1]))
        return window.to(param).expand_as(param)

    stabilizer = rules.Stabilizer.ensure(DEFAULT_STABILIZER)
    return rules.BasicHook(
        input_modifiers=[torch.ones_like],
        param_modifiers=[rules.ParamMod(tent, zero_params=rules.zero_bias(None), require_params=False)],
        output_modifiers=[lambda output: output],
        gradient_mapper=lambda out_grad, outputs: out_grad / stabilizer(outputs[0]),
        reducer=lambda inputs, gradients: gradients[0],
    )


def zennit_composite(name: str, epsilon: float = 1.0,
                     bounds: tuple[Sequence[float], Sequence[float]] | None = None, dtype: torch.dtype = torch.float32,
                     first_stride: Sequence[int] = (2, 2)):
    """The Zennit composite configured with the rules chexplain's composite ``name`` assigns
    (``first_stride``: the first convolution's, for the smooth rule's tent)."""
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
        "epsilon-plus-smooth": (rules.ZPlus(), rules.Epsilon(epsilon), zennit_smooth_flat(first_stride)),
        "epsilon-alpha2beta1": (rules.AlphaBeta(2, 1), rules.Epsilon(epsilon), None),
        "epsilon-gamma-box": (rules.Gamma(0.25), rules.Epsilon(epsilon), box),
        "deep-taylor": (rules.ZPlus(), rules.ZPlus(), box),
    }[name.removesuffix("-bn")]
    if name in ("epsilon-gamma-box", "deep-taylor") and box is None:
        raise ConfigError(f"composite {name} needs the input bounds")
    batchnorm = rules.Epsilon(BATCHNORM_EPSILON) if name.endswith("-bn") else rules.Pass()
    layer_map = [(types.Activation, rules.Pass()), (types.AvgPool, rules.Norm()), (types.BatchNorm, batchnorm),
                 (nn.Conv2d, conv), (nn.Linear, linear), (require("zennit.layer").Sum, rules.Norm()),
                 (_DetachedStdLayerNorm, rules.Epsilon(DEFAULT_STABILIZER))]
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


class _DetachedStdLayerNorm(nn.Module):
    """LayerNorm with its 1/std held constant (detached): a linear map of x for Zennit's epsilon rule."""

    def __init__(self, ndim: int, eps: float, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.axes, self.eps = tuple(range(-ndim, 0)), eps
        self.weight = None if weight is None else nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(self.axes, keepdim=True)
        y = centred / torch.sqrt((centred * centred).mean(self.axes, keepdim=True) + self.eps).detach()
        if self.weight is not None:
            y = y * self.weight
        return y + self.bias if self.bias is not None else y


def _functional_as_module(node: Any, attribute: Any) -> nn.Module:
    """An eval-mode F.batch_norm or F.linear call with parameter operands as its module."""
    names = (("input", "weight", "bias") if node.target is nn.functional.linear else
             ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"))
    given = {**dict(zip(names, node.args)), **node.kwargs}
    weight, bias = attribute(given["weight"]), attribute(given.get("bias"))
    if node.target is nn.functional.linear:
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(weight.dtype)
    else:
        mean, var = attribute(given["running_mean"]), attribute(given["running_var"])
        module = nn.BatchNorm2d(mean.numel(), eps=given.get("eps", 1e-5)).to(mean.dtype).eval()
        module.running_mean.data.copy_(mean)
        module.running_var.data.copy_(var)
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)
    return module


def zennit_model(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` rewritten so that Zennit's module rules see what chexplain's graph rules see, for
    comparing LRP on architectures Zennit has no canonizer for (``example``: an input, for shapes).

    Zennit's hooks turn relevance into relevance at modules; a functional operation between
    them applies its own Jacobian to the relevance. So, with torch.fx: each addition of two
    tensors becomes Zennit's Sum module over the stacked summands (Norm rule); a product with
    a sigmoid gate or a constant becomes ``signal + (product - signal).detach()``, whose
    Jacobian hands all relevance to the signal (the gating rule); LayerNorm becomes a module
    with its std detached (epsilon rule on the remaining linear map); functional average
    pooling and a mean over the spatial axes become adaptive average pooling modules (Norm).
    """
    import operator

    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    layer = require("zennit.layer")
    traced = torch.fx.symbolic_trace(copy.deepcopy(model).eval())
    ShapeProp(traced).propagate(example)
    modules = dict(traced.named_modules())
    graph = traced.graph

    def tensor(arg: Any) -> bool:
        return isinstance(arg, torch.fx.Node) and "tensor_meta" in arg.meta

    def derived(arg: Any) -> bool:  # computed from the input, not from parameters alone
        return tensor(arg) and arg.op != "get_attr"

    def gate(arg: Any) -> bool:
        return arg.op == "call_module" and isinstance(modules[arg.target], nn.Sigmoid | nn.Hardsigmoid)

    def attribute(node: Any) -> torch.Tensor | None:
        if node is None:
            return None
        owner, _, name = node.target.rpartition(".")
        return getattr(traced.get_submodule(owner) if owner else traced, name)  # a parameter or a buffer

    for index, node in enumerate(list(graph.nodes)):
        replacement = None
        with graph.inserting_before(node):
            if node.target in (operator.add, operator.iadd, torch.add) and len(node.args) == 2 and all(
                    map(tensor, node.args)):
                traced.add_submodule(f"zennit_sum_{index}", layer.Sum(dim=-1))
                stacked = graph.call_function(torch.stack, (list(node.args),), {"dim": -1})
                replacement = graph.call_module(f"zennit_sum_{index}", (stacked,))
            elif node.target in (nn.functional.batch_norm, nn.functional.linear):
                # timm's BatchNormAct2d and Linear, inlined by the trace: modules again, for Zennit to hook
                traced.add_submodule(f"zennit_module_{index}", _functional_as_module(node, attribute))
                replacement = graph.call_module(f"zennit_module_{index}", (node.args[0],))
            elif node.target is nn.functional.adaptive_avg_pool2d:
                traced.add_submodule(f"zennit_pool_{index}", nn.AdaptiveAvgPool2d(node.args[1]))
                replacement = graph.call_module(f"zennit_pool_{index}", (node.args[0],))
            elif node.op == "call_module" and type(modules[node.target]) is nn.LayerNorm:
                norm = modules[node.target]
                traced.add_submodule(f"zennit_norm_{index}", _DetachedStdLayerNorm(
                    len(norm.normalized_shape), norm.eps, norm.weight, norm.bias))
                replacement = graph.call_module(f"zennit_norm_{index}", node.args)
            elif node.target is nn.functional.layer_norm:
                traced.add_submodule(f"zennit_norm_{index}", _DetachedStdLayerNorm(
                    len(node.args[1]), node.kwargs.get("eps", 1e-5), attribute(node.kwargs.get("weight")),
                    attribute(node.kwargs.get("bias"))))
                replacement = graph.call_module(f"zennit_norm_{index}", (node.args[0],))
            elif node.op == "call_method" and node.target == "mean" and tuple(node.args[1]) in ((2, 3), (-2, -1)):
                traced.add_submodule(f"zennit_pool_{index}", nn.AdaptiveAvgPool2d(1))
                pooled = graph.call_module(f"zennit_pool_{index}", (node.args[0],))
                keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
                replacement = pooled if keepdim else graph.call_function(torch.flatten, (pooled, 1))
        if node.target in (operator.mul, torch.mul) and (sum(map(derived, node.args)) == 1 or any(map(gate, node.args))):
            # signal + (product - signal).detach(): the product's value, and all relevance to the signal
            signal = next(a for a in node.args if derived(a) and not gate(a))
            with graph.inserting_after(node):
                rest = graph.call_function(operator.sub, (node, signal))
            with graph.inserting_after(rest):
                kept = graph.call_method("detach", (rest,))
            with graph.inserting_after(kept):
                replacement = graph.call_function(operator.add, (signal, kept))
            node.replace_all_uses_with(replacement, delete_user_cb=lambda user, rest=rest: user is not rest)
            replacement.meta = dict(node.meta)
        elif replacement is not None:
            replacement.meta = dict(node.meta)  # later rewrites see it as the tensor it stands for
            node.replace_all_uses_with(replacement)
            graph.erase_node(node)
    graph.eliminate_dead_code()
    traced.recompile()
    return traced
