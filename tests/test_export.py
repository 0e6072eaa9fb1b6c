"""The exported graphs: parity with PyTorch on real radiographs, manifest, one file, dynamic batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch

from chexplain.export import Classifier, read_manifest
from chexplain.models.zoo import seeded_model
from chexplain.runtime import OnnxRuntimeBackend, preprocess, read_radiograph
from conftest import SIIM_FLIPPED


def test_classifier_report_records_parity_operators_and_provenance(classifier_onnx: Path):
    report = json.loads((classifier_onnx.parent / "export_report.json").read_text())
    parity = report["parity"]
    assert parity["passed"] and parity["max_abs_diff_probabilities"] <= 1e-5
    assert parity["batch_of"] == 4 and len(parity["images"]) == 4
    assert report["onnx"]["opset"] == 20
    assert report["onnx"]["inputs"] == ["image"] and report["onnx"]["outputs"] == ["probabilities", "logits"]
    assert report["onnx"]["operators"]["Conv"] == 120
    assert report["manifest"]["weights"]["source"] == "seeded" and report["manifest"]["explanations"] == {}


def test_manifest_read_back_equals_the_one_written(classifier_onnx: Path):
    assert read_manifest(classifier_onnx) == seeded_model()[1]
    assert OnnxRuntimeBackend(classifier_onnx).manifest == seeded_model()[1]


def test_graph_is_one_checked_file_with_a_dynamic_batch(classifier_onnx: Path):
    assert sorted(p.name for p in classifier_onnx.parent.iterdir()) == ["export_report.json", "model.onnx"]
    graph = onnx.load(str(classifier_onnx))
    onnx.checker.check_model(graph, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert {o.domain or "ai.onnx": o.version for o in graph.opset_import}["ai.onnx"] == 20


def test_onnxruntime_matches_pytorch_on_an_unseen_radiograph(classifier_onnx: Path):
    """An image the export's own parity check did not use, in a batch of three."""
    model, manifest = seeded_model()
    image = preprocess(read_radiograph(SIIM_FLIPPED).pixels, manifest.preprocessing)[0]
    batch = np.stack([image, image[:, ::-1, :], np.zeros_like(image)])
    outputs = OnnxRuntimeBackend(classifier_onnx).run(batch)
    with torch.no_grad():
        probabilities, logits = Classifier(model)(torch.from_numpy(np.ascontiguousarray(batch)))
    assert np.abs(outputs["probabilities"] - probabilities.numpy()).max() <= 1e-5
    assert np.abs(outputs["logits"] - logits.numpy()).max() <= 1e-4
