"""Precision plans for an exported graph: FP32 as exported, mixed, or FP16.

Both reduced plans run the classifier's forward in FP16 (FP16 weights, FP16 activations) and
keep in FP32 what LRP computes once per image from the forward (its factors: 1/(z + eps)
reaches 1/eps, far beyond FP16) and each explanation output's last node. ``fp16`` runs every
explanation's per-class work — every node downstream of the explained classes (the
``targets`` tensor): the transposed convolutions and multiplies each class pays — in FP16;
``mixed`` does so only for the methods measured to keep their maps there
(``keeps_maps_in_fp16``: every CAM, the ``-bn`` LRP composites) and keeps the others' in
FP32. A value entering FP16 from FP32 is clipped to +-65504 first. LRP's seed is scaled by a
power of two in the graph (explain/explainer.py ``LRP_SEED_SCALE``), so its relevances stay
inside FP16's range.

The precision is written into the graph itself (typed initializers and Cast nodes), as
strongly typed TensorRT (11, and 10 with STRONGLY_TYPED) and ONNX Runtime need; inputs and
outputs keep their FP32 types, so the runtime contract does not change. Needs onnx and numpy
only (no torch).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConfigError, ModelNotFoundError, UnsupportedOperator
from ..grammar import BATCHNORM_RULE_SUFFIX, LRP_PREFIX, PRECISIONS
from ..runtime.manifest import Manifest
from ..runtime.maps.methods import graph_methods
from .metadata import manifest_of, write_manifest

FORWARD_OUTPUTS = ("probabilities", "logits")
FP16_RANGE = ("fp16_lowest", "fp16_max")  # Clip's bounds, as initializers
CLASSES = "targets"  # the explained classes: every per-class computation descends from them
FP16_MAX = float(np.finfo(np.float16).max)
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


@dataclass
class PrecisionReport:
    """What a conversion did."""

    precision: str
    fp16_nodes: int
    fp32_nodes: int
    casts_inserted: int
    weights_fp16: int
    weights_clipped: int

    def describe(self) -> str:
        clipped = f", {self.weights_clipped} weight values clipped to +-65504" if self.weights_clipped else ""
        return (f"{self.precision}: {self.fp16_nodes} nodes in FP16, {self.fp32_nodes} in FP32, "
                f"{self.casts_inserted} casts, {self.weights_fp16} FP16 weight tensors{clipped}")


def to_float16(values: np.ndarray) -> np.ndarray:
    """FP32 -> FP16, finite values beyond FP16's range clipped to +-65504 (infinities stay)."""
    finite = np.isfinite(values)
    return np.where(finite, np.clip(values, -FP16_MAX, FP16_MAX), values).astype(np.float16)


def ancestor_node_indices(graph: onnx.GraphProto, outputs: Iterable[str]) -> set[int]:
    """Indices of the nodes that ``outputs`` depend on."""
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    seen: set[int] = set()
    queue = deque(producer[o] for o in outputs if o in producer)
    while queue:
        index = queue.popleft()
        if index in seen:
            continue
        seen.add(index)
        queue.extend(producer[name] for name in graph.node[index].input if name in producer)
    return seen


def forward_node_indices(graph: onnx.GraphProto, outputs: tuple[str, ...] = FORWARD_OUTPUTS) -> set[int]:
    """Indices of the nodes the classifier's outputs depend on (the forward pass)."""
    produced = {name for node in graph.node for name in node.output}
    if not produced.intersection(outputs):
        raise ValueError(f"the graph has none of the outputs {', '.join(outputs)}")
    return ancestor_node_indices(graph, outputs)


def per_class_node_indices(graph: onnx.GraphProto, excluded_outputs: Iterable[str] = ()) -> set[int]:
    """Indices of the nodes downstream of the explained classes (the ``targets`` tensor, an input
    or the classifier's top-k), but for those that write a graph output or that any of
    ``excluded_outputs`` depends on: the explanations' per-class work."""
    graph_outputs = {o.name for o in graph.output}
    reached = {CLASSES}
    producer = next((node for node in graph.node if CLASSES in node.output), None)
    if producer is not None and producer.op_type == "Identity":
        reached.add(producer.input[0])
    nodes: set[int] = set()
    for index, node in enumerate(graph.node):  # topological order: one pass
        if any(name in reached for name in node.input):
            reached.update(node.output)
            if not graph_outputs.intersection(node.output):
                nodes.add(index)
    return nodes - ancestor_node_indices(graph, excluded_outputs)


def fp16_fragile_methods(manifest: Manifest | None) -> dict[str, str]:
    """Output name -> method label for the explanations that do not keep their maps in FP16
    (``keeps_maps_in_fp16``)."""
    if manifest is None:
        return {}
    return {method.output: method.label for method in graph_methods(manifest.explanations)
            if method.output is not None and not keeps_maps_in_fp16(method.label)}


def keeps_maps_in_fp16(label: str) -> bool:
    """Whether a method keeps its maps (Pearson >= 0.99 with FP32) with the forward and each
    class's work in FP16, as measured on the trained demo model (docs/deployment.md, "Precision plan"):
    every CAM and the ``-bn`` LRP composites; the others' maps flip with the FP16 forward."""
    return not label.startswith(LRP_PREFIX) or label.endswith(BATCHNORM_RULE_SUFFIX)


