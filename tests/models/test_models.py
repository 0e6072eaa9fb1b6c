"""The model zoo: torchvision-compatible DenseNet121 and the checkpoint loaders round-trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from chexplain.errors import CheckpointError, ConfigError
from chexplain.models import DenseNet, build_densenet, load_checkpoint, save_checkpoint
from chexplain.models.checkpoints import XRV_SLOTS
from chexplain.models.zoo import seeded_model
from chexplain.runtime.manifest import CHEXPERT_CLASSES, Manifest


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 224, 224)


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so loaders that drop them would be caught."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


def test_parameter_names_and_shapes_equal_torchvision():
    ours = build_densenet("densenet121", num_classes=14).state_dict()
    theirs = torchvision.models.densenet121(num_classes=14).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_torchvision_state_dict_round_trips(tmp_path: Path, x: torch.Tensor):
    torch.manual_seed(0)
    source = _randomise_batchnorm(torchvision.models.densenet121(num_classes=14))
    torch.save(source.state_dict(), tmp_path / "tv.pth")
    model, manifest = load_checkpoint(tmp_path / "tv.pth")
    assert manifest.weights.source == "torchvision" and manifest.classes == CHEXPERT_CLASSES
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-5)


def test_torchvision_imagenet_head_is_replaced_and_backbone_kept(tmp_path: Path, x: torch.Tensor):
    source = _randomise_batchnorm(torchvision.models.densenet121())
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    model, manifest = load_checkpoint(tmp_path / "imagenet.pth")
    assert model.classifier.out_features == 14
    assert "untrained" in manifest.weights.training_data
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), source.features(x), rtol=1e-5, atol=1e-5)


def _xrv_model() -> nn.Module:
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(0)
    return _randomise_batchnorm(xrv.models.DenseNet(weights=None, num_classes=len(XRV_SLOTS)))


def test_torchxrayvision_weights_map_classes_by_name(tmp_path: Path):
    source = _xrv_model()
    torch.save(source.state_dict(), tmp_path / "xrv-chex.pt")
    model, manifest = load_checkpoint(tmp_path / "xrv-chex.pt", xrv_weights="densenet121-res224-chex")
    assert manifest.weights.source == "torchxrayvision"
    assert manifest.preprocessing.channels == 1 and manifest.preprocessing.crop == "center"
    assert manifest.missing_classes == ("No Finding", "Pleural Other", "Support Devices")
    assert "Pleural Effusion" in manifest.classes and len(manifest.classes) == 11
    x = torch.randn(2, 1, 224, 224) * 500
    with torch.no_grad():
        expected = source(x)
        got = model(x)
    for i, cls in enumerate(manifest.classes):
        slot = XRV_SLOTS.index("Effusion" if cls == "Pleural Effusion" else cls)
        torch.testing.assert_close(got[:, i], expected[:, slot], rtol=1e-4, atol=1e-4)


def test_pickled_torchxrayvision_model_needs_trust(tmp_path: Path):
    source = _xrv_model()
    torch.save(source, tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects.*--trust-pickle"):
        load_checkpoint(tmp_path / "whole.pt")
    model, manifest = load_checkpoint(tmp_path / "whole.pt", trust_pickle=True, xrv_weights="nih")
    assert manifest.missing_classes and "Lung Opacity" in manifest.missing_classes  # not trained in 'nih'


class _CheXNet(nn.Module):
    """The CheXNet layout: a torchvision DenseNet121 under `densenet121`, Linear+Sigmoid head."""

    def __init__(self) -> None:
        super().__init__()
        self.densenet121 = torchvision.models.densenet121()
        self.densenet121.classifier = nn.Sequential(nn.Linear(1024, 14), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.densenet121(x)


def test_chexnet_prefixes_and_old_key_names_round_trip(tmp_path: Path, x: torch.Tensor):
    torch.manual_seed(0)
    source = _CheXNet()
    _randomise_batchnorm(source)
    old_style = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.")
    state = {"module." + old_style.sub(r"\1.\2.", k): v for k, v in source.state_dict().items()}
    assert any(".norm.1." in k for k in state)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "chexnet.pth.tar")
    model, manifest = load_checkpoint(tmp_path / "chexnet.pth.tar")
    assert manifest.weights.source == "chexnet"
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(model(x)), source(x), rtol=1e-5, atol=1e-5)


def test_chexplain_checkpoint_round_trip_fp32_and_fp16(tmp_path: Path, x: torch.Tensor):
    model, manifest = seeded_model()
    save_checkpoint(model, manifest, tmp_path / "m.pt")
    save_checkpoint(model, manifest, tmp_path / "m16.pt", half=True)
    loaded, loaded_manifest = load_checkpoint(tmp_path / "m.pt")
    loaded16, _ = load_checkpoint(tmp_path / "m16.pt")
    assert loaded_manifest.classes == manifest.classes and loaded_manifest.is_demo
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded16(x), model(x), rtol=0, atol=5e-2)


def test_wrong_class_count_and_garbage_files_are_explained(tmp_path: Path):
    torch.save(torchvision.models.densenet121(num_classes=5).state_dict(), tmp_path / "five.pth")
    with pytest.raises(CheckpointError, match="5 outputs; name them"):
        load_checkpoint(tmp_path / "five.pth")
    model, manifest = load_checkpoint(tmp_path / "five.pth", source_classes=["Atelectasis", "Mass", "Effusion", "Hernia", "Edema"])
    assert manifest.classes == ("Edema", "Atelectasis", "Pleural Effusion")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_seeded_model_is_deterministic_and_says_so(x: torch.Tensor):
    a, manifest = seeded_model()
    b, _ = seeded_model()
    assert isinstance(a, DenseNet) and manifest.is_demo
    assert "SEEDED RANDOM WEIGHTS" in manifest.banner() and "NOT FOR CLINICAL USE" in manifest.banner()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_a_seeded_vit_gets_a_head_that_tells_classes_apart(tmp_path: Path):
    """torchvision zero-initialises ViT's head: as a stand-in (seeded, or an ImageNet backbone with a
    new head) every logit would be 0 and every map empty."""
    model, _ = seeded_model(name="vit", architecture="vit_b_16")
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert logits.std() > 0.05
    torch.save(torchvision.models.vit_b_16(num_classes=1000).state_dict(), tmp_path / "imagenet.pth")
    assert load_checkpoint(tmp_path / "imagenet.pth", arch="vit_b_16")[0].heads.head.weight.std() > 0.01


def test_manifest_json_round_trip():
    manifest = seeded_model()[1]
    assert Manifest.from_json(manifest.to_json()) == manifest
    with pytest.raises(ConfigError, match="unknown classes"):
        Manifest(name="x", thresholds={"Hernia": 0.3})


@pytest.mark.parametrize(("architecture", "head"), [("efficientnet_b0", "classifier.1"),
                                                    ("mobilenet_v3_small", "classifier.3"),
                                                    ("squeezenet1_1", "classifier.1")])
def test_checkpoints_of_other_architectures_load_by_arch(architecture: str, head: str, tmp_path: Path):
    """A 14-class state dict of each layout (MobileNetV3's head has a classifier.0 too: never renamed)."""
    torch.manual_seed(0)
    source = _randomise_batchnorm(torchvision.models.get_model(architecture, num_classes=14))
    torch.save(source.state_dict(), tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="--arch"):
        load_checkpoint(tmp_path / "m.pth")
    model, manifest = load_checkpoint(tmp_path / "m.pth", arch=architecture)
    assert manifest.architecture == architecture and manifest.classes == CHEXPERT_CLASSES
    assert model.get_submodule(head).weight.shape[0] == 14
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-5)


