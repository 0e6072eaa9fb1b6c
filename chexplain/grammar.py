"""The user-facing grammar and defaults, in one torch-free place.

Every stage speaks it: the CLI's choices and help, the exporter (which methods and classes
go into a graph), the runtime (which of a graph's methods and classes to render), the
benchmark and the DICOM node. A name or default changed here changes everywhere.

- methods: ``gradcam``, ``gradcam++``, ``hirescam``, ``layercam``, ``guided-gradcam`` and
  ``lrp:<composite>`` (``lrp`` alone is ``lrp:epsilon``), comma-separated; ``none``.
- classes: ``all``, ``topk:N``, ``input`` (a ``targets`` graph input) or class names.
- backends, precisions and the export/build defaults below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

CAM_VARIANTS = ("gradcam", "gradcam++", "hirescam", "layercam", "guided-gradcam")
LRP_COMPOSITES = ("epsilon", "z", "alpha2beta1", "alpha1beta0", "epsilon-plus", "epsilon-plus-flat",
                  "epsilon-plus-smooth", "epsilon-alpha2beta1", "epsilon-gamma-box", "deep-taylor",
                  # the same with the epsilon rule on every BatchNorm instead of Pass (explain/composites.py)
                  "epsilon-bn", "alpha2beta1-bn", "epsilon-plus-bn", "epsilon-alpha2beta1-bn", "epsilon-plus-flat-bn",
                  "epsilon-plus-smooth-bn")
BATCHNORM_RULE_SUFFIX = "-bn"  # composites whose maps survive noise and FP16 rounding on the trained model
LRP_PREFIX = "lrp:"
BARE_LRP_COMPOSITE = "epsilon"  # what a bare ``lrp`` names (the seed study's composite)
NO_METHODS = "none"
ALL_METHODS = "all"  # runtime only: the graph's methods plus the CAM variants computed from exposed gradients

BACKENDS = ("auto", "tensorrt", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "mixed")
CHECKPOINT_KINDS = ("auto", "chexplain", "torchvision", "torchxrayvision", "chexnet")

DEFAULT_MODEL = "densenet121-chexpert"
# LRP's default: the smooth flat rule on the first convolution, z+ on the others, epsilon on the classifier and
# (with epsilon 1e-3) on BatchNorms; stable under input noise far below an 8-bit step on the trained model, where
# lrp:epsilon (the seed study's) is not, the best localised of the stable composites, and without the flat rule's
# checkerboard (docs/explanations.md, "Trustworthy LRP").
DEFAULT_LRP_COMPOSITE = "epsilon-plus-smooth-bn"
DEFAULT_LRP = f"{LRP_PREFIX}{DEFAULT_LRP_COMPOSITE}"
DEFAULT_EXPLAIN = f"gradcam,{DEFAULT_LRP}"
DEFAULT_CLASSES = "topk:3"
DEFAULT_LAYER = "features.norm5"
DEFAULT_EPSILON = 1.0  # the study's epsilon; also keeps deep networks far from float32 overflow
DEFAULT_OPSET = 20  # TensorRT 10.3 (JetPack 6) parses up to opset 20
OPSET_RANGE = (17, 20)
DEFAULT_PRECISION = "fp32"
PARITY_MODES = ("strict", "warn")  # export: refuse, or keep with a warning, a graph that does not match PyTorch
DEFAULT_ENGINE_PRECISION = "mixed"
DEFAULT_ENGINE_BATCH = "1:1:8"
DEFAULT_WORKSPACE_GB = 4.0
DEFAULT_OPACITY = 0.6


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_list(text: str, kind: Callable[[str], Any] = str) -> list[Any]:
    """A non-empty comma-separated list, each item converted by ``kind``."""
    values = [kind(part) for part in split_list(text)]
    if not values:
        raise ConfigError(f"{text!r}: expected a comma-separated list")
    return values


# -- methods ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MethodSpec:
    """One method as a user names it: a CAM variant, or LRP with a composite."""

    family: str  # gradcam | lrp
    name: str  # the CAM variant or the LRP composite

    @property
    def label(self) -> str:
        return f"{LRP_PREFIX}{self.name}" if self.family == "lrp" else self.name

    @property
    def signed(self) -> bool:
        """LRP relevance is signed; CAMs are non-negative after their ReLU."""
        return self.family == "lrp"


def method_label(name: str) -> str:
    """The canonical label of a method name (``lrp`` -> ``lrp:epsilon``)."""
    return f"{LRP_PREFIX}{BARE_LRP_COMPOSITE}" if name == "lrp" else name


def parse_method(name: str) -> MethodSpec:
    label = method_label(name.strip())
    if label.startswith(LRP_PREFIX):
        composite = label[len(LRP_PREFIX):]
        if composite not in LRP_COMPOSITES:
            raise ConfigError(f"unknown LRP composite {composite!r}; known: {', '.join(LRP_COMPOSITES)}")
        return MethodSpec("lrp", composite)
    if label in CAM_VARIANTS:
        return MethodSpec("gradcam", label)
    raise ConfigError(f"unknown method {name!r}; known: {', '.join(CAM_VARIANTS)}, lrp:<{'|'.join(LRP_COMPOSITES)}>")


def parse_methods(spec: str) -> list[MethodSpec]:
    """``gradcam,lrp:alpha2beta1`` -> specs, in order, without repeats; ``none`` -> []."""
    specs: list[MethodSpec] = []
    for item in split_list(spec):
        if item == NO_METHODS:
            continue
        method = parse_method(item)
        if method not in specs:
            specs.append(method)
    return specs


def requested_methods(values: Iterable[str]) -> list[str]:
    """``--method`` values, repeatable and comma-separated, one name each (a bare ``lrp`` stays
    bare: the runtime reads it as the graph's one LRP map, else ``lrp:epsilon``)."""
    return [name for value in values for name in split_list(value)]


# -- classes ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassSelection:
    """Which K classes are explained: ``all``, ``topk:N``, ``input`` (a ``targets`` input) or
    a fixed list of class indices."""

    mode: str  # all | topk | input | fixed
    k: int | None = None
    fixed: tuple[int, ...] = ()

    @property
    def spec(self) -> str:
        return {"all": "all", "input": "input", "topk": f"topk:{self.k}"}.get(self.mode, "fixed")


def parse_top_k(spec: str, num_classes: int) -> int:
    """N of ``topk:N``, checked against the number of classes."""
    text = spec.strip()[len("topk:"):]
    k = int(text) if text.isdigit() else 0
    if not 1 <= k <= num_classes:
        raise ConfigError(f"--classes {spec}: k must be a whole number from 1 to {num_classes}")
    return k


def parse_classes(spec: str, classes: Sequence[str], *, allow_input: bool = True) -> ClassSelection:
    """The one parser of ``--classes``: ``all``, ``topk:N``, ``input`` or class names."""
    spec = spec.strip()
    if spec == "all":
        return ClassSelection("all", len(classes))
    if spec == "input" and allow_input:
        return ClassSelection("input")
    if spec.startswith("topk:"):
        return ClassSelection("topk", parse_top_k(spec, len(classes)))
    names = split_list(spec)
    unknown = [n for n in names if n not in classes]
    if unknown or not names:
        choices = "all, topk:N, input" if allow_input else "all, topk:N"
        raise ConfigError(f"--classes {spec!r}: expected {choices} or class names from: {', '.join(classes)}")
    return ClassSelection("fixed", len(names), tuple(classes.index(n) for n in names))

