"""Folded rules: class-independent factors computed once and chained, against the rules applied
as written (``fold_factors=False``), in float64; what the folding saves, counted."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from chexplain.explain import LRP, Explainer, GradCAM
from chexplain.explain.linear_maps import ConvMap
from chexplain.explain.rules import BatchNormEpsilon
from chexplain.models.architectures import default_layer

from calibrated import calibrated

TARGETS = torch.tensor([[2, 10, 0]])
BOUNDS = ((-2.1, -2.0, -1.8), (2.2, 2.4, 2.6))


@functools.cache
def _model(architecture: str) -> nn.Module:
    if architecture == "vit_b_16":  # ViT-B/16's layers on a 64x64 image (16 patches)
        torch.manual_seed(0)
        model = torchvision.models.vit_b_16(num_classes=14, image_size=64)
        nn.init.normal_(model.heads.head.weight, std=0.05)  # torchvision starts the head at zero
        return model.double().eval()
    return calibrated(architecture, dtype=torch.float64, size=64)


def _image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _both(model: nn.Module, methods: list) -> tuple[dict, dict]:
    with torch.no_grad():
        folded = Explainer(model, methods).double()(_image(), TARGETS)
        written = Explainer(model, methods, fold_factors=False).double()(_image(), TARGETS)
    return folded, written


# every kind of layer rule: one unmodified term, z+ on a ReLU's output, the flat rule's uniform
# weights, two groups (the rules as written), BatchNorm epsilon rectified or not
@pytest.mark.parametrize("composite", ["epsilon", "epsilon-alpha2beta1", "alpha2beta1-bn", "epsilon-plus-flat-bn"])
def test_folded_lrp_equals_the_rules_as_written_on_densenet(composite: str):
    folded, written = _both(_model("densenet121"), [LRP(composite, bounds=BOUNDS)])
    assert written["lrp"].abs().sum() > 0
    torch.testing.assert_close(folded["lrp"], written["lrp"], rtol=1e-9, atol=1e-12 * written["lrp"].abs().max())


@pytest.mark.slow  # six full-size families; the quick lane folds DenseNet121 and the tiny layers
@pytest.mark.parametrize("architecture", ["resnet50", "efficientnet_b0", "mobilenet_v3_small", "convnext_tiny",
                                          "squeezenet1_1", "vit_b_16"])
@pytest.mark.parametrize("composite", ["epsilon-plus-flat-bn", "alpha2beta1", "epsilon-gamma-box"])
def test_folded_lrp_and_gradcam_equal_the_rules_as_written_on_other_families(architecture: str, composite: str):
    folded, written = _both(_model(architecture), [LRP(composite, bounds=BOUNDS), GradCAM(default_layer(architecture), "hirescam")])
    for key in ("lrp", "gradcam"):
        assert written[key].abs().sum() > 0, key
        torch.testing.assert_close(folded[key], written[key], rtol=1e-9, atol=1e-12 * written[key].abs().max())


# multiplies and divisions, as torch's operators and methods name them
_ARITHMETIC = ("mul", "div", "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__rdiv__")


class _ClassOperations(TorchFunctionMode):
    """Counts multiplies (and divisions) and convolutions on tensors that carry the class axis (K = 3, batch 1:
    the only tensors with 3 in their second place or, folded for a convolution, in the first)."""

    def __init__(self) -> None:
        super().__init__()
        self.multiplies = self.convolutions = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.dim() >= 3:
            if getattr(func, "__name__", None) in _ARITHMETIC and out.shape[1] == 3:
                self.multiplies += 1
            if func in (F.conv2d, F.conv_transpose2d) and out.shape[0] == 3:
                self.convolutions += 1
        return out


def _count(explainer: Explainer) -> _ClassOperations:
    counter = _ClassOperations()
    with torch.no_grad(), counter:
        explainer(_image(), TARGETS)
    return counter


def test_the_default_composite_costs_each_class_a_convolution_and_about_one_multiply_per_layer():
    model = _model("densenet121")
    layers = sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    folded = _count(Explainer(model, [LRP("epsilon-plus-flat-bn")]).double())
    written = _count(Explainer(model, [LRP("epsilon-plus-flat-bn")], fold_factors=False).double())
    assert folded.convolutions == written.convolutions == layers - 1  # the dense layer: a matrix product
    # A dense layer of DenseNet (two convolutions): the share of its second convolution, the chain
    # ReLU -> BatchNorm -> share of the first, and the concatenation's BatchNorm: 1.5 per layer, and
    # one where max pooling (not factored) takes on the first block's deferred input (as written:
    # about 4).
    assert folded.multiplies <= 1.6 * layers + 1
    assert written.multiplies >= 2.5 * folded.multiplies


def test_batchnorms_that_only_feed_proportional_rules_divide_by_the_rectified_output():
    model = _model("densenet121")
    rules = Explainer(model, [LRP("epsilon-plus-flat-bn")]).lrp_rules["epsilon-plus-flat-bn"]
    norms = {name: rule for name, rule in rules.items() if isinstance(rule, BatchNormEpsilon)}
    # all but norm0, which reaches its ReLU's consumers through max pooling
    assert sorted(name for name, rule in norms.items() if not rule.rectified) == ["features_norm0"]
    with torch.no_grad():
        rectified = Explainer(model, [LRP("epsilon-plus-flat-bn")]).double()
        plain = Explainer(model, [LRP("epsilon-plus-flat-bn")]).double()
        for rule in plain.lrp_rules["epsilon-plus-flat-bn"].values():
            if isinstance(rule, BatchNormEpsilon):
                rule.rectified = False
        ours, theirs = rectified(_image(), TARGETS)["lrp"], plain(_image(), TARGETS)["lrp"]
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12 * theirs.abs().max())



class _ArithmeticOnConcatenations(TorchFunctionMode):
    """Counts the multiplies and divisions that read a concatenation's output."""

    def __init__(self) -> None:
        super().__init__()
        self.concatenated: list[torch.Tensor] = []
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", None)
        if name == "cat":
            self.concatenated.append(out)
        elif name in _ARITHMETIC:
            self.count += any(a is c for a in args for c in self.concatenated)
        return out


