"""The precision plans: FP16 forward, each class's explanation work in FP16 where it keeps, LRP's
per-image factors in FP32, written into the graph; fidelity in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from chexplain.errors import ConfigError
from chexplain.export.metadata import read_manifest
from chexplain.export.parity import judge_reduced, load_inputs
from chexplain.export.precision import (
    ancestor_node_indices,
    convert_precision,
    forward_node_indices,
    fp16_fragile_methods,
    keeps_maps_in_fp16,
    per_class_node_indices,
    to_float16,
    write_precision,
)
from chexplain.runtime import OnnxRuntimeBackend
from chexplain.runtime.evaluation.fidelity import agreement, comparable_maps, map_pearsons

from helpers import SIIM


@pytest.fixture(scope="module")
def graphs(default_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("precision")
    paths = {"fp32": default_onnx}
    for precision in ("mixed", "fp16"):
        paths[precision] = folder / f"model.{precision}.onnx"
        write_precision(default_onnx, paths[precision], precision)
    return paths


@pytest.fixture(scope="module")
def outputs(graphs: dict[str, Path], radiographs: list[Path]) -> dict[str, dict[str, np.ndarray]]:
    inputs, _ = load_inputs(radiographs + [SIIM], read_manifest(graphs["fp32"]))
    return {p: OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"]).run(inputs) for p, path in graphs.items()}


def _weight_types(model: onnx.ModelProto, op_type: str, nodes: set[int]) -> set[int]:
    initializers = {t.name: t.data_type for t in model.graph.initializer}
    return {initializers[n.input[1]] for i, n in enumerate(model.graph.node) if i in nodes and n.op_type == op_type}


def test_mixed_runs_the_forward_and_the_kept_methods_per_class_work_in_fp16(default_onnx: Path, graphs: dict[str, Path]):
    source = onnx.load(str(default_onnx))
    mixed = onnx.load(str(graphs["mixed"]))
    forward, per_class = forward_node_indices(mixed.graph), per_class_node_indices(mixed.graph)
    factors = set(range(len(mixed.graph.node))) - forward - per_class
    assert _weight_types(mixed, "Conv", forward) == {TensorProto.FLOAT16}
    assert sum(mixed.graph.node[i].op_type == "Conv" for i in forward) == 120  # every convolution of DenseNet121
    # Grad-CAM and the default LRP were measured to keep in FP16: each class's convolutions run there
    assert _weight_types(mixed, "Conv", per_class) | _weight_types(mixed, "ConvTranspose", per_class) == {TensorProto.FLOAT16}
    assert _weight_types(mixed, "Conv", factors) == {TensorProto.FLOAT}
    # The contract does not change: same names, FP32 in and out.
    assert [(i.name, i.type.tensor_type.elem_type) for i in mixed.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in source.graph.input]
    assert [(o.name, o.type.tensor_type.elem_type) for o in mixed.graph.output] == \
        [(o.name, o.type.tensor_type.elem_type) for o in source.graph.output]
    assert read_manifest(graphs["mixed"]).precision == "mixed" and read_manifest(default_onnx).precision == "fp32"


def test_mixed_keeps_the_per_class_work_of_unmeasured_methods_in_fp32(targets_graph: Path):
    """lrp:epsilon does not keep in FP16: under mixed its per-class work stays FP32, Grad-CAM's
    runs in FP16; under fp16 both run in FP16."""
    model = onnx.load(str(targets_graph))
    assert fp16_fragile_methods(read_manifest(targets_graph)) == {"lrp": "lrp:epsilon"}
    types = {}
    for precision in ("mixed", "fp16"):
        graph = onnx.shape_inference.infer_shapes(convert_precision(model, precision)[0], strict_mode=True).graph
        per_class = per_class_node_indices(graph)
        lrp = per_class & ancestor_node_indices(graph, ["lrp"])
        cam = per_class & ancestor_node_indices(graph, ["gradcam"]) - lrp
        assert len(lrp) > 300 and len(cam) > 10
        value_type = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
        for part, nodes in (("lrp", lrp), ("gradcam", cam)):
            floats = [value_type[o] for i in nodes for o in graph.node[i].output
                      if value_type.get(o) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
            types[precision, part] = floats.count(TensorProto.FLOAT16) / len(floats)  # the rest: casts back, clips
    assert types["mixed", "lrp"] == 0 and types["mixed", "gradcam"] > 0.5
    assert types["fp16", "lrp"] > 0.9 and types["fp16", "gradcam"] > 0.5


@pytest.mark.parametrize(("label", "keeps"), [("gradcam", True), ("gradcam++", True), ("guided-gradcam", True),
                                              ("lrp:epsilon-plus-smooth-bn", True), ("lrp:alpha2beta1-bn", True),
                                              ("lrp:epsilon", False), ("lrp:epsilon-plus-flat", False)])
def test_methods_measured_to_keep_in_fp16(label: str, keeps: bool):
    assert keeps_maps_in_fp16(label) is keeps


def test_mixed_keeps_every_map(outputs: dict[str, dict[str, np.ndarray]]):
    """On the trained demo model the FP16 forward and per-class work keep the probabilities,
    Grad-CAM and the default LRP (a -bn composite, whose maps do not flip with rounding; docs/deployment.md,
    "Precision plan")."""
    reference, mixed = outputs["fp32"], outputs["mixed"]
    assert np.abs(mixed["probabilities"] - reference["probabilities"]).max() <= 1e-2
    assert (mixed["targets"] == reference["targets"]).mean() >= 0.8
    same = comparable_maps(reference, mixed)  # same class, logit on the same side of zero
    gradcam = map_pearsons(reference["gradcam"], mixed["gradcam"], same)
    lrp = map_pearsons(reference["lrp"], mixed["lrp"], same)
    assert len(gradcam) == len(lrp) == same.sum() >= 0.7 * same.size
    assert min(gradcam) >= 0.99 and judge_reduced("gradcam", {"min_map_pearson": min(gradcam)})[1]
    assert min(lrp) >= 0.99 and judge_reduced("lrp", {"min_map_pearson": min(lrp)})[1]
    assert all(np.isfinite(mixed[name]).all() for name in ("gradcam", "lrp"))


def test_fp16_runs_each_class_in_fp16_and_the_per_image_factors_in_fp32(graphs: dict[str, Path]):
    half = onnx.load(str(graphs["fp16"]))
    forward, per_class = forward_node_indices(half.graph), per_class_node_indices(half.graph)
    factors = set(range(len(half.graph.node))) - forward - per_class
    assert _weight_types(half, "Conv", forward) == {TensorProto.FLOAT16}
    # every transposed convolution of the backward passes, one per layer and class
    assert _weight_types(half, "Conv", per_class) | _weight_types(half, "ConvTranspose", per_class) == {TensorProto.FLOAT16}
    assert sum(half.graph.node[i].op_type in ("Conv", "ConvTranspose") for i in per_class) >= 120
    assert _weight_types(half, "Conv", factors) == {TensorProto.FLOAT}  # z+'s positive-weight forward
    # what enters FP16 from FP32 is clipped to FP16's range first
    casts = [n for n in half.graph.node if n.name.endswith("__fp16__cast")]  # the plan's own
    producers = {o: n.op_type for n in half.graph.node for o in n.output}
    assert casts and all(producers.get(n.input[0]) == "Clip" for n in casts)


def test_fp16_keeps_the_classifier_and_every_map(outputs: dict[str, dict[str, np.ndarray]]):
    """LRP's seed scaled by 2^10 keeps its relevances inside FP16's range, its per-image factors in
    FP32 keep 1/(z + eps) finite: the default's maps hold (docs/deployment.md, "Precision plan")."""
    reference, half = outputs["fp32"], outputs["fp16"]
    assert np.abs(half["probabilities"] - reference["probabilities"]).max() <= 1e-2
    same = comparable_maps(reference, half)
    gradcam = map_pearsons(reference["gradcam"], half["gradcam"], same)
    lrp = map_pearsons(reference["lrp"], half["lrp"], same)
    assert len(gradcam) == len(lrp) == same.sum() >= 0.7 * same.size
    assert min(gradcam) >= 0.99 and min(lrp) >= 0.99 and judge_reduced("lrp", {"min_map_pearson": min(lrp)})[1]
    assert all(np.isfinite(half[name]).all() for name in ("gradcam", "lrp"))
    assert (half["lrp"] == 0).mean() <= 2 * (reference["lrp"] == 0).mean() + 1e-3  # nothing underflows


