"""The explained graph (`make export`'s default): ONNX Runtime equals PyTorch, TensorRT-parsable operators."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from chexplain.errors import ConfigError
from chexplain.explain import LRP, Explainer, GradCAM
from chexplain.export.explained import build_methods, input_bounds
from chexplain.export.precision import convert_precision
from chexplain.grammar import DEFAULT_LRP_COMPOSITE, parse_classes
from chexplain.models.zoo import load_model
from chexplain.runtime import OnnxRuntimeBackend, preprocess, read_radiograph
from chexplain.runtime.evaluation.fidelity import agreement
from chexplain.runtime.manifest import CHEXPERT_CLASSES

from helpers import IMAGES, RG1_J2K_MONOCHROME1
from tensorrt_operators import check_tensorrt_parsable


@pytest.fixture(scope="module")
def graph(default_onnx: Path) -> onnx.ModelProto:
    return onnx.load(str(default_onnx))


@pytest.mark.parametrize("precision", ["fp32", "mixed", "fp16"])
def test_operators_are_in_the_tensorrt_allow_list(graph: onnx.ModelProto, precision: str):
    if precision != "fp32":
        graph = convert_precision(graph, precision)[0]
    check_tensorrt_parsable(graph)


def test_report_and_manifest_describe_the_explanations(default_onnx: Path):
    report = json.loads((default_onnx.parent / "export_report.json").read_text())
    assert report["onnx"]["outputs"] == ["probabilities", "logits", "targets", "gradcam", "lrp"]
    assert report["parity"]["passed"], report["parity"]["outputs"]
    settings = OnnxRuntimeBackend(default_onnx).manifest.explanations
    assert settings.classes.spec == "topk:3" and settings.class_count() == 3 and not settings.targets_input
    assert [m.output for m in settings.methods] == ["gradcam", "lrp"]
    assert settings.methods[1].composite == DEFAULT_LRP_COMPOSITE and settings.methods[1].epsilon == 1.0
    assert [m.label for m in settings.methods] == ["gradcam", f"lrp:{DEFAULT_LRP_COMPOSITE}"]
    stored = report["manifest"]["explanations"]  # the JSON keeps the classes as their --classes spec
    assert stored["classes"] == "topk:3" and stored["methods"][1]["composite"] == DEFAULT_LRP_COMPOSITE


@pytest.fixture(scope="module")
def unseen() -> np.ndarray:
    """Two radiographs the export's parity check did not see: a JPEG 2000 CR and an NIH PNG."""
    prep = load_model()[1].preprocessing
    return np.stack([preprocess(read_radiograph(p).pixels, prep)[0] for p in (RG1_J2K_MONOCHROME1, IMAGES / "00022178_000.png")])


def test_onnxruntime_equals_pytorch_on_unseen_radiographs(default_onnx: Path, unseen: np.ndarray):
    outputs = OnnxRuntimeBackend(default_onnx).run(unseen)
    model, manifest = load_model()
    explainer = Explainer(model, [GradCAM(), LRP(DEFAULT_LRP_COMPOSITE, epsilon=1.0, bounds=input_bounds(manifest))])
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in explainer(torch.from_numpy(unseen), top_k=3).items()}
    assert np.abs(outputs["probabilities"] - reference["probabilities"]).max() <= 1e-5
    np.testing.assert_array_equal(outputs["targets"], reference["targets"])
    np.testing.assert_array_equal(outputs["targets"], np.argsort(-outputs["probabilities"], axis=1)[:, :3])
    cam = agreement(reference["gradcam"], outputs["gradcam"])
    assert cam["max_abs_diff"] <= 1e-5 * cam["scale"]
    lrp = agreement(reference["lrp"], outputs["lrp"])
    assert lrp["pearson"] >= 0.9995 and lrp["relative_l2"] <= 5e-2
    for value in outputs.values():
        assert np.isfinite(value).all()
    assert outputs["gradcam"].shape == (2, 3, 7, 7) and outputs["lrp"].shape == (2, 3, 224, 224)
    # different radiographs, different maps (a traced constant would make them equal)
    assert not np.allclose(outputs["lrp"][0], outputs["lrp"][1])
    assert not np.allclose(outputs["gradcam"][0], outputs["gradcam"][1])


def test_method_and_class_specs():
    bounds = input_bounds(load_model()[1])
    methods = build_methods("gradcam,hirescam,lrp,lrp:deep-taylor", bounds=bounds)
    assert [m.key for m in methods] == ["gradcam/gradcam", "gradcam/hirescam", "lrp/epsilon", "lrp/deep-taylor"]
    assert build_methods("none") == []
    with pytest.raises(ConfigError, match="unknown method"):
        build_methods("saliency")
    assert parse_classes("topk:3", CHEXPERT_CLASSES).k == 3
    assert parse_classes("Edema,Cardiomegaly", CHEXPERT_CLASSES).fixed == (5, 2)
    assert parse_classes("all", CHEXPERT_CLASSES).k == 14
    for bad in ("topk:0", "topk:15", "Hernia"):
        with pytest.raises(ConfigError):
            parse_classes(bad, CHEXPERT_CLASSES)
    np.testing.assert_allclose(bounds[0][0], -0.485 / 0.229)


def test_targets_input_with_any_k_and_exposed_gradients(targets_graph: Path, unseen: np.ndarray):
    from chexplain.grammar import CAM_VARIANTS as VARIANTS
    from chexplain.runtime.maps.cam_formulas import cam

    backend = OnnxRuntimeBackend(targets_graph)
    assert backend.input_names == ["image", "targets"]
    assert backend.output_names == ["probabilities", "logits", "gradcam", "lrp", "target_activations", "target_gradients"]
    model = load_model()[0]
    explainer = Explainer(model, [GradCAM(variant=v) for v in VARIANTS])
    for targets in (np.array([[4], [9]]), np.array([[0, 13, 2, 7, 5], [1, 1, 3, 12, 6]])):
        outputs = backend.run(unseen, targets=targets)
        assert outputs["target_gradients"].shape == (2, targets.shape[1], 1024, 7, 7)
        with torch.no_grad():
            reference = explainer(torch.from_numpy(unseen), torch.from_numpy(targets))
        for variant in VARIANTS:  # every variant, computed by the runtime from the exposed tensors
            ours = cam(variant, outputs["target_activations"], outputs["target_gradients"])
            expected = reference[f"gradcam/{variant}"].numpy()
            assert np.abs(ours - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1e-12), variant


def test_explain_cli_on_a_targets_graph_computes_other_variants(targets_graph: Path, tmp_path: Path):
    from click.testing import CliRunner

    from chexplain.cli import main

    result = CliRunner().invoke(main, ["explain", str(IMAGES / "00013125_000.png"), "--model", str(targets_graph),
                                       "--classes", "Edema,Cardiomegaly", "--method", "gradcam", "--method", "layercam",
                                       "--out", str(tmp_path), "--no-arrays"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads((tmp_path / "index.json").read_text())["results"]
    assert [e["class"] for e in record["explained"]] == ["Edema", "Cardiomegaly"]
    assert set(record["explained"][0]["files"]) == {"gradcam", "layercam"}
