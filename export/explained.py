"""The explained graph: classifier + explanations for K classes, chosen in the graph or given."""

from __future__ import annotations

import torch
from torch import nn

from ..explain import LRP, Explainer, GradCAM
from ..grammar import DEFAULT_EPSILON, DEFAULT_LAYER, LRP_PREFIX, ClassSelection, parse_methods
from ..runtime.manifest import ExplanationSettings, Manifest, MethodEntry

GRADIENT_OUTPUTS = ("target_activations", "target_gradients")


def build_methods(spec: str, layer: str = DEFAULT_LAYER, epsilon: float = DEFAULT_EPSILON,
                  bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> list[GradCAM | LRP]:
    """``gradcam,gradcam++,lrp:epsilon,lrp:alpha2beta1`` -> the explainer's methods; ``none`` -> []."""
    return [LRP(m.name, epsilon=epsilon, bounds=bounds) if m.family == "lrp" else GradCAM(layer, m.name)
            for m in parse_methods(spec)]


def methods_from_manifest(settings: ExplanationSettings, labels: list[str]) -> dict[str, GradCAM | LRP]:
    """The explainer methods behind a graph's method labels, as its manifest recorded them
    (a CAM variant computed from exposed gradients: Grad-CAM of that variant at the exposed layer)."""
    entries = {entry.label: entry for entry in settings.methods}
    methods: dict[str, GradCAM | LRP] = {}
    for label in labels:
        entry = entries.get(label)
        if label.startswith(LRP_PREFIX):
            methods[label] = LRP(entry.composite, epsilon=entry.epsilon, stabilizer=entry.stabilizer,
                                 gamma=entry.gamma, bounds=entry.bounds)
        else:
            methods[label] = GradCAM(entry.layer if entry else settings.exposed_layer, label)
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


def _entry(output: str, method: GradCAM | LRP) -> MethodEntry:
    if isinstance(method, LRP):
        bounds = None if method.bounds is None else (tuple(method.bounds[0]), tuple(method.bounds[1]))
        return MethodEntry(output, "lrp", composite=method.name, epsilon=method.epsilon, stabilizer=method.stabilizer,
                           gamma=method.gamma, bounds=bounds)
    return MethodEntry(output, "gradcam", variant=method.variant, layer=method.layer)


def explanation_settings(explainer: Explainer, selection: ClassSelection, classes: tuple[str, ...]) -> ExplanationSettings:
    """What the manifest records about the explanations in the graph."""
    return ExplanationSettings(tuple(_entry(explainer.output_keys[m.key], m) for m in explainer.methods), selection,
                               tuple(classes[i] for i in selection.fixed), explainer.exposed_layer,
                               len(explainer.merged))
