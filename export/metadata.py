"""The chexplain manifest in an ONNX graph's ``metadata_props`` (onnx only, no torch)."""

from __future__ import annotations

from pathlib import Path

import onnx

from ..errors import ModelNotFoundError
from ..runtime.manifest import MANIFEST_KEY, Manifest


def manifest_of(model: onnx.ModelProto) -> Manifest | None:
    """The manifest a graph carries, or None."""
    entry = next((e.value for e in model.metadata_props if e.key == MANIFEST_KEY), None)
    return Manifest.from_json(entry) if entry is not None else None


def read_manifest(path: str | Path) -> Manifest:
    """The manifest stored in an exported graph (weights not loaded)."""
    manifest = manifest_of(onnx.load(str(path), load_external_data=False))
    if manifest is None:
        raise ModelNotFoundError(f"{path}: no chexplain manifest in the ONNX metadata; export the graph with `chexplain export`")
    return manifest


def write_manifest(model: onnx.ModelProto, manifest: Manifest) -> None:
    """Store ``manifest`` in the graph, replacing any it had."""
    kept = [e for e in model.metadata_props if e.key != MANIFEST_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = MANIFEST_KEY, manifest.to_json()
