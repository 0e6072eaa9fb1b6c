"""One model of each CNN family exported with Grad-CAM and the default LRP: ONNX Runtime equals
PyTorch on real radiographs, the operators are ones TensorRT 10 parses, the manifest records the
architecture and its target layer; a ResNet50 and an EfficientNet checkpoint go through
`chexplain export --arch` and `chexplain explain` as DenseNet121 does."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

from chexplain.cli import main
from chexplain.export import export_model
from chexplain.export.precision import convert_precision
from chexplain.grammar import DEFAULT_LRP_COMPOSITE
from chexplain.models.architectures import default_layer
from chexplain.models.checkpoints import save_checkpoint
from chexplain.runtime import OnnxRuntimeBackend
from chexplain.runtime.manifest import Manifest, Preprocessing, Weights

from calibrated import calibrated
from helpers import IMAGES, SIIM
from tensorrt_operators import check_tensorrt_parsable

pytestmark = pytest.mark.slow

FAMILIES = ["mobilenet_v3_small", "regnet_y_400mf", "convnext_tiny", "shufflenet_v2_x0_5", "squeezenet1_1"]
SIZE = 128  # the shapes do not matter for parity; a small input keeps the exports quick


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, tmp_path_factory) -> tuple[str, dict]:
    """A calibrated model of the family as a chexplain checkpoint at 128 x 128, exported."""
    architecture = request.param
    root = tmp_path_factory.mktemp(architecture)
    manifest = Manifest(name=architecture, architecture=architecture, preprocessing=Preprocessing(size=(SIZE, SIZE)),
                        weights=Weights(source="chexplain", training_data="calibrated seeded weights (tests)"))
    checkpoint = save_checkpoint(calibrated(architecture, size=SIZE), manifest, root / f"{architecture}.pt")
    report = export_model(str(checkpoint), root, [IMAGES / "00013125_000.png", SIIM], classes="topk:2",
                          log=lambda _: None)
    return architecture, report


def test_the_graph_equals_pytorch_and_records_its_architecture(exported):
    architecture, report = exported
    assert report["parity"]["passed"], report["parity"]["outputs"]
    assert report["onnx"]["outputs"] == ["probabilities", "logits", "targets", "gradcam", "lrp"]
    backend = OnnxRuntimeBackend(report["onnx"]["path"])
    assert backend.manifest.architecture == architecture
    methods = backend.manifest.explanations.methods
    assert methods[0].layer == default_layer(architecture) and methods[1].composite == DEFAULT_LRP_COMPOSITE
    lrp = report["parity"]["outputs"]["lrp"]
    assert lrp["scale"] > 0  # maps that are not all zero


@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_tensorrt_parses_its_operators(exported, precision: str):
    graph = onnx.load(exported[1]["onnx"]["path"])
    check_tensorrt_parsable(graph if precision == "fp32" else convert_precision(graph, precision)[0])


@pytest.mark.parametrize("architecture", ["resnet50", "efficientnet_b0"])
def test_a_checkpoint_goes_through_export_and_explain_by_arch(architecture: str, tmp_path: Path):
    torch.save(calibrated(architecture, size=224).state_dict(), tmp_path / "trained.pth")
    runner = CliRunner()
    result = runner.invoke(main, ["export", "--model", str(tmp_path / "trained.pth"), "--arch", architecture,
                                  "--name", architecture, "--out", str(tmp_path / "artifacts"), "--classes", "topk:2"])
    assert result.exit_code == 0, result.output
    assert f"exporting {architecture} ({architecture}, 14 classes)" in result.output
    result = runner.invoke(main, ["explain", str(IMAGES / "00022178_000.png"), "--model",
                                  str(tmp_path / "artifacts" / architecture), "--out", str(tmp_path / "maps"),
                                  "--no-arrays"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads((tmp_path / "maps" / "index.json").read_text())["results"]
    assert len(record["explained"]) == 2
    for entry in record["explained"]:
        assert set(entry["files"]) == {"gradcam", f"lrp:{DEFAULT_LRP_COMPOSITE}"}
        for files in entry["files"].values():
            assert all((tmp_path / "maps" / name).is_file() for name in files.values())
