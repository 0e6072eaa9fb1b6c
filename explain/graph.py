"""Trace a model once into operator nodes, and run its forward keeping every output.

The forward is executed node by node from the torch.fx graph with every ReLU made
out-of-place, so the activations that the reverse pass needs stay intact (torchvision's
``ReLU(inplace=True)`` would otherwise overwrite the BatchNorm output before it).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

# Module types, by operator kind. Order matters only for readability.
MODULE_KINDS: dict[type[nn.Module], str] = {
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.BatchNorm2d: "batchnorm",
    nn.ReLU: "relu",
    nn.MaxPool2d: "maxpool",
    nn.AvgPool2d: "avgpool",
    nn.AdaptiveAvgPool2d: "adaptive_avgpool",
    nn.Flatten: "reshape",
    nn.Dropout: "identity",
    nn.Identity: "identity",
}
FUNCTION_KINDS: dict[Any, str] = {
    torch.cat: "cat",
    operator.add: "add",
    torch.add: "add",
    operator.iadd: "add",
    torch.flatten: "reshape",
    F.relu: "relu",
    torch.relu: "relu",
    F.adaptive_avg_pool2d: "adaptive_avgpool",
    F.dropout: "identity",
}
METHOD_KINDS = {"view": "reshape", "reshape": "reshape", "flatten": "reshape", "relu": "relu", "relu_": "relu"}
SHAPE_METHODS = {"size", "dim"}  # produce ints, never relevance
STRUCTURAL_KINDS = ("input", "output", "shape")  # nodes that carry no rule


class UnsupportedOperator(Exception):
    """An operator without a rule: the explainer refuses to build rather than pass it silently."""


@dataclass
class OpNode:
    """One operation of the traced model."""

    name: str  # fx node name
    target: str  # module path, or function/method name
    kind: str  # operator kind (see *_KINDS), or "input"/"output"/"shape"
    inputs: list[str]  # names of the tensor-producing nodes it reads
    module: nn.Module | None = None
    fx_node: torch.fx.Node | None = field(default=None, repr=False)

    @property
    def scopes(self) -> list[str]:
        """Paths of the modules this operation runs inside (outermost first)."""
        return list(self.fx_node.meta.get("nn_module_stack", {})) if self.fx_node is not None else []


def _function_name(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def _tensor_inputs(node: torch.fx.Node, shape_nodes: set[str]) -> list[str]:
    found: list[str] = []
    torch.fx.map_arg((node.args, node.kwargs), lambda n: found.append(n.name) if n.name not in shape_nodes else None)
    return found


def trace(model: nn.Module) -> tuple[torch.fx.GraphModule, list[OpNode]]:
    """Trace ``model`` and classify every node; unknown operators raise UnsupportedOperator."""
    graph_module = torch.fx.symbolic_trace(model)
    modules = dict(graph_module.named_modules())
    nodes: list[OpNode] = []
    shape_nodes: set[str] = set()
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            nodes.append(OpNode(node.name, node.target, "input", [], fx_node=node))
            continue
        if node.op == "output":
            nodes.append(OpNode(node.name, "output", "output", _tensor_inputs(node, shape_nodes), fx_node=node))
            continue
        if node.op == "call_module":
            module = modules[node.target]
            kind = next((k for t, k in MODULE_KINDS.items() if type(module) is t), None)
            target = node.target
        elif node.op == "call_function":
            module, target = None, _function_name(node.target)
            kind = FUNCTION_KINDS.get(node.target)
        elif node.op == "call_method":
            module, target = None, node.target
            if node.target in SHAPE_METHODS:
                shape_nodes.add(node.name)
                kind = "shape"
            else:
                kind = METHOD_KINDS.get(node.target)
        else:  # get_attr and anything else
            module, target, kind = None, str(node.target), None
        if kind is None:
            what = type(module).__name__ if module is not None else target
            raise UnsupportedOperator(
                f"no explanation rule for operator {what} at node {node.name!r} ({target}); "
                "supported: Conv2d, Linear, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
                "cat, add, flatten/reshape, Dropout, Identity"
            )
        nodes.append(OpNode(node.name, target, kind, _tensor_inputs(node, shape_nodes), module, node))
    return graph_module, nodes


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
        args = torch.fx.map_arg(node.args, lambda n: env[n.name])
        kwargs = torch.fx.map_arg(node.kwargs, lambda n: env[n.name])
        if op.kind == "output":
            env[op.name] = args[0]
        elif node.op == "call_module":
            env[op.name] = F.relu(args[0]) if op.kind == "relu" else op.module(*args, **kwargs)
        elif node.op == "call_function":
            env[op.name] = node.target(*args, **_out_of_place(kwargs))
        else:  # call_method
            method = "relu" if node.target == "relu_" else node.target
            env[op.name] = getattr(args[0], method)(*args[1:], **kwargs)
    return env
