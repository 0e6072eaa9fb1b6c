"""The CNN families beyond DenseNet, ResNet and VGG against independent implementations.

Gradients against torch.autograd at several layers; the Grad-CAM family against
pytorch-grad-cam at each family's default layer on a real radiograph; LRP against Zennit on
the same model rewritten so Zennit's module rules see what chexplain's rules see (Sum modules
for additions, detached gates, LayerNorm with its std detached: explain/references.py), in
float64; relevance conservation where the rules conserve.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn

from chexplain.explain import LRP, Explainer, GradCAM
from chexplain.explain.references import pytorch_grad_cam, zennit_composite, zennit_lrp, zennit_model
from chexplain.models.architectures import default_layer
from chexplain.runtime import preprocess, read_radiograph
from chexplain.runtime.manifest import Preprocessing

from calibrated import calibrated
from helpers import IMAGES

TARGETS = torch.tensor([[2, 10, 0]])
# Per family: layers inside the blocks the new rules serve (squeeze-excitation gates, depthwise
# convolutions, LayerNorm between permutes, channel shuffles and chunks, ceil-mode pooling).
LAYERS = {
    "efficientnet_b0": ["features.2", "features.5.0.block.2", "features.7"],
    "mobilenet_v3_small": ["features.4", "features.9.block.2", "features"],
    "regnet_y_400mf": ["trunk_output.block2", "trunk_output.block4.block4-1.f.se", "trunk_output"],
    "convnext_tiny": ["features.1", "features.5.2.block.3", "features"],
    "shufflenet_v2_x0_5": ["stage2", "stage4", "conv5"],
    "squeezenet1_1": ["features.3", "features.12"],
    "mobilenet_v2": ["features.5", "features"],
}
CAM_FAMILIES = ["efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf", "convnext_tiny", "shufflenet_v2_x0_5"]
BOUNDS = ((-2.1, -2.0, -1.8), (2.2, 2.4, 2.6))


@functools.cache
def _model(architecture: str, dtype: torch.dtype = torch.float64, size: int = 64) -> nn.Module:
    """One calibrated model per architecture for the module (the tests copy before they change it)."""
    return calibrated(architecture, dtype=dtype, size=size)


@pytest.fixture(scope="module")
def radiograph() -> torch.Tensor:
    prep = Preprocessing()
    return torch.from_numpy(preprocess(read_radiograph(IMAGES / "00013125_000.png").pixels, prep)[0][None])


def _autograd(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
    stored: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: stored.__setitem__(n, o)) for n in layers]
    x = x.clone().requires_grad_()
    logits = model(x)
    for hook in hooks:
        hook.remove()
    per_class = [torch.autograd.grad(logits.gather(1, targets[:, k:k + 1]).sum(), [x, *(stored[n] for n in layers)],
                                     retain_graph=True) for k in range(targets.shape[1])]
    return [torch.stack([g[i] for g in per_class], 1) for i in range(len(layers) + 1)]


@pytest.mark.parametrize("architecture", list(LAYERS))
def test_gradients_equal_autograd(architecture: str):
    model = _model(architecture)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([[2, 10, 0], [1, 3, 5]])
    explainer = Explainer(model, []).double()
    with torch.no_grad():
        ours = explainer.class_gradients(x, targets, LAYERS[architecture])
        ours_input = explainer.class_gradients(x, targets)["input"]
    reference = _autograd(model, x, targets, LAYERS[architecture])
    for name, mine, theirs in zip(["input", *LAYERS[architecture]], [ours_input, *ours.values()], reference):
        assert theirs.abs().max() > 0
        assert (mine - theirs).abs().max() <= 1e-5 * theirs.abs().max(), (architecture, name)


def _normalised_as_pytorch_grad_cam(raw: np.ndarray, size: int) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(raw, (size, size)))


@pytest.mark.parametrize("architecture", CAM_FAMILIES)
def test_cams_at_the_default_layer_equal_pytorch_grad_cam(architecture: str, radiograph):
    model = _model(architecture, torch.float32, 224)
    layer = default_layer(architecture)
    variants = ["gradcam", "gradcam++", "hirescam", "layercam"]
    with torch.no_grad():
        ours = Explainer(model, [GradCAM(layer, v) for v in variants])(radiograph, TARGETS)
    for variant in variants:
        theirs = pytorch_grad_cam(model, model.get_submodule(layer), variant, radiograph, TARGETS[0].tolist())[0]
        raw = ours[f"gradcam/{variant}"][0].numpy()
        assert raw.max() > 0
        np.testing.assert_allclose(_normalised_as_pytorch_grad_cam(raw, 224), theirs, atol=1e-4, err_msg=variant)


@pytest.mark.slow  # every family in float64 against Zennit
@pytest.mark.parametrize("composite", ["epsilon", "alpha2beta1", "epsilon-plus-flat-bn"])
@pytest.mark.parametrize("architecture", list(LAYERS))
def test_lrp_equals_zennit_on_the_rewritten_model_in_float64(architecture: str, composite: str):
    model = _model(architecture)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ours = Explainer(model, [LRP(composite, epsilon=1.0, bounds=BOUNDS)]).double()(x, TARGETS)["lrp"]
    theirs = zennit_lrp(zennit_model(model, x), zennit_composite(composite, 1.0, BOUNDS, torch.float64), x,
                        TARGETS[0].tolist())
    assert torch.isfinite(ours).all() and theirs.abs().sum() > 0
    assert float((ours - theirs).norm() / theirs.norm()) <= 1e-4, (architecture, composite)


def _without_biases(model: nn.Module) -> nn.Module:
    """Every additive constant zeroed (conv, linear, BatchNorm and LayerNorm shifts): relevance then
    has nowhere to go but the input."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
            if getattr(module, "bias", None) is not None and isinstance(module.bias, torch.Tensor):
                module.bias.zero_()
    return model


