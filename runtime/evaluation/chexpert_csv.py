"""CheXpert's label CSV: rows of Path, Sex, Age, Frontal/Lateral, AP/PA and the 14
observations, each 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned).

Blank counts as negative, as in CheXpert's own training. Uncertain labels follow a policy:
``u-ones`` (positive), ``u-zeros`` (negative) or ``u-ignore`` (left out of the loss through
a mask). numpy only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError, InputError
from ..manifest import CHEXPERT_CLASSES

UNCERTAINTY_POLICIES = ("u-ones", "u-zeros", "u-ignore")
REQUIRED_COLUMNS = ("Path", "Frontal/Lateral")


@dataclass
class LabelTable:
    """Image paths with their label and loss-mask matrices [N, classes]."""

    paths: list[Path]
    labels: np.ndarray  # float32, 0 or 1
    known: np.ndarray  # float32, 1 where the label takes part in the loss
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def positives(self) -> np.ndarray:
        """Positive labels per class among the known ones."""
        return (self.labels * self.known).sum(0)


def _value(text: str, where: str) -> float | None:
    text = text.strip()
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(where, f"label {text!r} is not 1, 0, -1 or blank") from None
    if value not in (1.0, 0.0, -1.0):
        raise InputError(where, f"label {text!r} is not 1, 0, -1 or blank")
    return value


def read_labels(csv_path: str | Path, root: str | Path, policy: str = "u-ones", frontal_only: bool = True,
                classes: tuple[str, ...] = CHEXPERT_CLASSES) -> LabelTable:
    """Read a CheXpert-format CSV; paths are resolved against ``root`` (the folder that holds
    what the CSV's paths start with)."""
    if policy not in UNCERTAINTY_POLICIES:
        raise ConfigError(f"unknown uncertainty policy {policy!r}; choose from {', '.join(UNCERTAINTY_POLICIES)}")
    csv_path, root = Path(csv_path), Path(root)
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (*REQUIRED_COLUMNS, *classes) if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(csv_path, f"missing columns {', '.join(missing)}")
        paths, labels, known = [], [], []
        for line, row in enumerate(reader, start=2):
            if frontal_only and row["Frontal/Lateral"].strip().lower() != "frontal":
                continue
            values = [_value(row[c], f"{csv_path}:{line} {c}") for c in classes]
            label = [1.0 if v == 1.0 or (v == -1.0 and policy == "u-ones") else 0.0 for v in values]
            mask = [0.0 if v == -1.0 and policy == "u-ignore" else 1.0 for v in values]
            paths.append(root / row["Path"])
            labels.append(label)
            known.append(mask)
    shape = (len(paths), len(classes))
    return LabelTable(paths, np.array(labels, np.float32).reshape(shape), np.array(known, np.float32).reshape(shape),
                      tuple(classes))
