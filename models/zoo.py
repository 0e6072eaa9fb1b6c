"""Named models: the default DenseNet121 for the CheXpert observations, an architecture by name
with seeded weights, or a checkpoint file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ModelNotFoundError
from ..grammar import DEFAULT_MODEL
from ..runtime.manifest import CHEXPERT_CLASSES, Manifest, Weights
from .architectures import ARCHITECTURES, TIMM_PREFIX, build, draw_zeroed_head
from .checkpoints import load_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_SEED = 0
DEFAULT_ARCHITECTURE = "densenet121"


def seeded_model(seed: int = DEFAULT_SEED, name: str = DEFAULT_MODEL,
                 architecture: str = DEFAULT_ARCHITECTURE) -> tuple[nn.Module, Manifest]:
    """An architecture with torchvision's initialisation from a fixed seed: a demo (and a thing to
    time), not a classifier."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build(architecture, num_classes=len(CHEXPERT_CLASSES)).eval()
        draw_zeroed_head(model, architecture)
    finally:
        torch.random.set_rng_state(generator_state)
    manifest = Manifest(
        name=name,
        architecture=architecture,
        weights=Weights(source="seeded", seed=seed),
        description=f"{architecture} with seeded random weights: a stand-in for trained weights.",
    )
    return model, manifest


def bundled_weights(name: str) -> Path | None:
    """The committed checkpoint for a named model, if one is bundled."""
    path = WEIGHTS_DIR / f"{name}.pt"
    return path if path.is_file() else None


def load_model(spec: str = DEFAULT_MODEL, **checkpoint_options) -> tuple[nn.Module, Manifest]:
    """A model by name (``densenet121-chexpert``; an architecture such as ``efficientnet_b0``, seeded)
    or by checkpoint path."""
    if spec == DEFAULT_MODEL:
        bundled = bundled_weights(spec)
        if bundled is None:
            return seeded_model()
        return load_checkpoint(bundled, kind="chexplain", name=spec)
    if spec in ARCHITECTURES or spec.startswith(TIMM_PREFIX):
        return seeded_model(name=checkpoint_options.get("name") or spec, architecture=spec)
    path = Path(spec)
    if path.suffix in {".pt", ".pth", ".tar", ".ckpt", ".bin"} or path.exists():
        return load_checkpoint(path, **checkpoint_options)
    raise ModelNotFoundError(f"unknown model {spec!r}: give {DEFAULT_MODEL!r}, an architecture (e.g. resnet50, "
                     f"efficientnet_b0) for seeded weights, or the path of a checkpoint file")
