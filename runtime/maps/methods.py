"""Which of a graph's explanations to render, and for which classes.

A graph's manifest lists the methods it outputs; a graph exported with
``--expose-gradients`` also offers every other CAM variant, computed here from its
activations and gradients. Classes follow the one ``--classes`` grammar: a graph with an
in-graph top-k can render fewer of its N; a graph with a ``targets`` input takes ``all``
or class names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from ...grammar import ALL_METHODS, CAM_VARIANTS, LRP_PREFIX, method_label, parse_classes
from ..manifest import ExplanationSettings
from .cam_formulas import cam


@dataclass(frozen=True)
class GraphMethod:
    """An explanation the graph outputs, or a CAM variant computed from its exposed gradients."""

    output: str | None  # ONNX output name; None: computed here from target_activations/gradients
    label: str  # gradcam | gradcam++ | ... | lrp:epsilon
    signed: bool

    def maps(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """[B, K, h, w] at the method's native resolution."""
        if self.output is not None:
            return outputs[self.output]
        return cam(self.label, outputs["target_activations"], outputs["target_gradients"])


def graph_methods(settings: ExplanationSettings) -> list[GraphMethod]:
    """The graph's methods, plus every other CAM variant when it exposes its gradients."""
    methods = [GraphMethod(entry.output, entry.label, entry.family == "lrp") for entry in settings.methods]
    if settings.exposed_layer:
        baked = {m.label for m in methods}
        methods += [GraphMethod(None, variant, False) for variant in CAM_VARIANTS if variant not in baked]
    return methods


def select_methods(available: Sequence[GraphMethod], requested: Sequence[str]) -> list[GraphMethod]:
    """The requested methods (``lrp`` means ``lrp:epsilon``, or the graph's LRP map when it has
    just one); the graph's own outputs when none are requested; ``all`` adds the CAM variants
    computed from exposed gradients."""
    if not available:
        raise ConfigError("this graph has no explanations; export it with --explain (e.g. gradcam,lrp:epsilon)")
    if not requested:
        return [m for m in available if m.output is not None]
    if list(requested) == [ALL_METHODS]:
        return list(available)
    by_label = {m.label: m for m in available}
    lrp = [m for m in available if m.label.startswith(LRP_PREFIX)]
    chosen = []
    for name in requested:
        label = method_label(name)
        if name == "lrp" and label not in by_label and len(lrp) == 1:  # bare "lrp": the graph's one LRP map
            label = lrp[0].label
        if label not in by_label:
            raise ConfigError(
                f"method {name!r} is not in the exported graph (it has {', '.join(by_label)}); "
                f"export with --explain {','.join([*by_label, label])}"
            )
        chosen.append(by_label[label])
    return chosen


@dataclass(frozen=True)
class ClassChoice:
    """``--classes`` against a graph: how many of its chosen targets to keep, or the targets to feed."""

    keep: int | None = None  # render the first N of an in-graph top-k (None: all it chose)
    targets: np.ndarray | None = None  # [1, K] for a graph with a targets input

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        return {} if self.targets is None else {"targets": self.targets}


def choose_classes(settings: ExplanationSettings, requested: str | None, classes: Sequence[str]) -> ClassChoice:
    """What ``--classes requested`` means for a graph with these explanation settings."""
    if settings.targets_input:
        try:
            selection = parse_classes(requested or "all", classes, allow_input=False)
        except ConfigError:
            selection = None
        if selection is None or selection.mode == "topk":
            raise ConfigError(f"--classes {requested!r}: this graph takes all or class names from: {', '.join(classes)}")
        indices = range(len(classes)) if selection.mode == "all" else selection.fixed
        return ClassChoice(targets=np.array([list(indices)], dtype=np.int64))
    spec = settings.classes.spec if settings.classes is not None else ""
    if requested in (None, "", spec):
        return ClassChoice()
    if settings.classes is not None and settings.classes.mode == "topk" and requested.startswith("topk:"):
        try:
            return ClassChoice(keep=parse_classes(requested, classes[:settings.classes.k], allow_input=False).k)
        except ConfigError:
            pass
    raise ConfigError(f"--classes {requested}: the graph explains {spec or 'no classes'}; "
                     f"re-export with `chexplain export --classes {requested}`")
