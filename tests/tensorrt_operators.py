"""Can TensorRT 10's ONNX parser take a graph? Its operator support table (onnx-tensorrt
docs/operators.md for TensorRT 10) and the restrictions that matter for chexplain's graphs:
build-time constant K, axes, pads and split sizes, no FLOAT64, no indices output, no scatter."""

from __future__ import annotations

import onnx

# Operators of TensorRT 10's ONNX parser support table that chexplain's graphs may use.
TENSORRT10_ALLOWED = {
    "Add", "And", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Div", "Equal", "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Greater",
    "GreaterOrEqual",
    "Identity", "Less", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not", "Or", "Pad", "Range",
    "Reciprocal", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Sign", "Slice",
    "Split", "Squeeze", "Sub", "TopK", "Transpose", "Unsqueeze", "Where",
    # the activations and normalisations of EfficientNet, MobileNet, RegNet and ConvNeXt
    "Erf", "Exp", "HardSigmoid", "HardSwish", "LayerNormalization", "LessOrEqual", "Pow", "Sqrt", "Tanh",
    # and of vision transformers' attention
    "Softmax",
}
FORBIDDEN = {"MaxUnpool", "Col2Im", "ScatterND", "ScatterElements"}

# Types TensorRT 10 tensors can take (no FLOAT64 anywhere).
TENSORRT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                  onnx.TensorProto.BOOL, onnx.TensorProto.UINT8}
RESIZE_MODES = {"nearest", "linear", "cubic"}
RESIZE_COORDINATES = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"}


def _initializer_or_constant(graph: onnx.ModelProto, name: str) -> bool:
    return name in {i.name for i in graph.graph.initializer} or any(
        n.op_type == "Constant" and name in n.output for n in graph.graph.node)


def check_tensorrt_parsable(graph: onnx.ModelProto) -> None:
    """Assert every operator and attribute of ``graph`` is one TensorRT 10 parses."""
    used = {n.op_type for n in graph.graph.node}
    assert not used & FORBIDDEN
    assert used <= TENSORRT10_ALLOWED, sorted(used - TENSORRT10_ALLOWED)
    assert {t.data_type for t in graph.graph.initializer} <= TENSORRT_TYPES
    for node in graph.graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MaxPool":
            assert len(node.output) == 1  # no indices output
        if node.op_type == "TopK":
            assert attributes.get("sorted", 1) == 1 and attributes.get("largest", 1) == 1
            assert _initializer_or_constant(graph, node.input[1])  # K is a build-time constant
        if node.op_type in ("ReduceMean", "ReduceSum") and len(node.input) > 1:
            assert _initializer_or_constant(graph, node.input[1])  # axes as an initializer
        if node.op_type == "Resize":
            assert attributes.get("mode", b"nearest").decode() in RESIZE_MODES
            assert attributes.get("coordinate_transformation_mode", b"half_pixel").decode() in RESIZE_COORDINATES
            assert all(_initializer_or_constant(graph, name) for name in node.input[1:] if name)
        if node.op_type == "Cast":
            assert attributes["to"] in TENSORRT_TYPES
        if node.op_type in ("Split", "Slice", "Pad", "Unsqueeze", "Squeeze") and len(node.input) > 1:
            assert _initializer_or_constant(graph, node.input[1])  # split sizes, starts, pads, axes fixed at build
        if node.op_type == "Slice" and len(node.input) > 3 and node.input[3]:
            assert _initializer_or_constant(graph, node.input[3])  # Slice axes


