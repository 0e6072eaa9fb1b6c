"""The explained graph: classifier + explanations for K classes, chosen in the graph or given."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ..explain import LRP, Explainer, GradCAM
from ..grammar import DEFAULT_EPSILON, DEFAULT_LAYER, LRP_PREFIX, ClassSelection, parse_methods
from ..models.manifest import Manifest

GRADIENT_OUTPUTS = ("target_activations", "target_gradients")


def build_methods(spec: str, layer: str = DEFAULT_LAYER, epsilon: float = DEFAULT_EPSILON,
                  bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> list[GradCAM | LRP]:
    """``gradcam,gradcam++,lrp:epsilon,lrp:alpha2beta1`` -> the explainer's methods; ``none`` -> []."""
    return [LRP(m.name, epsilon=epsilon, bounds=bounds) if m.family == "lrp" else GradCAM(layer, m.name)
            for m in parse_methods(spec)]


def methods_from_manifest(explanations: dict[str, Any], labels: list[str]) -> dict[str, GradCAM | LRP]:
    """The explainer methods behind a graph's method labels, as its manifest recorded them
    (a CAM variant computed from exposed gradients: Grad-CAM of that variant at the exposed layer)."""
    entries = explanations.get("methods", [])
    methods: dict[str, GradCAM | LRP] = {}
    for label in labels:
        if label.startswith(LRP_PREFIX):
            entry = next(e for e in entries if e["family"] == "lrp" and f"{LRP_PREFIX}{e['composite']}" == label)
            bounds = entry.get("bounds")
            methods[label] = LRP(entry["composite"], epsilon=entry["epsilon"], stabilizer=entry["stabilizer"],
                                 gamma=entry["gamma"], bounds=None if bounds is None else tuple(map(tuple, bounds)))
        else:
            entry = next((e for e in entries if e["family"] == "gradcam" and e["variant"] == label), None)
            methods[label] = GradCAM(entry["layer"] if entry else explanations["exposed_layer"], label)
    return methods


def input_bounds(manifest: Manifest) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalised values of black (0) and white (1) per channel: the z-box bounds."""
    prep = manifest.preprocessing
    return (tuple((0 - m) / s for m, s in zip(prep.mean, prep.std)),
            tuple((1 - m) / s for m, s in zip(prep.mean, prep.std)))


class ExplainedGraph(nn.Module):
    """``forward(image[, targets])`` -> probabilities, logits, targets (when chosen in the graph), maps."""

    def __init__(self, explainer: Explainer, selection: ClassSelection) -> None:
        super().__init__()
        self.explainer = explainer
        self.selection = selection
        self.register_buffer("fixed_targets", torch.tensor([selection.fixed], dtype=torch.int64))
        maps = [explainer.output_keys[m.key] for m in explainer.methods]
        exposed = list(GRADIENT_OUTPUTS) if explainer.exposed_layer else []
        chosen = () if selection.mode == "input" else ("targets",)  # an input cannot be an output too
        self.output_names = ("probabilities", "logits", *chosen, *maps, *exposed)

    def forward(self, image: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        mode = self.selection.mode
        if mode == "fixed":
            targets = self.fixed_targets.expand(image.shape[0], -1)
        out = self.explainer(image, targets, top_k=self.selection.k if mode == "topk" else None)
        return tuple(out[name] for name in self.output_names)


def explanation_settings(explainer: Explainer, selection: ClassSelection, classes: tuple[str, ...]) -> dict[str, Any]:
    """What the manifest records about the explanations in the graph."""
    methods = []
    for method in explainer.methods:
        entry = {"output": explainer.output_keys[method.key], "family": method.key.split("/")[0], **asdict(method)}
        if isinstance(method, LRP):
            entry["composite"] = method.name
        methods.append(entry)
    return {
        "methods": methods,
        "classes": selection.spec,
        "fixed_classes": [classes[i] for i in selection.fixed],
        "targets_input": selection.mode == "input",
        "exposed_layer": explainer.exposed_layer,
        "merged_batchnorms": len(explainer.merged),
        "relevance_seed": "target logit",
        "cam": "raw map at the layer's resolution, after ReLU, not normalised",
        "lrp": "relevance at the input, summed over channels, signed, not normalised",
    }
