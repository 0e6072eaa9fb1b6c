"""The in-graph explanations against independent implementations.

Gradients against torch.autograd; the Grad-CAM family against pytorch-grad-cam; every
LRP composite against Zennit configured with the same rules; conservation; K classes in
one call against K single calls.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from chexplain.explain import COMPOSITES, LRP, Explainer, GradCAM, UnsupportedOperator
from chexplain.explain.references import pytorch_grad_cam, zennit_composite, zennit_lrp
from chexplain.grammar import DEFAULT_LRP_COMPOSITE
from chexplain.models.zoo import seeded_model
from chexplain.runtime import preprocess, read_radiograph
from chexplain.runtime.manifest import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

from helpers import IMAGES, SIIM

TARGETS = torch.tensor([[2, 10, 0]])  # Cardiomegaly, Pleural Effusion, No Finding


def _seeded(factory, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = factory(**kwargs)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.ReLU):
            module.inplace = False  # autograd hooks and Zennit need the stored activations intact
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def radiograph_batch() -> torch.Tensor:
    prep = Preprocessing()
    images = [preprocess(read_radiograph(p).pixels, prep)[0] for p in (IMAGES / "00013125_000.png", SIIM)]
    return torch.from_numpy(np.stack(images))


@pytest.fixture(scope="module")
def densenet() -> nn.Module:
    return seeded_model()[0]


def _autograd(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
    """d logit / d (input, layer outputs) per class, [B, K, ...] each, by torch.autograd."""
    modules = dict(model.named_modules())
    stored: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: stored.__setitem__(n, o)) for n in layers]
    x = x.clone().requires_grad_()
    logits = model(x)
    for hook in hooks:
        hook.remove()
    per_class = []
    for k in range(targets.shape[1]):
        chosen = logits.gather(1, targets[:, k:k + 1]).sum()
        per_class.append(torch.autograd.grad(chosen, [x] + [stored[n] for n in layers], retain_graph=True))
    return [torch.stack([g[i] for g in per_class], 1) for i in range(len(layers) + 1)]


@pytest.mark.parametrize(
    ("factory", "layers"),
    [
        ("densenet121", ["features.pool0", "features.transition2.pool", "features.denseblock4.denselayer16.conv2"]),
        ("resnet18", ["maxpool", "layer2.0.conv2", "layer4"]),
        ("resnet50", ["layer1.0.conv3", "layer3"]),
        ("vgg16_bn", ["features.6", "features.33", "avgpool"]),
    ],
)
def test_gradient_rules_equal_autograd(factory: str, layers: list[str], radiograph_batch: torch.Tensor):
    model = seeded_model()[0] if factory == "densenet121" else _seeded(getattr(torchvision.models, factory), num_classes=14)
    explainer = Explainer(model, [])
    with torch.no_grad():
        ours = explainer.class_gradients(radiograph_batch, TARGETS.expand(2, -1), layers)
        ours_input = explainer.class_gradients(radiograph_batch, TARGETS.expand(2, -1))["input"]
    reference = _autograd(model, radiograph_batch, TARGETS.expand(2, -1), layers)
    for name, mine, theirs in zip(["input", *layers], [ours_input, *(ours[n] for n in layers)], reference):
        scale = theirs.abs().max()
        assert scale > 0
        assert (mine - theirs).abs().max() <= 1e-5 * scale, name


def _normalised_as_pytorch_grad_cam(raw: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam min-max scales per layer at the input size, then once more after aggregation."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(raw, (224, 224)))


@pytest.mark.parametrize("variant", ["gradcam", "gradcam++", "hirescam", "layercam"])
def test_cam_variants_equal_pytorch_grad_cam_on_torchvision_densenet(variant: str, densenet: nn.Module, radiograph_batch):
    """Same weights in torchvision's DenseNet (in-place ReLU after norm5) and in chexplain's."""
    torchvision_model = torchvision.models.densenet121(num_classes=14).eval()
    torchvision_model.load_state_dict(densenet.state_dict())
    x = radiograph_batch[:1]
    classes = TARGETS[0].tolist()
    theirs = pytorch_grad_cam(torchvision_model, torchvision_model.features.norm5, variant, x, classes)[0]
    with torch.no_grad():
        raw = Explainer(densenet, [GradCAM("features.norm5", variant)])(x, TARGETS)["gradcam"][0].numpy()
    assert raw.shape == (3, 7, 7) and raw.min() >= 0
    np.testing.assert_allclose(_normalised_as_pytorch_grad_cam(raw), theirs, atol=1e-4)


def test_cam_on_resnet_layer4_equals_pytorch_grad_cam(radiograph_batch):
    model = _seeded(torchvision.models.resnet18, num_classes=14)
    x = radiograph_batch[1:]
    theirs = pytorch_grad_cam(model, model.layer4, "gradcam", x, TARGETS[0].tolist())[0]
    with torch.no_grad():
        raw = Explainer(model, [GradCAM("layer4")])(x, TARGETS)["gradcam"][0].numpy()
    np.testing.assert_allclose(_normalised_as_pytorch_grad_cam(raw), theirs, atol=1e-4)


def _bounds() -> tuple[tuple[float, ...], tuple[float, ...]]:
    low = tuple((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    high = tuple((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    return low, high


def _relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    return _seeded(torchvision.models.vgg16_bn, num_classes=14)


# VGG16-BN at full size takes tens of seconds per composite: the full suite's (the quick lane
# holds the rules to the textbook on tiny layers, test_rules_textbook.py, and DenseNet121 to Zennit)
FULL_SIZE_VGG = pytest.param("vgg16_bn", marks=pytest.mark.slow)


@pytest.mark.parametrize("composite", [c if c == DEFAULT_LRP_COMPOSITE else pytest.param(c, marks=pytest.mark.slow)
                                       for c in COMPOSITES])  # the quick lane: the default composite
@pytest.mark.parametrize("architecture", ["densenet121", FULL_SIZE_VGG])
def test_lrp_composites_equal_zennit_in_float64(composite: str, architecture: str, densenet, vgg, radiograph_batch):
    model = (densenet if architecture == "densenet121" else vgg)

    model64 = copy.deepcopy(model).double()
    x = radiograph_batch[:1].double()
    method = LRP(composite, epsilon=1.0, bounds=_bounds())
    explainer = Explainer(model64, [method]).double()
    with torch.no_grad():
        ours = explainer(x, TARGETS)["lrp"]
    first_stride = next(m for m in model64.modules() if isinstance(m, nn.Conv2d)).stride  # the smooth rule's tent
    theirs = zennit_lrp(model64, zennit_composite(composite, 1.0, _bounds(), torch.float64, first_stride), x,
                        TARGETS[0].tolist())
    assert torch.isfinite(ours).all() and theirs.abs().sum() > 0
    assert _relative_l2(ours, theirs) <= 1e-4, composite


def _zennit_merge(pairs: list[tuple[str, str]]):
    """Zennit's MergeBatchNorm applied to the named (conv, batchnorm) pairs."""
    from zennit.canonizers import MergeBatchNorm

    class NamedPairs(MergeBatchNorm):
        def apply(self, root_module):
            modules = dict(root_module.named_modules())
            instances = []
            for conv, norm in pairs:
                instance = NamedPairs()
                instance.register([modules[conv]], modules[norm])
                instances.append(instance)
            return instances

    return NamedPairs()


