"""CheXpert's CSV layout: every label value under the three uncertainty policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chexplain.errors import ConfigError, InputError
from chexplain.runtime.evaluation.chexpert_csv import read_labels
from chexplain.runtime.manifest import CHEXPERT_CLASSES

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_CLASSES)
# No Finding blank, then Enlarged Cardiomediastinum 1.0, Cardiomegaly -1.0, Lung Opacity 0.0, the rest blank.
ROWS = [
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,,1.0,-1.0,0.0" + "," * 10,
    "CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg,Female,68,Lateral,,,1.0,1.0,1.0" + "," * 10,
    "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Male,41,Frontal,PA,1.0,,,,,,,,,,,,,1.0",
]


@pytest.fixture()
def table_csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n")
    return path


@pytest.mark.parametrize("policy, cardiomegaly, known", [("u-ones", 1.0, 1.0), ("u-zeros", 0.0, 1.0), ("u-ignore", 0.0, 0.0)])
def test_uncertainty_policies(table_csv: Path, policy: str, cardiomegaly: float, known: float):
    table = read_labels(table_csv, table_csv.parent, policy=policy)
    assert len(table) == 2  # the lateral view is left out
    first = table.labels[0]
    assert first[CHEXPERT_CLASSES.index("Enlarged Cardiomediastinum")] == 1.0
    assert first[CHEXPERT_CLASSES.index("Cardiomegaly")] == cardiomegaly
    assert table.known[0, CHEXPERT_CLASSES.index("Cardiomegaly")] == known
    assert first[CHEXPERT_CLASSES.index("Lung Opacity")] == 0.0 and first[0] == 0.0  # 0.0 and blank: negative
    assert table.known.sum() == 2 * 14 - (1 if policy == "u-ignore" else 0)
    second = table.labels[1]
    assert second[0] == 1.0 and second[-1] == 1.0 and second[1:-1].sum() == 0
    assert table.paths[1] == table_csv.parent / "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg"


def test_lateral_views_when_asked_and_positive_counts(table_csv: Path):
    table = read_labels(table_csv, table_csv.parent, policy="u-ones", frontal_only=False)
    assert len(table) == 3
    np.testing.assert_array_equal(table.positives()[:4], [1, 2, 2, 1])


def test_bad_csvs_are_refused_with_the_place(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n" + ROWS[0].replace("-1.0", "2.0") + "\n")
    with pytest.raises(InputError, match=r"bad.csv:2 Cardiomegaly: label '2.0'"):
        read_labels(bad, tmp_path)
    short = tmp_path / "short.csv"
    short.write_text("Path,Frontal/Lateral,Cardiomegaly\nx.png,Frontal,1\n")
    with pytest.raises(InputError, match="missing columns No Finding"):
        read_labels(short, tmp_path)
    with pytest.raises(ConfigError, match="unknown uncertainty policy"):
        read_labels(bad, tmp_path, policy="u-maybe")


def test_phantom_dataset_reads_back(tmp_path: Path):
    from chexplain.models.phantoms import PhantomGenerator, write_dataset

    train_csv, _ = write_dataset(tmp_path, 5, seed=0, size=96, valid_fraction=0.2)
    table = read_labels(train_csv, tmp_path)
    generator = PhantomGenerator(96, 0)
    for i in range(4):
        expected = [generator.make(i).labels[c] for c in CHEXPERT_CLASSES]
        np.testing.assert_array_equal(table.labels[i], expected)
        assert table.paths[i].is_file()