@pytest.mark.parametrize("fold", [True, False])
def test_densenet_multiplies_a_concatenation_in_at_its_parts(fold: bool):
    """BatchNorm-epsilon after each concatenation multiplies by its input x. Folded, x reaches the
    concatenation's parts as themselves and is multiplied in at each part's width, once per
    image; as the rule is written, every dense layer multiplies its whole concatenated input."""
    counter = _ArithmeticOnConcatenations()
    with torch.no_grad(), counter:
        Explainer(_model("densenet121"), [LRP("epsilon-plus-flat-bn")], fold_factors=fold).double()(_image(), TARGETS)
    if fold:
        assert counter.count == 0
    else:
        assert counter.count >= 58  # one per dense layer at least


GEOMETRIES = {  # (in, out, kernel, stride, padding, groups, dilation, uniform weights)
    "depthwise": (8, 8, 3, 1, 1, 8, 1, False),
    "grouped": (8, 16, 3, 1, 1, 4, 1, False),
    "depthwise-5x5": (6, 6, 5, 1, 2, 6, 1, False),
    "depthwise-dilated": (8, 8, 3, 1, 2, 8, 2, False),
    "depthwise-strided": (8, 8, 3, 2, 1, 8, 1, False),
    "uniform-strided": (3, 16, 7, 2, 3, 1, 1, True),
    "uniform": (4, 6, 3, 1, 1, 1, 1, True),
}


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_convolution_maps_and_their_vjps_equal_autograd(geometry: str):
    c_in, c_out, kernel, stride, padding, groups, dilation, uniform = GEOMETRIES[geometry]
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, groups=groups).double()
    weight = torch.full_like(conv.weight, 0.7) if uniform else conv.weight.detach()
    conv_map = ConvMap(conv, weight, conv.bias)
    assert conv_map.uniform == uniform and conv_map.as_conv == (stride == 1)
    x = torch.randn(2, c_in, 13, 14, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, weight, conv.bias, stride, padding, dilation, groups)
    g = torch.randn(2, 3, *y.shape[1:], dtype=torch.float64)
    expected = torch.stack([torch.autograd.grad(y, x, g[:, k], retain_graph=True)[0] for k in range(3)], 1)
    torch.testing.assert_close(conv_map(x), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv_map.vjp(g, x.shape), expected, rtol=1e-12, atol=1e-12)
