"""A CAM at any layer a user names: the channel axis followed through the trace (channels first,
channels last, tokens), equal to pytorch-grad-cam with the reshape transform that layer needs, or
a refusal that names the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from chexplain.errors import ConfigError
from chexplain.explain import Explainer, GradCAM
from chexplain.explain.layouts import _reshaped
from chexplain.explain.references import channels_last, pytorch_grad_cam
from chexplain.runtime import preprocess, read_radiograph
from chexplain.runtime.manifest import Preprocessing

from calibrated import calibrated, small_swin
from helpers import IMAGES

TARGETS = torch.tensor([[2, 10, 0]])


def _radiograph(size: int) -> torch.Tensor:
    pixels = read_radiograph(IMAGES / "00013125_000.png").pixels
    return torch.from_numpy(preprocess(pixels, Preprocessing(size=(size, size)))[0][None])


def _normalised(raw: np.ndarray, size: int) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(raw, (size, size)))


def _assert_equal_to_pytorch_grad_cam(model: nn.Module, layer: str, size: int, reshape_transform) -> np.ndarray:
    x = _radiograph(size)
    with torch.no_grad():
        raw = Explainer(model, [GradCAM(layer)])(x, TARGETS)["gradcam"][0].numpy()
    theirs = pytorch_grad_cam(model, model.get_submodule(layer), "gradcam", x, TARGETS[0].tolist(),
                              reshape_transform=reshape_transform)[0]
    assert raw.ndim == 3 and raw.shape[1] == raw.shape[2] and raw.max() > 0  # [K, h, w]: a map over the grid
    np.testing.assert_allclose(_normalised(raw, size), theirs, atol=1e-4, err_msg=layer)
    return raw


@pytest.mark.parametrize("layer", ["features.1", "features.2", "features.3", "features.3.1.mlp"])
def test_swin_stages_are_channels_last(layer: str):
    """``features.N`` as pytorch-grad-cam's Swin tutorial names it: [B, H, W, C] (before, the CAM was
    taken over the wrong axes: maps [K, W, C])."""
    _assert_equal_to_pytorch_grad_cam(small_swin(torch.float32), layer, 36, channels_last)


def test_convnext_blocks_between_their_permutes_are_channels_last():
    model = calibrated("convnext_tiny", dtype=torch.float32, size=64)
    for layer in ("features.1.0.block.3", "features.5.2.block.5"):  # LayerNorm's and the second Linear's output
        _assert_equal_to_pytorch_grad_cam(model, layer, 64, channels_last)
    _assert_equal_to_pytorch_grad_cam(model, "features.5.2.block.0", 64, lambda t: t)  # the depthwise conv: channels first


def test_a_timm_nhwc_stage():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    # conv_mlp=False: each block's norm and MLP run on [B, H, W, C] between two permutes (timm's ConvNeXt-T and up)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=14, conv_mlp=False).eval()
    _assert_equal_to_pytorch_grad_cam(model, "stages.2.blocks.0.mlp", 64, channels_last)
    _assert_equal_to_pytorch_grad_cam(model, "stages.2.blocks.0.conv_dw", 64, lambda t: t)


def test_a_layer_without_a_feature_map_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"layer 'flatten': .*\(layout BC\).* layers with a feature map: .*norm"):
        Explainer(small_swin(torch.float32), [GradCAM("flatten")])(_radiograph(36), TARGETS)


def test_reshapes_keep_the_roles_they_can():
    assert _reshaped("BCHW", (16, 9, 9), (16, 81)) == "BCN"  # flatten(2): a ViT's patches
    assert _reshaped("BNC", (49, 32), (7, 7, 32)) == "BHWC"  # tokens back on their grid
    assert _reshaped("BCHW", (32, 1, 1), (32,)) == "BC"  # a pooled map flattened
    assert _reshaped("BCHW", (16, 9, 9), (1296,)) is None  # channels and positions mixed
    assert _reshaped("BCHW", (24, 8, 8), (2, 12, 8, 8)) == "BccHW"  # ShuffleNet's channel groups ...
    assert _reshaped("BccHW", (12, 2, 8, 8), (24, 8, 8)) == "BCHW"  # ... shuffled and merged back
    assert _reshaped("BNC", (49, 32), (49, 4, 8)) == "BNcc"  # a channel axis split into heads: no feature map
