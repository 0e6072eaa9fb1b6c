"""The export's parity check on small hand-built graphs: what it holds each output to."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from chexplain.export.metadata import write_manifest
from chexplain.export.parity import check_parity
from chexplain.runtime.manifest import Manifest

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
