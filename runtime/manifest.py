"""The model manifest: everything a runtime needs to use a model, with no torch.

A manifest travels with every checkpoint and is written into the exported ONNX
graph's ``metadata_props`` (key ``chexplain.manifest``), so the runtime needs
nothing but the ``.onnx`` file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..grammar import ClassSelection, MethodSpec, parse_classes

MANIFEST_KEY = "chexplain.manifest"
FORMAT_VERSION = 1

CHEXPERT_CLASSES: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

NOT_FOR_CLINICAL_USE = "not for clinical use"

CROP_POLICIES = ("resize", "center", "pad")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    """How a radiograph (gray, scaled to [0, 1]) becomes the network input.

    ``crop``: ``resize`` stretches the whole image to ``size``; ``center`` cuts the
    largest centred region with the input's aspect ratio first; ``pad`` letterboxes the
    image with zeros (black) to that aspect ratio first, so no anatomy is cut.
    Normalisation: ``(x - mean[c]) / std[c]`` per input channel.
    """

    size: tuple[int, int] = (224, 224)
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop: str = "resize"

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if self.crop not in CROP_POLICIES:
            raise ConfigError(f"crop must be one of {', '.join(CROP_POLICIES)}, not {self.crop!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, not {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError("mean and std need one value per input channel")
        if min(self.size) < 32:
            raise ConfigError(f"input size {self.size} is too small")


# Weights that know nothing of patients' radiographs, and what every output says about them.
DEMO_WARNINGS = {
    "seeded": "SEEDED RANDOM WEIGHTS: predictions are meaningless",
    "phantoms": "DEMO MODEL TRAINED ON SYNTHETIC PHANTOMS: meaningless on patients' radiographs",
}


@dataclass
class Weights:
    """Where the parameters came from."""

    source: str = "seeded"  # seeded | phantoms | chexplain | torchvision | torchxrayvision | chexnet
    file: str | None = None
    sha256: str | None = None
    seed: int | None = None
    training_data: str = "none (random initialisation)"


# How to read the maps, written beside the explanation settings for whoever opens a manifest.
EXPLANATION_NOTES = {"relevance_seed": "target logit",
                     "cam": "raw map at the layer's resolution, after ReLU, not normalised",
                     "lrp": "relevance at the input, summed over channels, signed, not normalised"}


@dataclass(frozen=True)
class MethodEntry:
    """One explanation a graph outputs, as the export recorded it: a Grad-CAM-family map
    (``variant`` at ``layer``) or an LRP map (``composite`` with its parameters)."""

    output: str  # the ONNX output's name
    family: str  # gradcam | lrp
    variant: str = ""
    layer: str = ""
    composite: str = ""
    epsilon: float | None = None
    stabilizer: float | None = None
    gamma: float | None = None
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def label(self) -> str:
        """The method as the CLI names it: ``gradcam++``, ``lrp:epsilon-plus-smooth-bn``."""
        return MethodSpec(self.family, self.composite if self.family == "lrp" else self.variant).label

    def to_dict(self) -> dict[str, Any]:
        if self.family == "lrp":
            return {"output": self.output, "family": "lrp", "composite": self.composite, "epsilon": self.epsilon,
                    "stabilizer": self.stabilizer, "gamma": self.gamma,
                    "bounds": None if self.bounds is None else [list(b) for b in self.bounds]}
        return {"output": self.output, "family": self.family, "variant": self.variant, "layer": self.layer}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodEntry:
        bounds = data.get("bounds")
        if data["family"] == "lrp":
            return cls(data["output"], "lrp", composite=data["composite"], epsilon=data["epsilon"],
                       stabilizer=data["stabilizer"], gamma=data["gamma"],
                       bounds=None if bounds is None else (tuple(bounds[0]), tuple(bounds[1])))
        return cls(data["output"], data["family"], variant=data["variant"], layer=data["layer"])


@dataclass(frozen=True)
class ExplanationSettings:
    """What a graph explains: its methods, the classes (chosen in the graph, fixed, or a
    ``targets`` input), the layer whose activations and gradients it exposes. Written by the
    export, read by every consumer; the JSON keeps the classes as their ``--classes`` spec."""

    methods: tuple[MethodEntry, ...] = ()
    classes: ClassSelection | None = None  # None: a graph without explanations
    class_names: tuple[str, ...] = ()  # the fixed classes' names (mode "fixed")
    exposed_layer: str | None = None
    merged_batchnorms: int = 0

    @property
    def targets_input(self) -> bool:
        """Whether the graph takes the classes to explain as a ``targets`` input."""
        return self.classes is not None and self.classes.mode == "input"

    def class_count(self) -> int:
        """K, the classes explained per image (0 without explanations; a targets input: any K)."""
        return 0 if self.classes is None or self.classes.k is None else self.classes.k

    def to_dict(self) -> dict[str, Any]:
        if self.classes is None:
            return {}
        return {"methods": [m.to_dict() for m in self.methods], "classes": self.classes.spec,
                "fixed_classes": list(self.class_names), "targets_input": self.targets_input,
                "exposed_layer": self.exposed_layer, "merged_batchnorms": self.merged_batchnorms, **EXPLANATION_NOTES}

    @classmethod
    def from_dict(cls, data: dict[str, Any], classes: tuple[str, ...]) -> ExplanationSettings:
        """The settings as a manifest stored them (``classes``: the model's class names)."""
        if not data:
            return cls()
        try:
            names = tuple(data.get("fixed_classes", ()))
            spec = data["classes"]
            selection = parse_classes(",".join(names) if spec == "fixed" else spec, classes)
            return cls(tuple(MethodEntry.from_dict(m) for m in data["methods"]), selection, names,
                       data.get("exposed_layer"), int(data.get("merged_batchnorms", 0)))
        except (KeyError, TypeError, ConfigError) as error:
            raise ConfigError(f"the manifest's explanations cannot be read ({type(error).__name__}: {error}); "
                              f"re-export the graph with `chexplain export`") from None


@dataclass
class Manifest:
    """Identity, classes, preprocessing and decision thresholds of one model."""

    name: str
    architecture: str = "densenet121"
    classes: tuple[str, ...] = CHEXPERT_CLASSES
    missing_classes: tuple[str, ...] = ()
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    thresholds: dict[str, float] = field(default_factory=dict)
    weights: Weights = field(default_factory=Weights)
    status: str = NOT_FOR_CLINICAL_USE
    description: str = ""
    explanations: ExplanationSettings = field(default_factory=ExplanationSettings)
    precision: str = "fp32"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.missing_classes = tuple(self.missing_classes)
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError("class names must be unique")
        unknown = set(self.thresholds) - set(self.classes)
        if unknown:
            raise ConfigError(f"thresholds for unknown classes: {', '.join(sorted(unknown))}")
        self.thresholds = {c: float(self.thresholds.get(c, 0.5)) for c in self.classes}

    @property
    def is_demo(self) -> bool:
        """True when the weights know nothing of patients' radiographs (seeded, or trained on phantoms)."""
        return self.weights.source in DEMO_WARNINGS

    def banner(self) -> str:
        """One line that every output shows next to the predictions."""
        words = [f"model {self.name}", self.status.upper()]
        if self.is_demo:
            words.append(DEMO_WARNINGS[self.weights.source])
        return " | ".join(words)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "explanations": self.explanations.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ConfigError(
                f"manifest format {version} is newer than this chexplain understands ({FORMAT_VERSION})"
            )
        data["preprocessing"] = Preprocessing(**data.get("preprocessing", {}))
        data["weights"] = Weights(**data.get("weights", {}))
        data["explanations"] = ExplanationSettings.from_dict(data.get("explanations") or {},
                                                             tuple(data.get("classes", CHEXPERT_CLASSES)))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls.from_dict(json.loads(text))


def slug(text: str) -> str:
    """A file-name-safe form of a class, model or device name: ``Pleural Effusion`` -> ``pleural-effusion``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file (weights, graphs, engines), for provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
