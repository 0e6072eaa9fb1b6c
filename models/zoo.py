"""Named models: the default DenseNet121 for the CheXpert observations, or a checkpoint file."""

from __future__ import annotations

from pathlib import Path

import torch

from ..grammar import DEFAULT_MODEL
from .checkpoints import load_checkpoint
from .densenet import DenseNet, build_densenet
from .manifest import CHEXPERT_CLASSES, Manifest, Weights

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_SEED = 0


def seeded_model(seed: int = DEFAULT_SEED, name: str = DEFAULT_MODEL) -> tuple[DenseNet, Manifest]:
    """DenseNet121 with torchvision's initialisation from a fixed seed: a demo, not a classifier."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_densenet("densenet121", num_classes=len(CHEXPERT_CLASSES)).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    manifest = Manifest(
        name=name,
        weights=Weights(source="seeded", seed=seed),
        description="DenseNet121 architecture with seeded random weights: a stand-in where no trained weights are found.",
    )
    return model, manifest


def bundled_weights(name: str) -> Path | None:
    """The committed checkpoint for a named model, if one is bundled."""
    path = WEIGHTS_DIR / f"{name}.pt"
    return path if path.is_file() else None


def load_model(spec: str = DEFAULT_MODEL, **checkpoint_options) -> tuple[DenseNet, Manifest]:
    """A model by name (``densenet121-chexpert``) or by checkpoint path."""
    if spec == DEFAULT_MODEL:
        bundled = bundled_weights(spec)
        if bundled is None:
            return seeded_model()
        return load_checkpoint(bundled, kind="chexplain", name=spec)
    path = Path(spec)
    if path.suffix in {".pt", ".pth", ".tar", ".ckpt", ".bin"} or path.exists():
        return load_checkpoint(path, **checkpoint_options)
    raise ValueError(f"unknown model {spec!r}: give {DEFAULT_MODEL!r} or the path of a checkpoint file")