def _float_tensor_types(model: onnx.ModelProto) -> set[str]:
    """Names of every FP32 tensor in the graph (inputs, initializers, intermediates, outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    floats = {t.name for t in graph.initializer if t.data_type == FLOAT}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.type.tensor_type.elem_type == FLOAT:
            floats.add(info.name)
    return floats


def convert_precision(model: onnx.ModelProto, precision: str) -> tuple[onnx.ModelProto, PrecisionReport]:
    """A copy of an FP32 ``model`` with the precision plan applied (``fp32`` returns a copy)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    if precision == "fp32":
        return converted, PrecisionReport("fp32", 0, len(graph.node), 0, 0, 0)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise UnsupportedOperator("graphs with control flow (If/Loop/Scan) are not supported by the precision plan")
    floats = _float_tensor_types(model)
    low = forward_node_indices(graph)
    if precision == "fp16":
        low |= per_class_node_indices(graph)
    else:  # mixed: the per-class work of the methods measured to keep in FP16; a graph without a manifest keeps FP32
        manifest = manifest_of(model)
        fragile = [o.name for o in graph.output] if manifest is None else list(fp16_fragile_methods(manifest))
        low |= per_class_node_indices(graph, excluded_outputs=fragile)
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    producer_index = {name: i for i, node in enumerate(graph.node) for name in node.output}

    casts_in: dict[int, list[onnx.NodeProto]] = {}  # after the FP32 producer's position (-1: graph inputs)
    fp16_weights: dict[str, str] = {}
    clipped = 0
    cast_count = clip_count = 0

    def half_weight(name: str) -> str:
        nonlocal clipped
        if name not in fp16_weights:
            values = numpy_helper.to_array(initializers[name])
            clipped += int(np.count_nonzero(np.isfinite(values) & (np.abs(values) > FP16_MAX)))
            half = to_float16(values)
            fp16_weights[name] = f"{name}__fp16"
            graph.initializer.append(numpy_helper.from_array(half, fp16_weights[name]))
        return fp16_weights[name]

    def cast(source: str, target: str, to: int) -> onnx.NodeProto:
        nonlocal cast_count
        cast_count += 1
        return helper.make_node("Cast", [source], [target], to=to, name=f"{target}__cast")

    def clip(source: str) -> onnx.NodeProto:
        """``source`` limited to FP16's finite range before its Cast (an FP32 value beyond it would
        become infinite, and 0 * inf is NaN)."""
        nonlocal clip_count
        clip_count += 1
        if FP16_RANGE[0] not in initializers:
            for bound, value in zip(FP16_RANGE, (-FP16_MAX, FP16_MAX)):
                initializers[bound] = numpy_helper.from_array(np.array(value, dtype=np.float32), bound)
                graph.initializer.append(initializers[bound])
        return helper.make_node("Clip", [source, *FP16_RANGE], [f"{source}__clipped"], name=f"{source}__clip")

    # Inputs of low nodes: FP16 copies of weights, one Clip and Cast per FP32 graph input or FP32 producer.
    half_of: dict[str, str] = {}
    for index in sorted(low):
        node = graph.node[index]
        for slot, name in enumerate(node.input):
            if name not in floats or producer_index.get(name, -1) in low:
                continue
            if name in initializers:
                node.input[slot] = half_weight(name)
                continue
            if name not in half_of:
                half_of[name] = f"{name}__fp16"
                clipped_value = clip(name)
                casts_in.setdefault(producer_index.get(name, -1), []).extend(
                    [clipped_value, cast(clipped_value.output[0], half_of[name], FLOAT16)])
            node.input[slot] = half_of[name]
        _retype_attributes(node)

    # Outputs of low nodes that leave the low region (FP32 consumers, graph outputs): Cast back.
    high_inputs = {name for i, node in enumerate(graph.node) if i not in low for name in node.input}
    renamed: dict[str, str] = {}
    casts_after: dict[int, list[onnx.NodeProto]] = {}
    for index in sorted(low):
        node = graph.node[index]
        for slot, name in enumerate(node.output):
            if name not in floats or not (name in graph_outputs or name in high_inputs):
                continue
            renamed[name] = f"{name}__fp16"
            node.output[slot] = renamed[name]
            casts_after.setdefault(index, []).append(cast(renamed[name], name, FLOAT))
    for index in low:
        node = graph.node[index]
        for slot, name in enumerate(node.input):
            if name in renamed:
                node.input[slot] = renamed[name]

    nodes = list(casts_in.get(-1, []))
    for index, node in enumerate(graph.node):
        nodes.append(node)
        nodes.extend(casts_after.get(index, []))
        nodes.extend(casts_in.get(index, []))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    onnx.checker.check_model(converted, full_check=True)
    report = PrecisionReport(precision, len(low), len(graph.node) - len(low) - cast_count - clip_count, cast_count,
                             len(fp16_weights), clipped)
    return converted, report


def _retype_attributes(node: onnx.NodeProto) -> None:
    """Inside the FP16 region, casts and constants that make FP32 make FP16 instead."""
    for attribute in node.attribute:
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == FLOAT:
            attribute.i = FLOAT16
        elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == FLOAT:
            attribute.t.CopyFrom(numpy_helper.from_array(to_float16(numpy_helper.to_array(attribute.t)), attribute.t.name))


def write_precision(source: str | Path, target: str | Path, precision: str) -> PrecisionReport:
    """Convert the FP32 graph at ``source`` and save it at ``target`` with its manifest updated."""
    model = onnx.load(str(source))
    manifest = manifest_of(model)
    if manifest is None:
        raise ModelNotFoundError(f"{source}: no chexplain manifest in the ONNX metadata; export the graph with `chexplain export`")
    if manifest.precision != "fp32":
        raise ConfigError(f"{source}: the graph is already {manifest.precision}; convert from the FP32 export")
    converted, report = convert_precision(model, precision)
    manifest.precision = precision
    write_manifest(converted, manifest)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(converted, str(target))
    return report
