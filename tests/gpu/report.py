"""What both GPU checks share, without torch: the source tree on the path, Pearson, tables."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def use_source_tree() -> None:
    """Import chexplain from this checkout without installing it (the stage folders sit at the
    repository root; installed, they are chexplain.* sub-packages)."""
    sys.path.insert(0, str(ROOT))
    import chexplain

    chexplain.__path__.append(str(ROOT))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float(np.array_equal(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table under its title, ready for docs/benchmarks.md."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