@pytest.mark.parametrize("architecture", ["efficientnet_b0", "mobilenet_v3_small", "convnext_tiny",
                                          "shufflenet_v2_x0_5"])
def test_the_new_rules_conserve_relevance(architecture: str):
    """With no biases the z rule, Norm, the gating rule and LayerNorm's rule pass every bit of the
    logit to the input."""
    model = _without_biases(copy.deepcopy(_model(architecture)))
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = Explainer(model, [LRP("z")]).double()(x, TARGETS)
    logits = out["logits"][0, TARGETS[0]]
    np.testing.assert_allclose(out["lrp"].sum((2, 3))[0].numpy(), logits.numpy(), rtol=1e-4)


def test_in_place_activations_and_additions_leave_the_explanation_unchanged():
    """EfficientNet's SiLU(inplace=True) and ``result += input`` run out of place in the explainer."""
    reference = _model("efficientnet_b0", torch.float32)
    in_place = copy.deepcopy(reference)
    for module in in_place.modules():
        if hasattr(module, "inplace"):
            module.inplace = True
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    methods = [GradCAM("features.6"), LRP("epsilon-plus-flat-bn")]
    with torch.no_grad():
        expected = Explainer(reference, methods)(x, TARGETS)
        got = Explainer(in_place, methods)(x, TARGETS)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_an_operator_outside_the_rules_names_its_node():
    from chexplain.explain import UnsupportedOperator

    class Cumulative(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.cumsum(self.conv(x), 2).mean((2, 3)))

    with pytest.raises(UnsupportedOperator, match="cumsum at node 'cumsum'"):
        Explainer(Cumulative(), [GradCAM("conv")])


class _EveryOperator(nn.Module):
    """The operators no torchvision classifier above reaches: GELU's tanh form, tanh, adaptive max
    pooling to a grid, a mean with keepdim, split into uneven sections, integer and slice indexing,
    transpose, unsqueeze/squeeze and a Python-number product."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.gelu = nn.GELU(approximate="tanh")
        self.pool = nn.AdaptiveMaxPool2d(4)
        self.head = nn.Linear(12, 14)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.gelu(self.conv(x)))  # [B, 6, 4, 4]
        a, b = torch.split(y, [2, 4], dim=1)
        a = torch.tanh(a) * 0.5
        rows = b[:, 1:3].transpose(2, 3)[..., 1, :]  # [B, 2, 4]
        columns = a.mean(dim=3, keepdim=True).squeeze(3).unsqueeze(1)[:, 0]  # [B, 2, 4]
        token = b[:, 0]  # [B, 4, 4]
        features = torch.cat([rows, columns, token[:, :1, :]], dim=1).mean(2)  # [B, 5]
        return self.head(torch.cat([features, y.mean((2, 3))[:, :4], features[:, :3]], dim=1))


def test_every_other_operator_rule_equals_autograd():
    torch.manual_seed(0)
    model = _EveryOperator().double().eval()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    targets = torch.tensor([[2, 10, 0], [1, 3, 5]])
    explainer = Explainer(model, []).double()
    with torch.no_grad():
        ours = explainer.class_gradients(x, targets, ["conv", "pool"])
        ours_input = explainer.class_gradients(x, targets)["input"]
    reference = _autograd(model, x, targets, ["conv", "pool"])
    for name, mine, theirs in zip(["input", "conv", "pool"], [ours_input, *ours.values()], reference):
        assert theirs.abs().max() > 0
        assert (mine - theirs).abs().max() <= 1e-10 * theirs.abs().max(), name


TIMM = ["timm/efficientnet_b0", "timm/mobilenetv3_small_100"]


@pytest.mark.slow  # two timm families against autograd, Zennit and pytorch-grad-cam, at 224 x 224
@pytest.mark.parametrize("architecture", TIMM)
def test_timm_models_that_trace_are_explained_exactly(architecture: str, radiograph):
    """timm's BatchNormAct2d and Linear run functional batch_norm and linear: the rules see them as
    modules; gradients equal autograd, Grad-CAM pytorch-grad-cam, LRP Zennit (Pass on the BatchNorms:
    Zennit hooks BatchNormAct2d whole, activation included, which equals Pass then Pass)."""
    pytest.importorskip("timm")
    model = _model(architecture)
    layer = default_layer(architecture)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    targets = torch.tensor([[2, 10, 0], [1, 3, 5]])
    with torch.no_grad():
        ours = Explainer(model, []).double().class_gradients(x, targets, [layer])
    reference = _autograd(model, x, targets, [layer])
    assert (ours[layer] - reference[1]).abs().max() <= 1e-5 * reference[1].abs().max()
    with torch.no_grad():
        lrp = Explainer(model, [LRP("alpha2beta1")]).double()(x[:1], TARGETS)["lrp"]
    theirs = zennit_lrp(zennit_model(model, x[:1]), zennit_composite("alpha2beta1", dtype=torch.float64), x[:1],
                        TARGETS[0].tolist())
    assert float((lrp - theirs).norm() / theirs.norm()) <= 1e-4
    model32 = _model(architecture, torch.float32, 224)
    with torch.no_grad():
        raw = Explainer(model32, [GradCAM(layer)])(radiograph, TARGETS)["gradcam"][0].numpy()
    cams = pytorch_grad_cam(model32, model32.get_submodule(layer), "gradcam", radiograph, TARGETS[0].tolist())[0]
    np.testing.assert_allclose(_normalised_as_pytorch_grad_cam(raw, 224), cams, atol=1e-4)