def test_fp32_plan_is_a_copy_and_a_classifier_is_all_forward(classifier_onnx: Path):
    model = onnx.load(str(classifier_onnx))
    same, report = convert_precision(model, "fp32")
    assert same.SerializeToString() == model.SerializeToString() and report.casts_inserted == 0
    assert forward_node_indices(model.graph) == set(range(len(model.graph.node)))
    mixed, mixed_report = convert_precision(model, "mixed")
    half, half_report = convert_precision(model, "fp16")
    assert mixed_report.fp16_nodes == half_report.fp16_nodes == len(model.graph.node)
    assert mixed.SerializeToString() == half.SerializeToString()


def test_conversion_refuses_what_it_cannot_do(graphs: dict[str, Path], tmp_path: Path, default_onnx: Path):
    with pytest.raises(ConfigError, match="already mixed"):
        write_precision(graphs["mixed"], tmp_path / "again.onnx", "fp16")
    with pytest.raises(ConfigError, match="unknown precision"):
        convert_precision(onnx.load(str(default_onnx), load_external_data=False), "int8")


def test_reduced_precision_agreement_metrics_are_per_map():
    reference = np.zeros((1, 2, 4, 4))
    reference[0, 0, 0, 0] = reference[0, 1, 3, 3] = 1.0
    candidate = reference.copy()
    candidate[0, 1] = -reference[0, 1]
    pearsons = map_pearsons(reference, candidate, None)
    assert pearsons[0] == pytest.approx(1.0) and pearsons[1] == pytest.approx(-1.0)
    assert map_pearsons(reference, candidate, np.array([[True, False]])) == pearsons[:1]
    assert agreement(reference, candidate)["pearson"] < 1.0


def test_fp16_weights_keep_infinities_and_clip_overflow():
    values = np.array([-np.inf, -1e6, 1.5, 7e4, np.inf], dtype=np.float32)
    assert to_float16(values).tolist() == [-np.inf, -65504.0, 1.5, 65504.0, np.inf]
