"""Shared fixtures: real radiographs, and one exported default model for the whole session."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from helpers import IMAGES, SIIM

# Session fixtures that export the full-size default model (tens of seconds each, more on a busy
# machine): a test that uses one, directly or through another fixture, is slow, and the quick
# lane (`make test-fast`) leaves it out with the tests marked slow by hand (node processes,
# Orthanc, Chromium, architecture sweeps).
FULL_SIZE_EXPORTS = frozenset({"artifacts", "classifier_onnx", "targets_graph", "node_model"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if FULL_SIZE_EXPORTS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _release_memory():
    """Traced graphs hold reference cycles; collect them after each test so big models do not pile up."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def radiographs() -> list[Path]:
    return sorted(IMAGES.glob("*.png"))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, radiographs: list[Path]) -> Path:
    """The default model exported once as `make export` does it (Grad-CAM + the default LRP, top 3)."""
    from chexplain.export import export_model

    root = tmp_path_factory.mktemp("artifacts")
    export_model("densenet121-chexpert", root, radiographs[:3] + [SIIM], log=lambda _: None)
    return root


@pytest.fixture(scope="session")
def default_onnx(artifacts: Path) -> Path:
    return artifacts / "densenet121-chexpert" / "model.onnx"


@pytest.fixture(scope="session")
def classifier_onnx(tmp_path_factory: pytest.TempPathFactory, radiographs: list[Path]) -> Path:
    """The default model exported without explanations."""
    from chexplain.export import export_model

    root = tmp_path_factory.mktemp("classifier")
    export_model("densenet121-chexpert", root, radiographs[:3] + [SIIM], explain="none", log=lambda _: None)
    return root / "densenet121-chexpert" / "model.onnx"


@pytest.fixture(scope="session")
def targets_graph(tmp_path_factory: pytest.TempPathFactory, radiographs: list[Path]) -> Path:
    """Grad-CAM and LRP epsilon with a `targets` input, and the exposed activations and gradients."""
    from chexplain.export import export_model

    root = tmp_path_factory.mktemp("targets")
    export_model("densenet121-chexpert", root, radiographs[:2], explain="gradcam,lrp:epsilon", classes="input",
                 expose_gradients=True, checkpoint_options={"name": "densenet121-targets"}, log=lambda _: None)
    return root / "densenet121-targets" / "model.onnx"


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve phantoms with masks: eight for training, four for validation."""
    from chexplain.models.phantoms import write_dataset

    root = tmp_path_factory.mktemp("phantoms")
    write_dataset(root, 12, seed=0, size=256, valid_fraction=0.34)
    return root