@pytest.mark.slow  # full-size DenseNet121 and VGG16-BN in float64 against Zennit
@pytest.mark.parametrize("composite", ["epsilon-plus", "alpha2beta1"])
@pytest.mark.parametrize("architecture", ["densenet121", FULL_SIZE_VGG])
def test_merged_batchnorm_equals_zennit_canonizer(composite: str, architecture: str, densenet, vgg, radiograph_batch):
    model64 = copy.deepcopy(densenet if architecture == "densenet121" else vgg).double()
    x = radiograph_batch[1:].double()
    explainer = Explainer(model64, [LRP(composite, epsilon=1.0)], merge_batchnorm=True).double()
    pairs = [(conv.target, norm.target) for conv, norm in explainer.merged]
    assert len(pairs) == (1 + 58 if architecture == "densenet121" else 13)  # conv0 + every conv1->norm2; VGG: all
    with torch.no_grad():
        ours = explainer(x, TARGETS)
        plain = Explainer(model64, []).double()(x, TARGETS)
    # the same function, up to the 1/sqrt(1 + eps) each neutralised BatchNorm leaves (as in Zennit)
    torch.testing.assert_close(ours["logits"], plain["logits"], rtol=1e-3, atol=1e-4)
    composite_object = zennit_composite(composite, 1.0, _bounds(), torch.float64)
    composite_object.canonizers = [_zennit_merge(pairs)]
    theirs = zennit_lrp(model64, composite_object, x, TARGETS[0].tolist())
    assert _relative_l2(ours["lrp"], theirs) <= 1e-4


