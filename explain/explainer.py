"""`Explainer`: one forward, then every requested explanation for K classes in one batched pass.

```python
explainer = Explainer(model, methods=[GradCAM(layer="features.norm5"), LRP(composite="epsilon", epsilon=1.0)])
out = explainer(x, targets)  # x [B, C, H, W]; targets int64 [B, K]
out["probabilities"], out["logits"], out["gradcam"] [B, K, h, w], out["lrp"] [B, K, H, W]
```
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..grammar import DEFAULT_EPSILON, DEFAULT_LAYER
from .cam import VARIANTS, cam
from .canonizers import batchnorm_after_conv
from .canonizers import merge_batchnorm as fold_batchnorm
from .composites import Composite, make_composite
from .core import DEFAULT_STABILIZER, STRUCTURAL_KINDS, Factors, Rule, times
from .gradients import gradient_rule
from .graph import OpNode, consumers, first_layer, run_forward, trace
from .layouts import FEATURE_MAPS, as_feature_map, follow_layouts
from .rules import fold_batchnorm_scales

# What reaches a node on the way back: a [B, K, ...] tensor and the class-independent factor it is
# still to be multiplied by, as multiplicands (none: 1), see core.Factored.
Pending = tuple[torch.Tensor, Factors]


# LRP's seed: the one-hot class times 2^10 instead of times the logit, the map multiplied by
# logit / 2^10 at the end. The rules are linear in the seed (their denominators depend on the
# forward only), so in FP32 this changes nothing but the rounding; in FP16 it lifts the
# relevance reaching a pixel (about 1e-5 of the seed) out of the subnormal range and keeps the
# largest values (the seed itself) far below 65504 (export/precision.py's fp16 plan).
LRP_SEED_SCALE = 2.0**10


def _sum(a: Pending, b: Pending) -> Pending:
    """Two arrivals at one node: the multiplicands both still carry stay pending on the sum, the
    others are multiplied into their own arrival (DenseNet: each part of a concatenation arrives
    from every later layer with the part itself as factor)."""
    def outside(factor: Factors, other: Factors) -> Factors:
        return tuple(f for f in factor if not any(f is g for g in other))

    common = tuple(f for f in a[1] if any(f is g for g in b[1]))
    return times(a[0], outside(a[1], common)) + times(b[0], outside(b[1], common)), common


@dataclass(frozen=True)
class GradCAM:
    """A Grad-CAM-family map at ``layer`` (a module path or traced node name)."""

    layer: str = DEFAULT_LAYER
    variant: str = "gradcam"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown Grad-CAM variant {self.variant!r}; known: {', '.join(VARIANTS)}")

    @property
    def key(self) -> str:
        return f"gradcam/{self.variant}"


@dataclass(frozen=True)
class LRP:
    """LRP with a named composite (or a Composite of your own rules); ``bounds`` (low, high per
    input channel) for z-box rules."""

    composite: str | Composite = "epsilon"
    epsilon: float = DEFAULT_EPSILON
    stabilizer: float = DEFAULT_STABILIZER
    gamma: float = 0.25
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def key(self) -> str:
        return f"lrp/{self.name}"

    @property
    def name(self) -> str:
        return self.composite.name if isinstance(self.composite, Composite) else self.composite

    def build(self) -> Composite:
        if isinstance(self.composite, Composite):
            return self.composite
        bounds = None if self.bounds is None else tuple(torch.tensor(b) for b in self.bounds)
        return make_composite(self.composite, self.epsilon, self.stabilizer, self.gamma, bounds)


def _sanitise(name: str) -> str:
    return name.replace(".", "_")


class Explainer(nn.Module):
    """A model and its explanations as one feed-forward module (exportable to ONNX)."""

    def __init__(
        self,
        model: nn.Module,
        methods: list[GradCAM | LRP] | tuple[GradCAM | LRP, ...] = (GradCAM(),),
        expose_gradients: bool = False,
        merge_batchnorm: bool = False,
        fold_factors: bool = True,
    ) -> None:
        """``expose_gradients`` adds ``target_activations`` [B, C, h, w] and ``target_gradients``
        [B, K, C, h, w] at the first GradCAM's layer, from which any CAM variant can be computed.
        ``merge_batchnorm`` folds each BatchNorm into the convolution it directly follows.
        ``fold_factors`` computes each rule's class-independent factors once per image and
        multiplies chains of them into one (core.Factored); False applies every rule as it is
        written, for comparison."""
        super().__init__()
        self.fold_factors = fold_factors
        model = copy.deepcopy(model).eval()
        self.model = model
        _, self.nodes = trace(model)
        self.by_name = {op.name: op for op in self.nodes}
        self.merged = batchnorm_after_conv(self.nodes) if merge_batchnorm else []
        for conv, norm in self.merged:
            fold_batchnorm(conv.module, norm.module)
        self.methods = list(methods)
        keys = [m.key for m in self.methods]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"methods repeat an output: {keys}")
        self.output_keys = self._output_keys()
        self._input = self.nodes[0].name
        self._logits = self.nodes[-1].inputs[0]
        self._first_layer = first_layer(self.nodes)
        self.cam_layers = {m.layer: self._resolve_layer(m.layer) for m in self.methods if isinstance(m, GradCAM)}
        if expose_gradients and not self.cam_layers:
            raise ConfigError("expose_gradients needs a GradCAM method (its layer is the one exposed)")
        self.exposed_layer = next(iter(self.cam_layers)) if expose_gradients else None
        self._layouts: dict[str, str | None] | None = None  # each node's layout, followed on the first forward
        self.gradient_rules = nn.ModuleDict()  # built for what is asked: from the earliest CAM layer on
        if self.cam_layers:
            self._ensure_gradient_rules(min(self._position(op.name) for op in self.cam_layers.values()))
        self.lrp_rules = nn.ModuleDict()
        for method in self.methods:
            if isinstance(method, LRP):
                composite = method.build()
                rules = {op.name: composite.rule_for(op, self.by_name, op.name == self._first_layer,
                                                     self._nonnegative(op.inputs))
                         for op in self.nodes if op.kind not in STRUCTURAL_KINDS}
                if fold_factors:
                    fold_batchnorm_scales(rules, self.nodes)
                self.lrp_rules[_sanitise(method.name)] = nn.ModuleDict(rules)

    def _nonnegative(self, names: list[str]) -> bool:
        """Whether these tensors are >= 0 by construction: ReLU outputs, and pools, concatenations
        and reshapes of them."""
        def check(name: str) -> bool:
            op = self.by_name[name]
            if op.kind == "relu":
                return True
            return op.kind in ("maxpool", "avgpool", "adaptive_avgpool", "cat", "reshape", "identity") and all(
                check(n) for n in op.inputs)

        return bool(names) and all(check(n) for n in names)

    def _output_keys(self) -> dict[str, str]:
        """Output name per method key: bare 'gradcam'/'lrp' when a family is requested once."""
        families = [m.key.split("/")[0] for m in self.methods]
        return {m.key: (f if families.count(f) == 1 else m.key) for m, f in zip(self.methods, families)}

    def _resolve_layer(self, layer: str) -> OpNode:
        """A module path (a layer; a container: its last operation), else a traced node's name."""
        matches = [op for op in self.nodes if op.fx_node is not None and op.fx_node.op == "call_module"
                   and op.target == layer]
        inside = [op for op in self.nodes if layer in op.scopes and op.kind not in STRUCTURAL_KINDS]
        if not matches and inside:  # a container (a dense block, a ResNet stage): its last operation
            matches = inside[-1:]
        if not matches:
            matches = [op for op in self.nodes if op.name == layer]
        if len(matches) != 1:
            known = [op.target for op in self.nodes if op.module is not None]
            raise ConfigError(
                f"target layer {layer!r} is not one traced node (found {len(matches)}); "
                f"{len(known)} layers, e.g. {', '.join(known[:2])} ... {', '.join(known[-3:])}"
            )
        if matches[0].kind in STRUCTURAL_KINDS:
            raise ConfigError(f"target layer {layer!r} has no feature map")
        return matches[0]

    def _position(self, name: str) -> int:
        return next(i for i, op in enumerate(self.nodes) if op.name == name)

    def _ensure_gradient_rules(self, start: int) -> None:
        """Gradient rules for every node after position ``start`` (weights shared with the model)."""
        for op in self.nodes[start + 1:]:
            if op.kind not in STRUCTURAL_KINDS and op.name not in self.gradient_rules:
                self.gradient_rules[op.name] = gradient_rule(op, self.by_name)

    def activation_at(self, op: OpNode, env: dict) -> torch.Tensor:
        """The feature map the next layers see: after the ReLU when a ReLU is its only consumer.

        torchvision's DenseNet applies ``F.relu(inplace=True)`` to ``features.norm5``, so the
        activations stored there (by hooks, as pytorch-grad-cam does) are post-ReLU while the
        gradient is the one at the BatchNorm output; chexplain reads the same pair.
        """
        readers = consumers(self.nodes, op.name)
        if len(readers) == 1 and readers[0].kind == "relu":
            return env[readers[0].name]
        return env[op.name]

    def feature_map(self, layer: str, env: dict, gradients: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A CAM layer's activations [B, C, h, w] and class gradients [B, K, C, h, w], channels
        first whatever the layer's own layout (explain/layouts.py; followed once, on the first
        forward, from its tensors' shapes)."""
        if self._layouts is None:
            self._layouts = follow_layouts(self.nodes, env)
        op = self.cam_layers[layer]
        layout = self._layouts.get(op.name)
        working = () if layout in FEATURE_MAPS else [
            o.target for o in self.nodes if o.module is not None and self._layouts.get(o.name) in FEATURE_MAPS]
        return as_feature_map(self.activation_at(op, env), gradients[op.name], layout, layer, working)

    def reverse(self, rules: nn.ModuleDict, env: dict, seed: torch.Tensor, capture: set[str] | None = None) -> dict[str, torch.Tensor]:
        """Walk the nodes backwards from the logits; returns what arrived at ``capture`` (or the input)."""
        pending: dict[str, Pending] = {self._logits: (seed, ())}
        captured: dict[str, torch.Tensor] = {}
        wanted = set(capture) if capture else {self._input}
        for op in reversed(self.nodes):
            if op.name not in pending:
                continue
            arrived = pending.pop(op.name)
            if op.name in wanted:
                captured[op.name] = times(*arrived)
                if len(captured) == len(wanted):
                    break
            if op.kind == "input":
                continue
            inputs, output = [env[n] for n in op.inputs], env[op.name]
            for name, part in zip(op.inputs, self._step(rules[op.name], arrived, inputs, output)):
                if part is None or self.by_name[name].kind == "constant":  # parameters receive nothing
                    continue
                pending[name] = _sum(pending[name], part) if name in pending else part
        return captured

    def _step(self, rule: Rule, arrived: Pending, inputs: list[torch.Tensor], output: torch.Tensor) -> list[Pending | None]:
        """One node backwards: a folded rule multiplies its factor into what is pending and applies
        its core to the class tensor; any other gets the factor multiplied out first."""
        parts = rule.factored(inputs, output) if self.fold_factors else None
        if parts is None:
            return [None if g is None else (g, ()) for g in rule.backward(times(*arrived), inputs, output)]
        return parts.apply(*arrived)

    def class_gradients(self, image: torch.Tensor, targets: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """d logit[target] / d output of each layer (the input when ``layers`` is None): [B, K, ...]."""
        env = run_forward(self.nodes, image)
        names = [self._resolve_layer(layer).name for layer in layers] if layers else [self._input]
        self._ensure_gradient_rules(min(self._position(name) for name in names))
        onehot = F.one_hot(targets, env[self._logits].shape[1]).to(image.dtype)
        captured = self.reverse(self.gradient_rules, env, onehot, capture=set(names))
        return {layer: captured[name] for layer, name in zip(layers or ["input"], names)}

    def forward(self, image: torch.Tensor, targets: torch.Tensor | None = None, top_k: int | None = None) -> dict[str, torch.Tensor]:
        """Probabilities, logits, ``targets`` and one map per method for the K target classes.

        Targets: given [B, K]; else the ``top_k`` most probable classes (most probable
        first); else every class.
        """
        env = run_forward(self.nodes, image)
        logits = env[self._logits]
        probabilities = torch.sigmoid(logits)
        if targets is None and top_k:
            targets = torch.topk(logits, top_k, dim=1, largest=True, sorted=True).indices
        elif targets is None:
            targets = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
        out = {"probabilities": probabilities, "logits": logits, "targets": targets}
        onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)  # [B, K, N]
        if self.cam_layers:
            layers = {op.name for op in self.cam_layers.values()}
            gradients = self.reverse(self.gradient_rules, env, onehot, capture=layers)
            for method in self.methods:
                if isinstance(method, GradCAM):
                    out[self.output_keys[method.key]] = cam(method.variant,
                                                            *self.feature_map(method.layer, env, gradients))
            if self.exposed_layer is not None:
                out["target_activations"], out["target_gradients"] = self.feature_map(self.exposed_layer, env,
                                                                                       gradients)
        for method in self.methods:
            if isinstance(method, LRP):
                relevance = self.reverse(self.lrp_rules[_sanitise(method.name)], env, onehot * LRP_SEED_SCALE)[self._input]
                # relevance starts as the target's logit (picked by the one-hot: Mul and ReduceSum, operators of
                # tests/tensorrt_operators.py's allow-list, where a gather would be GatherElements)
                unscale = (onehot * logits.unsqueeze(1)).sum(-1) / LRP_SEED_SCALE
                out[self.output_keys[method.key]] = relevance.sum(2) * unscale[..., None, None]
        return out
