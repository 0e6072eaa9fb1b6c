"""Shared by the node's tests: the exported model they serve and DX instances of real radiographs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_builders import dx_from_png
from helpers import IMAGES


@pytest.fixture(scope="session")
def node_model(tmp_path_factory: pytest.TempPathFactory, radiographs: list[Path]) -> Path:
    """The default model with Grad-CAM for its two most probable classes (quick to run)."""
    from chexplain.export import export_model

    root = tmp_path_factory.mktemp("node-model")
    export_model("densenet121-chexpert", root, radiographs[:2], explain="gradcam", classes="topk:2",
                 checkpoint_options={"name": "node-gradcam"}, log=lambda _: None)
    return root / "node-gradcam"


@pytest.fixture(scope="session")
def dx_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """DX instances of the five NIH radiographs (12-bit, For Presentation)."""
    folder = tmp_path_factory.mktemp("dx")
    return [dx_from_png(png, folder / f"{png.stem}.dcm") for png in sorted(IMAGES.glob("*.png"))]
