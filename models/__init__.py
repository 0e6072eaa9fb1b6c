"""Architectures, checkpoint loading and training: the torch side of a model.

What the runtime reads without torch (the manifest, the CheXpert CSV, the metrics) lives in
``chexplain.runtime``; everything here needs torch and is imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..grammar import DEFAULT_MODEL

_LAZY = {
    "DenseNet": ".densenet",
    "build_densenet": ".densenet",
    "load_checkpoint": ".checkpoints",
    "save_checkpoint": ".checkpoints",
    "CheckpointError": ".checkpoints",
    "load_model": ".zoo",
    "seeded_model": ".zoo",
}

__all__ = ["DEFAULT_MODEL", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
