"""The exported graphs: parity with PyTorch on real radiographs, manifest, one file, dynamic batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from chexplain.export import Classifier, read_manifest
from chexplain.models.zoo import load_model
from chexplain.runtime import OnnxRuntimeBackend, preprocess, read_radiograph

from helpers import SIIM_FLIPPED


def test_classifier_report_records_parity_operators_and_provenance(classifier_onnx: Path):
    report = json.loads((classifier_onnx.parent / "export_report.json").read_text())
    parity = report["parity"]
    assert parity["passed"] and parity["max_abs_diff_probabilities"] <= 1e-5
    assert parity["batch_of"] == 4 and len(parity["images"]) == 4
    assert report["onnx"]["opset"] == 20
    assert report["onnx"]["inputs"] == ["image"] and report["onnx"]["outputs"] == ["probabilities", "logits"]
    assert report["onnx"]["operators"]["Conv"] == 120
    assert report["manifest"]["weights"]["source"] == "phantoms" and report["manifest"]["explanations"] == {}


def test_manifest_read_back_equals_the_one_written(classifier_onnx: Path):
    assert read_manifest(classifier_onnx) == load_model()[1]
    assert OnnxRuntimeBackend(classifier_onnx).manifest == load_model()[1]


def test_graph_is_one_checked_file_with_a_dynamic_batch(classifier_onnx: Path):
    assert sorted(p.name for p in classifier_onnx.parent.iterdir()) == ["export_report.json", "model.onnx"]
    graph = onnx.load(str(classifier_onnx))
    onnx.checker.check_model(graph, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert {o.domain or "ai.onnx": o.version for o in graph.opset_import}["ai.onnx"] == 20


def test_onnxruntime_matches_pytorch_on_an_unseen_radiograph(classifier_onnx: Path):
    """An image the export's own parity check did not use, in a batch of three."""
    model, manifest = load_model()
    image = preprocess(read_radiograph(SIIM_FLIPPED).pixels, manifest.preprocessing)[0]
    batch = np.stack([image, image[:, ::-1, :], np.zeros_like(image)])
    outputs = OnnxRuntimeBackend(classifier_onnx).run(batch)
    with torch.no_grad():
        probabilities, logits = Classifier(model)(torch.from_numpy(np.ascontiguousarray(batch)))
    assert np.abs(outputs["probabilities"] - probabilities.numpy()).max() <= 1e-5
    assert np.abs(outputs["logits"] - logits.numpy()).max() <= 1e-4


@pytest.mark.slow  # a full-size export
def test_export_mixed_precision_with_a_triton_repository(tmp_path: Path, radiographs: list[Path]):
    """`chexplain export --precision mixed --triton DIR`: FP16 forward, FP32 Grad-CAM, judged per map."""
    from click.testing import CliRunner

    from chexplain.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for path in radiographs[:2]:
        (images / path.name).write_bytes(path.read_bytes())
    result = CliRunner().invoke(main, ["export", "--explain", "gradcam", "--classes", "topk:2", "--precision", "mixed",
                                       "--out", str(tmp_path / "out"), "--images", str(images),
                                       "--triton", str(tmp_path / "triton")])
    assert result.exit_code == 0, result.output
    assert "precision plan mixed" in result.output and "per map min" in result.output
    report = json.loads((tmp_path / "out" / "densenet121-chexpert" / "export_report.json").read_text())
    assert report["onnx"]["precision"] == "mixed" and report["parity"]["precision"] == "mixed"
    gradcam = report["parity"]["outputs"]["gradcam"]
    assert gradcam["passed"] and gradcam["min_map_pearson"] >= 0.99 and gradcam["criterion"] == "pearson per map >= 0.99"
    assert report["parity"]["outputs"]["probabilities"]["max_abs_diff"] <= 1e-2
    assert report["onnx"]["operators"]["Cast"] >= 1
    assert read_manifest(tmp_path / "out" / "densenet121-chexpert" / "model.onnx").precision == "mixed"
    config = (tmp_path / "triton" / "densenet121-chexpert-onnx" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "dynamic_batching" in config
