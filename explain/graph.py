"""Trace a model once into operator nodes, and run its forward keeping every output.

The forward is executed node by node from the torch.fx graph with every in-place operation
made out-of-place, so the activations that the reverse pass needs stay intact
(torchvision's ``ReLU(inplace=True)`` would otherwise overwrite the BatchNorm output before
it, and EfficientNet's ``result += input`` its block's output).

Nodes that do not depend on the input carry no relevance and get no rule: ``shape`` nodes
(sizes and the integer arithmetic on them) and ``constant`` nodes (parameters read with
``get_attr``, such as ConvNeXt's layer scale, and tensors made from them alone). Constants
are still listed among a node's inputs, so a rule sees every operand; what a rule would send
back to a constant is dropped. ``split`` nodes (``chunk``, ``split``, ``unbind``) make tuples;
each ``getitem`` taking one part becomes a ``part`` node reading the split tensor directly. The
forward's optional arguments beyond the image are fixed at their defaults and become constants.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedOperator
from .attention import window_attention

# Module types, by operator kind.
MODULE_KINDS: dict[type[nn.Module], str] = {
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.BatchNorm2d: "batchnorm",
    nn.LayerNorm: "layernorm",
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.SiLU: "silu",
    nn.GELU: "gelu",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.MaxPool2d: "maxpool",
    nn.AvgPool2d: "avgpool",
    nn.AdaptiveAvgPool2d: "adaptive_avgpool",
    nn.AdaptiveMaxPool2d: "adaptive_maxpool",
    nn.Flatten: "reshape",
    nn.Dropout: "identity",
    nn.Identity: "identity",
    nn.MultiheadAttention: "attention",  # kept whole by the trace; its rules recompute q, k, v (explain/attention.py)
}
FUNCTION_KINDS: dict[Any, str] = {
    torch.cat: "cat",
    torch.concat: "cat",
    operator.add: "add",
    torch.add: "add",
    operator.iadd: "add",
    operator.mul: "mul",
    torch.mul: "mul",
    operator.imul: "mul",
    torch.flatten: "reshape",
    torch.reshape: "reshape",
    torch.squeeze: "reshape",
    torch.unsqueeze: "reshape",
    F.relu: "relu",
    torch.relu: "relu",
    F.relu6: "relu6",
    F.silu: "silu",
    F.gelu: "gelu",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    torch.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    F.adaptive_avg_pool2d: "adaptive_avgpool",
    F.adaptive_max_pool2d: "adaptive_maxpool",
    F.dropout: "identity",
    F.layer_norm: "layernorm",
    torch.permute: "permute",
    torch.transpose: "transpose",
    torch.mean: "mean",
    torch.split: "split",
    torch.chunk: "split",
    torch.unbind: "split",
    F.scaled_dot_product_attention: "dot_product_attention",  # timm's fused attention (explain/attention.py)
    F.batch_norm: "batchnorm",  # timm's BatchNormAct2d (eval): made a BatchNorm2d for the rules, see trace()
    F.linear: "linear",  # timm's Linear: made an nn.Linear for the rules
    operator.matmul: "matmul",  # a product of two activations: timm's unfused attention (q @ k^T, A @ v)
    torch.matmul: "matmul",
    F.softmax: "softmax",
    torch.softmax: "softmax",
}
METHOD_KINDS = {
    "view": "reshape", "reshape": "reshape", "flatten": "reshape", "squeeze": "reshape", "unsqueeze": "reshape",
    "relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "permute": "permute",
    "transpose": "transpose", "contiguous": "identity", "mean": "mean", "chunk": "split", "split": "split",
    "unbind": "split",
    "mul": "mul", "add": "add", "matmul": "matmul", "softmax": "softmax",
}
SHAPE_METHODS = {"size", "dim"}  # produce ints, never relevance
# In-place functions run out of place, so every stored output stays as computed.
OUT_OF_PLACE = {operator.iadd: operator.add, operator.imul: operator.mul}
# Activation modules, run as their out-of-place functions.
ACTIVATION_FUNCTIONS = {"relu": F.relu, "relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish,
                        "hardsigmoid": F.hardsigmoid}


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU written out (erf, or the tanh approximation): exported as Erf/Tanh and arithmetic, which
    every TensorRT 10 parses, rather than ONNX's Gelu (opset 20), which TensorRT 10.3 does not list."""
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + torch.erf(x * 0.5**0.5))
SUPPORTED = ("Conv2d (grouped, depthwise), Linear, BatchNorm2d, LayerNorm, ReLU, ReLU6, SiLU, GELU, Hardswish, "
             "Hardsigmoid, Sigmoid, Tanh, MaxPool2d, AvgPool2d, adaptive average and max pooling, mean, cat, add, "
             "mul, flatten/reshape/view/squeeze, permute, transpose, chunk/split/unbind and getitem, Dropout, "
             "StochasticDepth, Identity, MultiheadAttention (batch first, no masks), scaled_dot_product_attention "
             "(no masks), matmul of two tensors and softmax (unfused attention), Swin's shifted-window attention and patch "
             "merging")


