"""Phantom radiographs: deterministic, masks where the findings are drawn, CheXpert's CSV layout."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from chexplain.cli import main
from chexplain.errors import ConfigError
from chexplain.models.phantoms import CSV_COLUMNS, OPACITY_KINDS, PREVALENCE, PhantomGenerator, write_dataset
from chexplain.runtime.manifest import CHEXPERT_CLASSES, slug

SIZE = 192
# Findings that add density show brighter inside their mask; the others darker.
DARKER = {"Pneumothorax", "Fracture"}


def test_same_seed_same_phantom_and_another_seed_another():
    first, again = PhantomGenerator(SIZE, seed=3).make(7), PhantomGenerator(SIZE, seed=3).make(7)
    assert np.array_equal(first.image, again.image) and first.labels == again.labels
    assert first.masks.keys() == again.masks.keys()
    assert all(np.array_equal(first.masks[k], again.masks[k]) for k in first.masks)
    assert not np.array_equal(first.image, PhantomGenerator(SIZE, seed=4).make(7).image)
    assert first.image.dtype == np.uint8 and first.image.shape == (SIZE, SIZE)


@pytest.mark.parametrize("finding", list(PREVALENCE))
def test_each_mask_covers_what_its_finding_changes(finding: str):
    """The same phantom with and without the finding differs inside the mask, in the expected direction."""
    generator = PhantomGenerator(SIZE, seed=1)
    for index in range(3):
        plain = generator.make(index, findings=[]).image.astype(np.float32)
        phantom = generator.make(index, findings=[finding])
        mask = phantom.masks[finding]
        assert mask.any() and mask.mean() < 0.5
        change = phantom.image.astype(np.float32) - plain
        inside, outside = change[mask], change[~mask]
        direction = -1 if finding in DARKER else 1
        assert direction * inside.mean() > 4, (finding, inside.mean())
        assert np.abs(inside).mean() > 3 * np.abs(outside).mean(), finding


def test_labels_follow_the_findings():
    generator = PhantomGenerator(SIZE, seed=0)
    seen = set()
    for index in range(40):
        phantom = generator.make(index)
        findings = set(phantom.findings)
        seen |= findings
        assert set(phantom.labels) == set(CHEXPERT_CLASSES)
        assert phantom.labels["No Finding"] == float(not findings - {"Support Devices"})
        if findings & set(OPACITY_KINDS):
            assert "Lung Opacity" in findings
        assert set(phantom.masks) == findings
    assert len(seen) >= 8  # the prevalences draw most findings within 40 images
    only_devices = generator.make(0, findings=["Support Devices"])
    assert only_devices.labels["No Finding"] == 1.0 and only_devices.labels["Support Devices"] == 1.0
    pneumonia = generator.make(0, findings=["Pneumonia"])
    assert pneumonia.labels["Lung Opacity"] == 1.0 and np.array_equal(pneumonia.masks["Pneumonia"], pneumonia.masks["Lung Opacity"])
    with pytest.raises(ConfigError, match="not a phantom finding"):
        generator.make(0, findings=["Dragon"])


def test_dataset_in_chexpert_layout(tmp_path: Path):
    train_csv, valid_csv = write_dataset(tmp_path, 10, seed=2, size=128, valid_fraction=0.2)
    with train_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    with valid_csv.open() as handle:
        valid = list(csv.DictReader(handle))
    assert tuple(csv.DictReader(train_csv.open()).fieldnames) == CSV_COLUMNS
    assert len(rows) == 8 and len(valid) == 2
    for row in rows + valid:
        image = cv2.imread(str(tmp_path / row["Path"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (128, 128) and row["Frontal/Lateral"] == "Frontal"
        assert {row[c] for c in CHEXPERT_CLASSES} <= {"1.0", "0.0"}
        for name in CHEXPERT_CLASSES[1:]:
            mask_path = tmp_path / "masks" / Path(row["Path"]).with_suffix("") / f"{slug(name)}.png"
            assert mask_path.is_file() == (row[name] == "1.0"), (row["Path"], name)
    assert rows[0]["Path"].startswith("phantoms/train/patient00001/study1/")


def test_phantoms_command(tmp_path: Path):
    result = CliRunner().invoke(main, ["phantoms", "--out", str(tmp_path), "--n", "4", "--size", "96", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "train.csv").is_file() and (tmp_path / "valid.csv").is_file()
    assert "4 phantoms" in result.output
    again = CliRunner().invoke(main, ["phantoms", "--out", str(tmp_path), "--n", "4"])
    assert again.exit_code == 2 and "already holds" in again.stderr
