"""The classification architectures chexplain builds, explains and exports, by torchvision name,
or ``timm/<name>`` for a timm model.

Each entry says where its classifier head and first convolution live (to give a checkpoint a
head for the CheXpert classes or one input channel) and its Grad-CAM target layer: the last
spatial feature map, the module pytorch-grad-cam's documentation names for the family.
DenseNets are chexplain's own module-form DenseNet (models/densenet.py, torchvision's
parameter names); the others are torchvision's models as they are. A timm model says the
same of itself (its pretrained config's ``classifier`` and ``first_conv``, its last
``feature_info`` stage); whether its modules trace is for the explainer to find (docs/models.md,
"Models": which do).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MissingDependency, ModelNotFoundError
from .densenet import DENSENET_CONFIGS, build_densenet


@dataclass(frozen=True)
class Family:
    """Where a family keeps its head, its first convolution and its last spatial feature map."""

    name: str
    head: str  # the last layer of the classifier (Linear, or SqueezeNet's 1x1 Conv2d)
    first_conv: str
    target_layer: str
    members: tuple[str, ...]
    transformer: bool = False  # attention inside: LRP has no Zennit reference to compare or time against


FAMILIES = (
    Family("densenet", "classifier", "features.conv0", "features.norm5", tuple(DENSENET_CONFIGS)),
    Family("resnet", "fc", "conv1", "layer4",
           ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
            "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")),
    Family("efficientnet", "classifier.1", "features.0.0", "features",
           tuple(f"efficientnet_b{i}" for i in range(8)) + ("efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l")),
    Family("mobilenet_v3", "classifier.3", "features.0.0", "features", ("mobilenet_v3_small", "mobilenet_v3_large")),
    Family("mobilenet_v2", "classifier.1", "features.0.0", "features", ("mobilenet_v2",)),
    Family("regnet", "fc", "stem.0", "trunk_output",
           tuple(f"regnet_{kind}_{size}" for kind in ("x", "y")
                 for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")) + ("regnet_y_128gf",)),
    Family("convnext", "classifier.2", "features.0.0", "features",
           ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large")),
    Family("shufflenet", "fc", "conv1.0", "conv5",
           ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")),
    Family("squeezenet", "classifier.1", "features.0", "features", ("squeezenet1_0", "squeezenet1_1")),
    Family("vgg", "classifier.6", "features.0", "features",
           tuple(f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn"))),
    # Vision transformers: Grad-CAM at the last block's first LayerNorm, the last place where every
    # patch token still matters for the class token (pytorch-grad-cam's choice), on the patch grid.
    *(Family("vit", "heads.head", "conv_proj", f"encoder.layers.encoder_layer_{depth - 1}.ln_1", members, True)
      for depth, members in ((12, ("vit_b_16", "vit_b_32")), (24, ("vit_l_16", "vit_l_32")), (32, ("vit_h_14",)))),
    # Swin: the last stage's normalised tokens, laid out channels first by the model's own permute
    Family("swin", "head", "features.0.0", "permute", ("swin_t", "swin_s", "swin_b"), True),
)
ARCHITECTURES: dict[str, Family] = {name: family for family in FAMILIES for name in family.members}
TIMM_PREFIX = "timm/"


@functools.cache
def _timm_family(architecture: str) -> Family:
    try:
        import timm
    except ImportError:
        raise MissingDependency(f"{architecture} needs timm: pip install timm") from None
    name = architecture.removeprefix(TIMM_PREFIX)
    if not timm.is_model(name):
        raise ModelNotFoundError(f"unknown architecture {architecture!r}: timm has no model {name!r}")
    model = timm.create_model(name, pretrained=False, num_classes=1)
    config = model.pretrained_cfg
    layer = model.feature_info[-1]["module"]
    if getattr(model, "global_pool", None) == "token" and hasattr(model.get_submodule(layer), "norm1"):
        layer += ".norm1"  # a class-token ViT: after its last block only the class token reaches the head
    transformer = any(hasattr(module, "fused_attn") for module in model.modules())  # timm's attention modules
    return Family("timm", config["classifier"], config["first_conv"], layer, (architecture,), transformer)


def family_of(architecture: str) -> Family:
    if architecture.startswith(TIMM_PREFIX):
        return _timm_family(architecture)
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        raise ModelNotFoundError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)} "
                         f"and {TIMM_PREFIX}<name> for timm's") from None


def default_layer(architecture: str) -> str:
    """The Grad-CAM target layer of an architecture: its last spatial feature map."""
    return family_of(architecture).target_layer


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def build(architecture: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """An architecture with ``num_classes`` outputs and ``in_channels`` input channels, randomly
    initialised as torchvision initialises it (seed it first for reproducible weights)."""
    family = family_of(architecture)
    if family.name == "densenet":
        return build_densenet(architecture, num_classes=num_classes, in_channels=in_channels)
    if family.name == "timm":
        import timm

        return timm.create_model(architecture.removeprefix(TIMM_PREFIX), pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels)
    import torchvision

    model = torchvision.models.get_model(architecture, weights=None, num_classes=num_classes)
    if in_channels != 3:
        first = model.get_submodule(family.first_conv)
        _replace(model, family.first_conv, nn.Conv2d(
            in_channels, first.out_channels, first.kernel_size, first.stride, first.padding, first.dilation,
            first.groups, first.bias is not None))
    return model


def head_parameters(architecture: str) -> tuple[str, str]:
    """The state-dict keys of the head's weight and bias."""
    head = family_of(architecture).head
    return f"{head}.weight", f"{head}.bias"


def draw_zeroed_head(model: nn.Module, architecture: str) -> None:
    """torchvision zero-initialises ViT's head (training learns from there); untrained, every logit
    would be 0 and every map empty, so such a head is drawn as timm draws heads (std 0.02)."""
    weight = model.get_parameter(head_parameters(architecture)[0])
    if not weight.any():
        with torch.no_grad():
            nn.init.trunc_normal_(weight, std=0.02)


def in_channels_of(architecture: str, state: dict[str, torch.Tensor]) -> int:
    return int(state[f"{family_of(architecture).first_conv}.weight"].shape[1])