def test_an_imagenet_resnet_gets_a_seeded_head_and_a_named_one_its_classes(tmp_path: Path):
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "imagenet.pth")
    model, manifest = load_checkpoint(tmp_path / "imagenet.pth", arch="resnet18")
    assert model.fc.out_features == 14 and "untrained" in manifest.weights.training_data
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "three.pth")
    model, manifest = load_checkpoint(tmp_path / "three.pth", arch="resnet18",
                                      source_classes=["Mass", "Cardiomegaly", "Effusion"])
    assert manifest.classes == ("Cardiomegaly", "Pleural Effusion") and model.fc.out_features == 2
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet7'"):
        load_checkpoint(tmp_path / "three.pth", arch="resnet7")


def test_torchxrayvision_resnet50_keeps_its_512_pixel_single_channel_preprocessing(tmp_path: Path):
    """TorchXRayVision's resnet50-res512-all layout: torchvision's ResNet50 with a one-channel conv1
    and 18 slots, two of them untrained."""
    torch.manual_seed(0)
    source = torchvision.models.resnet50(num_classes=len(XRV_SLOTS))
    source.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    source = _randomise_batchnorm(source)
    state = {**source.state_dict(), "op_threshs": torch.rand(len(XRV_SLOTS))}
    torch.save(state, tmp_path / "resnet50-res512-all.pt")
    model, manifest = load_checkpoint(tmp_path / "resnet50-res512-all.pt", arch="resnet50")
    assert manifest.weights.source == "torchxrayvision" and "resnet50-res512-all" in manifest.weights.training_data
    assert manifest.preprocessing.size == (512, 512) and manifest.preprocessing.channels == 1
    assert set(manifest.missing_classes) >= {"Lung Lesion", "Enlarged Cardiomediastinum"}
    assert "Pneumothorax" in manifest.classes and model.conv1.in_channels == 1
    x = torch.randn(1, 1, 128, 128) * 500
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, manifest.classes.index("Pneumothorax")],
                                   source(x)[:, XRV_SLOTS.index("Pneumothorax")], rtol=1e-4, atol=1e-4)


def test_an_architecture_by_name_is_seeded_and_says_so():
    from chexplain.models.zoo import load_model

    model, manifest = load_model("shufflenet_v2_x0_5")
    again, _ = load_model("shufflenet_v2_x0_5")
    assert manifest.architecture == "shufflenet_v2_x0_5" and manifest.is_demo
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x), rtol=0, atol=0)


def test_a_timm_checkpoint_loads_by_timm_name(tmp_path: Path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    source = _randomise_batchnorm(timm.create_model("efficientnet_b0", pretrained=False, num_classes=14))
    torch.save(source.state_dict(), tmp_path / "timm.pth")
    model, manifest = load_checkpoint(tmp_path / "timm.pth", arch="timm/efficientnet_b0")
    assert manifest.architecture == "timm/efficientnet_b0" and manifest.classes == CHEXPERT_CLASSES
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="timm has no model 'efficientnet_b99'"):
        load_checkpoint(tmp_path / "timm.pth", arch="timm/efficientnet_b99")
