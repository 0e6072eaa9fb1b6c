"""The export's parity check on small hand-built graphs: what it holds each output to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from chexplain.explain import LRP, Explainer, GradCAM
from chexplain.export.explained import ExplainedGraph
from chexplain.export.metadata import write_manifest
from chexplain.export.onnx_export import export_onnx
from chexplain.export.parity import check_parity, decided_ranks
from chexplain.grammar import DEFAULT_LRP_COMPOSITE, parse_classes
from chexplain.runtime.manifest import Manifest, Preprocessing

from helpers import IMAGES

CLASSES = ("Cardiomegaly", "Edema", "Fracture")


class Overflowing(nn.Module):
    """Mean brightness per channel as logits, and a 'relevance map' that divides by zero."""

    output_names = ["probabilities", "logits", "lrp"]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = image.mean(dim=(2, 3))
        return torch.sigmoid(logits), logits, (image / (image - image))[:, :1]


def _overflowing_graph(path: Path, manifest: Manifest) -> None:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
               helper.make_tensor_value_info("lrp", TensorProto.FLOAT, ["batch", 1, 224, 224])]
    nodes = [helper.make_node("ReduceMean", ["image"], ["logits"], axes=[2, 3], keepdims=0),
             helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
             helper.make_node("Sub", ["image", "image"], ["zero"]),
             helper.make_node("Div", ["image", "zero"], ["ratio"]),
             helper.make_node("Slice", ["ratio", "start", "end", "axis"], ["lrp"])]
    constants = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("start", 0), ("end", 1), ("axis", 1))]
    model = helper.make_model(helper.make_graph(nodes, "overflowing", [image], outputs, constants),
                              opset_imports=[helper.make_opsetid("", 17)])
    write_manifest(model, manifest)
    onnx.save(model, str(path))


def test_a_map_pytorch_itself_cannot_compute_fails_with_that_reason(tmp_path: Path):
    manifest = Manifest(name="overflowing", classes=CLASSES)
    _overflowing_graph(tmp_path / "model.onnx", manifest)
    report = check_parity(Overflowing(), tmp_path / "model.onnx", manifest, [IMAGES / "00013125_000.png"])
    assert report["outputs"]["probabilities"]["passed"]  # the rest is still checked
    assert not report["passed"] and not report["outputs"]["lrp"]["passed"]
    assert report["outputs"]["lrp"]["criterion"] == "PyTorch's own output is finite"


def test_ranks_between_tied_logits_are_not_decided():
    logits = np.array([[2.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    targets = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(decided_ranks(logits, targets), [[True, False, False], [False] * 3, [True] * 3])


class TinyNet(nn.Module):
    """A convolution, a ReLU, global pooling and a head over CLASSES."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


@pytest.mark.parametrize("head", ["untrained", "two rows alike"])
def test_a_head_with_ties_exports_with_parity(tmp_path: Path, head: str):
    """torchvision leaves a new head at zero (every logit 0: any top-k order is right); two equal
    rows tie two classes everywhere. Parity compares the decided ranks and says what it left out."""
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():
        if head == "untrained":
            model.head.weight.zero_()
            model.head.bias.zero_()
        else:
            model.head.weight[2] = model.head.weight[1]
            model.head.bias[2] = model.head.bias[1]
    manifest = Manifest(name="tiny", classes=CLASSES, preprocessing=Preprocessing(size=(32, 32)))
    graph = ExplainedGraph(Explainer(model, [GradCAM("features"), LRP(DEFAULT_LRP_COMPOSITE)]),
                           parse_classes("topk:3", CLASSES))
    export_onnx(graph, manifest, tmp_path / "model.onnx")
    images = [IMAGES / "00013125_000.png", IMAGES / "00022178_000.png"]
    report = check_parity(graph, tmp_path / "model.onnx", manifest, images)
    assert report["passed"], report["outputs"]
    assert report["untrained_head"] == (head == "untrained")
    assert report["tied_ranks"] == (6 if head == "untrained" else 4)  # two images: all 3 ranks, or the tied pair