def test_conservation_of_relevance(densenet, radiograph_batch):
    """z: the input relevance sums to the logit (BatchNorm shifts pass, biases are zero); epsilon absorbs some."""
    with torch.no_grad():
        out = Explainer(densenet, [LRP("z"), LRP("epsilon", epsilon=1.0)])(radiograph_batch, TARGETS.expand(2, -1))
    logits = out["logits"].gather(1, TARGETS.expand(2, -1))
    torch.testing.assert_close(out["lrp/z"].sum((-2, -1)), logits, rtol=1e-3, atol=1e-4)
    kept = (out["lrp/epsilon"].sum((-2, -1)) / logits)
    assert (kept.abs() < 1).all()  # epsilon (and the BatchNorm shifts it passes over) absorb a share


def test_k_classes_in_one_call_equal_k_single_calls(densenet, radiograph_batch):
    explainer = Explainer(densenet, [GradCAM(), GradCAM(variant="hirescam"), LRP("epsilon")])
    with torch.no_grad():
        together = explainer(radiograph_batch, TARGETS.expand(2, -1))
        for k in range(TARGETS.shape[1]):
            single = explainer(radiograph_batch, TARGETS.expand(2, -1)[:, k:k + 1])
            for key in ("gradcam/gradcam", "gradcam/hirescam", "lrp", "targets"):
                torch.testing.assert_close(together[key][:, k:k + 1], single[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # every composite and CAM variant on the full-size DenseNet121
def test_no_nan_or_inf_with_default_settings(densenet, radiograph_batch):
    methods = [LRP(name, bounds=_bounds()) for name in COMPOSITES] + [GradCAM(variant=v) for v in
                                                                        ("gradcam", "gradcam++", "hirescam", "layercam", "guided-gradcam")]
    with torch.no_grad():
        out = Explainer(densenet, methods)(radiograph_batch, TARGETS.expand(2, -1))
    for key, value in out.items():
        assert torch.isfinite(value).all(), key
    assert not torch.equal(out["lrp/epsilon"][0], out["lrp/epsilon"][1])  # two radiographs, two maps


def test_unknown_operator_fails_at_build_time_naming_the_node():
    class WithElu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.ELU()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.act(self.conv(x)).mean((2, 3)))

    with pytest.raises(UnsupportedOperator, match="ELU at node 'act'"):
        Explainer(WithElu(), [LRP()])


def test_output_names_and_shapes(densenet, radiograph_batch):
    with torch.no_grad():
        out = Explainer(densenet, [GradCAM(), LRP("epsilon")])(radiograph_batch, TARGETS.expand(2, -1))
    assert set(out) == {"probabilities", "logits", "targets", "gradcam", "lrp"}
    assert out["gradcam"].shape == (2, 3, 7, 7) and out["lrp"].shape == (2, 3, 224, 224)
    torch.testing.assert_close(out["probabilities"], torch.sigmoid(out["logits"]))


def test_in_place_relus_leave_the_explanation_unchanged(radiograph_batch):
    """torchvision's ReLU(inplace=True) and F.relu(..., inplace=True) run out of place in the explainer."""
    reference = _seeded(torchvision.models.resnet18, num_classes=14)
    in_place = copy.deepcopy(reference)
    for module in in_place.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = True
    methods = [GradCAM("layer3"), LRP("epsilon")]
    with torch.no_grad():
        expected = Explainer(reference, methods)(radiograph_batch, TARGETS.expand(2, -1))
        got = Explainer(in_place, methods)(radiograph_batch, TARGETS.expand(2, -1))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


@pytest.mark.slow
def test_a_composite_of_your_own_rules_equalszennit_lrp(radiograph_batch):
    """Rules no named composite uses together (w-square first, z+ convolutions, epsilon 0.5 head) on VGG16-BN."""
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.rules import Epsilon as ZEpsilon
    from zennit.rules import Norm, Pass
    from zennit.rules import WSquare as ZWSquare
    from zennit.rules import ZPlus as ZZPlus
    from zennit.types import Activation, AvgPool, BatchNorm

    from chexplain.explain import Composite
    from chexplain.explain.rules import Epsilon, WSquare, ZPlus

    model = copy.deepcopy(_seeded(torchvision.models.vgg16_bn, num_classes=14)).double()
    x = radiograph_batch[:1].double()
    mine = Composite("wsquare-first", conv=ZPlus(), linear=Epsilon(0.5), first=WSquare())
    with torch.no_grad():
        ours = Explainer(model, [LRP(mine)]).double()(x, TARGETS)["lrp"]
    theirs = zennit_lrp(model, SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (AvgPool, Norm()), (BatchNorm, Pass()), (nn.Conv2d, ZZPlus()), (nn.Linear, ZEpsilon(0.5))],
        first_map=[((nn.Conv2d, nn.Linear), ZWSquare())]), x, TARGETS[0].tolist())
    assert _relative_l2(ours, theirs) <= 1e-4