@dataclass
class OpNode:
    """One operation of the traced model."""

    name: str  # fx node name
    target: str  # module path, or function/method name
    kind: str  # operator kind (see *_KINDS), or one of core.STRUCTURAL_KINDS
    inputs: list[str]  # names of the tensor nodes it reads (input-derived and constant), in argument order
    module: nn.Module | None = None
    fx_node: torch.fx.Node | None = field(default=None, repr=False)
    value: Any = field(default=None, repr=False)  # a get_attr constant's tensor

    @property
    def scopes(self) -> list[str]:
        """Paths of the modules this operation runs inside (outermost first)."""
        return list(self.fx_node.meta.get("nn_module_stack", {})) if self.fx_node is not None else []

    def argument(self, position: int, keyword: str, default: Any = None) -> Any:
        """A static argument of the call, by keyword or by its position among the call's arguments."""
        node = self.fx_node
        if keyword in node.kwargs:
            return node.kwargs[keyword]
        return node.args[position] if len(node.args) > position else default


def permute_dims(op: OpNode) -> list[int]:
    """permute's dimensions, as ``x.permute(0, 2, 3, 1)``, ``x.permute([0, 2, 3, 1])`` or ``dims=``."""
    dims = op.fx_node.kwargs.get("dims", op.fx_node.args[1:])
    if len(dims) == 1 and isinstance(dims[0], list | tuple):
        dims = dims[0]
    return [int(d) for d in dims]


def mean_dims(op: OpNode) -> list[int]:
    """mean's reduced dimensions (a mean over every axis would average the batch: refused)."""
    dims = op.argument(1, "dim")
    if dims is None:
        raise UnsupportedOperator(f"a mean over every axis (node {op.name!r}) would average the batch")
    return [int(dims)] if isinstance(dims, int) else [int(d) for d in dims]


