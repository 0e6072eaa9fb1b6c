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
            raise ValueError(f"crop must be one of {', '.join(CROP_POLICIES)}, not {self.crop!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per input channel")
        if min(self.size) < 32:
            raise ValueError(f"input size {self.size} is too small")


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
    explanations: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.missing_classes = tuple(self.missing_classes)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names must be unique")
        unknown = set(self.thresholds) - set(self.classes)
        if unknown:
            raise ValueError(f"thresholds for unknown classes: {', '.join(sorted(unknown))}")
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
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"manifest format {version} is newer than this chexplain understands ({FORMAT_VERSION})"
            )
        data["preprocessing"] = Preprocessing(**data.get("preprocessing", {}))
        data["weights"] = Weights(**data.get("weights", {}))
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
