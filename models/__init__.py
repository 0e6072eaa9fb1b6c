"""Architectures, checkpoint loading and the model manifest.

``chexplain.models.manifest`` is importable without torch (the runtime reads
manifests); everything else here needs torch and is imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..grammar import DEFAULT_MODEL
from .manifest import CHEXPERT_CLASSES, Manifest, Preprocessing, Weights

_LAZY = {
    "DenseNet": ".densenet",
    "build_densenet": ".densenet",
    "load_checkpoint": ".checkpoints",
    "save_checkpoint": ".checkpoints",
    "CheckpointError": ".checkpoints",
    "load_model": ".zoo",
    "seeded_model": ".zoo",
}

__all__ = ["CHEXPERT_CLASSES", "DEFAULT_MODEL", "Manifest", "Preprocessing", "Weights", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