def _function_name(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def _torchvision_function(target: Any, name: str) -> bool:
    """One of the functions torchvision keeps whole in traces (torch.fx.wrap)."""
    return _function_name(target) == name and getattr(target, "__module__", "").startswith("torchvision")


# torchvision's traced-whole functions with rules of their own (Swin: explain/attention.py, gradients.py)
TORCHVISION_FUNCTION_KINDS = {"shifted_window_attention": "window_attention", "_patch_merging_pad": "patch_merge"}


def _timm_function(target: Any, name: str) -> bool:
    """One of the functions timm keeps whole in traces (torch.fx.wrap)."""
    return _function_name(target) == name and getattr(target, "__module__", "").startswith("timm")


def _no_attention_mask(node: torch.fx.Node, by_name: dict[str, OpNode]) -> bool:
    """Whether timm's unfused attention builds no mask here (``resolve_self_attn_mask(N, attn,
    attn_mask=None, is_causal=False)``: it returns None, and ``maybe_add_mask`` its scores)."""
    given = {**dict(zip(("seq_len", "attn", "attn_mask", "is_causal"), node.args)), **node.kwargs}
    mask = given.get("attn_mask")
    if isinstance(mask, torch.fx.Node):
        mask = by_name[mask.name].value if by_name[mask.name].kind == "constant" else mask
    return mask is None and given.get("is_causal", False) is False


def _argument_nodes(node: torch.fx.Node) -> list[torch.fx.Node]:
    found: list[torch.fx.Node] = []
    torch.fx.map_arg((node.args, node.kwargs), found.append)
    return found


def _attribute(root: nn.Module, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _functional_module(kind: str, node: torch.fx.Node, by_name: dict[str, OpNode]) -> nn.Module:
    """An F.batch_norm (eval) or F.linear call with parameter operands as the module it computes,
    for the rules (the forward still runs the call itself): timm's BatchNormAct2d and Linear."""
    names = (("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
             if kind == "batchnorm" else ("input", "weight", "bias"))
    given = {**dict(zip(names, node.args)), **node.kwargs}
    if given.get("training", False):
        raise UnsupportedOperator(f"batch_norm at node {node.name!r} normalises with batch statistics (training mode)")

    def value(name: str) -> torch.Tensor | None:
        argument = given.get(name)
        if isinstance(argument, torch.fx.Node):
            if by_name[argument.name].value is None:
                raise UnsupportedOperator(f"{kind} at node {node.name!r}: its {name} is computed, not a parameter")
            return by_name[argument.name].value.detach()
        return argument

    weight, bias = value("weight"), value("bias")
    if kind == "linear":
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        return linear.to(weight.dtype)
    mean, var = value("running_mean"), value("running_var")
    norm = nn.BatchNorm2d(mean.numel(), eps=float(given.get("eps", 1e-5)), affine=weight is not None).eval()
    with torch.no_grad():
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        if weight is not None:
            norm.weight.copy_(weight)
            norm.bias.copy_(bias if bias is not None else torch.zeros_like(weight))
    return norm.to(mean.dtype)


def _operator_kind(node: torch.fx.Node, module: nn.Module | None) -> str | None:
    if node.op == "call_module":
        return next((k for t, k in MODULE_KINDS.items() if type(module) is t), None)
    if node.op == "call_function":
        if _torchvision_function(node.target, "stochastic_depth"):
            if node.kwargs.get("training", node.args[3] if len(node.args) > 3 else True):
                return None  # drops whole rows at random: training only
            return "identity"
        for name, kind in TORCHVISION_FUNCTION_KINDS.items():
            if _torchvision_function(node.target, name):
                return kind
        return FUNCTION_KINDS.get(node.target)
    if node.op == "call_method":
        return METHOD_KINDS.get(node.target)
    return None


def _defaults_beyond_the_image(model: nn.Module) -> dict[str, Any] | None:
    """The forward's optional arguments after the image (timm's ``attn_mask=None``), fixed at their
    defaults: the trace specialises them and they stay constants of the graph."""
    parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty} or None


def _keep_the_batch_first(graph_module: torch.fx.GraphModule) -> None:
    """timm's attention unbinds q, k and v along axis 0 of a permute that put the batch second
    (``qkv.permute(2, 0, 3, 1, 4).unbind(0)``); the same parts come from the permute with its
    first two axes swapped, unbound along axis 1, and the batch stays first, as every rule expects."""
    for node in graph_module.graph.nodes:
        if node.op != "call_method" or node.target != "unbind" or len(node.args) < 2 or node.args[1] != 0:
            continue
        source = node.args[0]
        if source.op != "call_method" or source.target != "permute" or len(source.users) != 1:
            continue
        dims = list(source.args[1]) if isinstance(source.args[1], list | tuple) else list(source.args[1:])
        if len(dims) > 1 and dims[1] == 0 and not source.kwargs:
            source.args = (source.args[0], dims[1], dims[0], *dims[2:])
            node.args = (source, 1)
    graph_module.recompile()


def trace(model: nn.Module) -> tuple[torch.fx.GraphModule, list[OpNode]]:
    """Trace ``model`` and classify every node; unknown operators raise UnsupportedOperator."""
    graph_module = torch.fx.symbolic_trace(model, concrete_args=_defaults_beyond_the_image(model))
    _keep_the_batch_first(graph_module)
    modules = dict(graph_module.named_modules())
    nodes: list[OpNode] = []
    kinds: dict[str, str] = {}
    split_sources: dict[str, str] = {}  # split node -> the tensor it splits
    for node in graph_module.graph.nodes:
        arguments = _argument_nodes(node)
        tensors = [n.name for n in arguments if kinds[n.name] not in ("shape", "split")]
        derived = [n for n in tensors if kinds[n] != "constant"]
        module = modules.get(node.target) if node.op == "call_module" else None
        target = node.target if node.op in ("call_module", "call_method", "get_attr") else _function_name(node.target)
        inputs = tensors
        value = None
        if node.op == "placeholder" and "input" in kinds.values():
            kind, inputs, value = "constant", [], node.args[0] if node.args else None  # a specialised default
        elif node.op == "placeholder":
            kind, inputs = "input", []
        elif node.op == "output":
            kind = "output"
        elif node.op == "get_attr":
            kind, value = "constant", _attribute(graph_module, node.target)
        elif node.op == "call_method" and node.target in SHAPE_METHODS:
            kind = "shape"
        elif node.op == "call_function" and node.target is getattr:
            kind = "shape"  # x.shape and the like
        elif node.op == "call_function" and _timm_function(node.target, "resolve_self_attn_mask"):
            if not _no_attention_mask(node, {op.name: op for op in nodes}):
                raise UnsupportedOperator(f"attention at node {node.name!r} with a mask or causal: not supported")
            kind = "shape"  # None: no mask
        elif node.op == "call_function" and _timm_function(node.target, "maybe_add_mask"):
            kind, inputs = "identity", tensors[:1]  # the scores, the mask being None
        elif node.op == "call_function" and node.target is operator.getitem and kinds[node.args[0].name] == "split":
            kind, inputs = "part", [split_sources[node.args[0].name]]
        elif node.op == "call_function" and node.target is operator.getitem and kinds[node.args[0].name] == "attention":
            if node.args[1] != 0:  # the attention weights (None when not asked for) carry no relevance
                kind = "shape"
            else:
                kind, inputs = "identity", [node.args[0].name]
        elif not derived:
            kind = "constant" if tensors else "shape"  # made from parameters alone, or integer arithmetic
        elif node.op == "call_function" and node.target is operator.getitem:
            kind = "index"
        else:
            kind = _operator_kind(node, module)
            if kind is None:
                what = type(module).__name__ if module is not None else target
                raise UnsupportedOperator(f"no explanation rule for operator {what} at node {node.name!r} ({target}); "
                                          f"supported: {SUPPORTED}")
            if kind == "split":
                split_sources[node.name] = derived[0]
            if kind in ("batchnorm", "linear") and module is None:
                module = _functional_module(kind, node, {op.name: op for op in nodes})
        kinds[node.name] = kind
        nodes.append(OpNode(node.name, target, kind, inputs, module, node, value))
    return graph_module, nodes


def consumers(nodes: Iterable[OpNode], name: str) -> list[OpNode]:
    """The nodes that read the tensor ``name``."""
    return [op for op in nodes if name in op.inputs]


def first_layer(nodes: Iterable[OpNode]) -> str | None:
    """The first convolution or dense layer (LRP's first-layer rule applies there)."""
    return next((op.name for op in nodes if op.kind in ("conv", "linear")), None)


def _out_of_place(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "inplace": False} if "inplace" in kwargs else kwargs


def run_forward(nodes: list[OpNode], image: torch.Tensor) -> dict[str, Any]:
    """Execute the traced graph on ``image``; returns every node's output by name."""
    env: dict[str, Any] = {}
    for op in nodes:
        node = op.fx_node
        if op.kind == "input":
            env[op.name] = image
            continue
        if node.op in ("get_attr", "placeholder"):
            env[op.name] = op.value
            continue
        args = torch.fx.map_arg(node.args, lambda n: env[n.name])
        kwargs = torch.fx.map_arg(node.kwargs, lambda n: env[n.name])
        if op.kind == "output":
            env[op.name] = args[0]
        elif op.kind == "gelu":
            env[op.name] = gelu(args[0], getattr(op.module, "approximate", None) or kwargs.get("approximate", "none"))
        elif op.kind == "window_attention":
            env[op.name] = window_attention(*args, **kwargs)
        elif node.op == "call_module":
            if getattr(op.module, "inplace", False) and op.kind in ACTIVATION_FUNCTIONS:
                env[op.name] = ACTIVATION_FUNCTIONS[op.kind](args[0])
            else:
                env[op.name] = op.module(*args, **kwargs)
        elif node.op == "call_function":
            env[op.name] = OUT_OF_PLACE.get(node.target, node.target)(*args, **_out_of_place(kwargs))
        else:  # call_method
            method = "relu" if node.target == "relu_" else node.target
            env[op.name] = getattr(args[0], method)(*args[1:], **kwargs)
    return env
