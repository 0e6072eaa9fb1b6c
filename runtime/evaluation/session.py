"""`chexplain evaluate` as one document: the classifier's AUROC over the CSV, every case's
explanation metrics and robustness, the randomisation check's result where it ran (it needs
PyTorch: explain/sanity.py, lent by the command), and the Markdown that reports them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .robustness import robustness_markdown
from .scoring import classification_markdown, markdown


def evaluation_document(evaluation: dict[str, Any], scores: dict[str, Any] | None) -> dict[str, Any]:
    """run_evaluation's document with the classification's ``scores`` (None without labels) and
    an empty randomisation slot (filled where the check runs); radiographs the classification
    could not read join the failures."""
    document = {**evaluation, "classification": scores, "randomisation": None}
    if scores is not None:
        reported = {f["image"] for f in document["failures"]}
        document["failures"] = document["failures"] + [f for f in scores["failures"] if f["image"] not in reported]
    return document


def randomisation_markdown(result: dict[str, Any]) -> str:
    """One row per step, one column per method: Spearman of |map| / SSIM with the trained model's maps."""
    labels = list(result["verdicts"])
    lines = ["| randomised down to | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    for step in result["steps"]:
        cells = [f"{step['methods'][label]['spearman_abs']:.3f} / {step['methods'][label]['ssim']:.3f}" for label in labels]
        lines.append(f"| {step['randomised_down_to']} | " + " | ".join(cells) + " |")
    verdicts = ["passes" if result["verdicts"][label]["passed"] else "FAILS (insensitive)" for label in labels]
    lines.append("| verdict | " + " | ".join(verdicts) + " |")
    return "\n".join(lines) + "\n"


def evaluation_markdown(document: dict[str, Any], labels_csv: Path | None, draws: int) -> str:
    """The tables of ``evaluation.md``: classification (with labels), explanations, robustness,
    randomisation (where they were measured)."""
    table = markdown(document["summary"])
    robust = robustness_markdown(document["summary"])
    if robust:
        table += (f"\nRobustness: each map against {draws} noisy copies of its input per level (noise std as a share "
                  f"of the input's std); Pearson and SSIM as mean (worst), mean maximum sensitivity\n\n{robust}")
    scores = document["classification"]
    if scores is not None:
        table = (f"Classification ({scores['images']} radiographs of {labels_csv})\n\n"
                 f"{classification_markdown(scores)}\nExplanations\n\n{table}")
    result = document["randomisation"]
    if result is not None:
        table += (f"\nModel-parameter randomisation (cascading, from the logits down; {result['maps']} maps): "
                  f"Spearman of |map| / SSIM with the trained model's maps\n\n{randomisation_markdown(result)}")
    return table


def write_evaluation(out_dir: Path, document: dict[str, Any], table: str) -> Path:
    """evaluation.json (chexplain.evaluate/1) and evaluation.md in ``out_dir``; returns the JSON's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "evaluation.md").write_text(table)
    return out_dir / "evaluation.json"
