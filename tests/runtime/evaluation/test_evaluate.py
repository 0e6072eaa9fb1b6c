"""`chexplain evaluate` on phantoms with masks and on real radiographs with NIH boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from chexplain.cli import main
from chexplain.models.zoo import seeded_model
from chexplain.runtime.evaluation.chexpert_csv import read_labels
from chexplain.runtime.evaluation.metrics import auroc
from chexplain.runtime.evaluation.scoring import ABSENT, METRICS, EvalCase, box_cases, classification, phantom_cases
from chexplain.runtime.inputs.preprocess import preprocess
from chexplain.runtime.inputs.reader import read_radiograph
from chexplain.runtime.manifest import CHEXPERT_CLASSES, Manifest

from helpers import IMAGES


def test_cases_from_phantom_masks_and_nih_boxes(phantom_data: Path, tmp_path: Path):
    cases = phantom_cases(phantom_data)
    assert cases and all(case.path.is_file() for case in cases)
    for case in cases:
        for finding, region in case.regions.items():
            assert isinstance(region, Path) and region.is_file()
            assert case.mask(finding, (256, 256)).any()
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                     "00013125_000.png,Cardiomegaly,169.0,406.3,662.1,418.3\n"
                     "00013125_000.png,Infiltrate,100,100,50,40\n"
                     "missing.png,Nodule,1,1,5,5\n"
                     "00013125_000.png,Fibrosis,1,1,5,5\n")
    (case,) = box_cases(boxes, IMAGES)
    assert set(case.regions) == {"Cardiomegaly", "Lung Opacity"}
    mask = case.mask("Lung Opacity", (1024, 1024))
    assert mask.sum() == 50 * 40 and mask[100, 100] and not mask[99, 100]
    assert EvalCase(case.path, {"Edema": (0, 0, 10, 10)}).mask("Edema", (20, 20)).sum() == 100


class ScoresFromPixels:
    """A stand-in backend: every class's probability is the mean of the network input."""

    name = "onnxruntime"
    path = Path("scores.onnx")
    manifest = Manifest(name="scores")
    input_names = ["image", "targets"]
    output_names = ["probabilities"]

    def run(self, image: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        assert inputs["targets"].shape == (len(image), 0)  # no explanations needed for probabilities
        return {"probabilities": np.repeat(image.mean(axis=(1, 2, 3))[:, None], len(CHEXPERT_CLASSES), 1)}


def test_classification_auroc_from_the_graphs_probabilities(phantom_data: Path):
    table = read_labels(phantom_data / "train.csv", phantom_data, "u-ignore")
    table.paths[1] = phantom_data / "missing.png"  # unreadable: reported, left out, the others still scored
    result = classification(ScoresFromPixels(), table)
    assert result["images"] == len(table) - 1 and "missing.png" in result["failures"][0]["error"]
    backend = ScoresFromPixels()
    readable = [i for i in range(len(table)) if i != 1]
    brightness = np.array([preprocess(read_radiograph(table.paths[i], allow_any_view=True).pixels,
                                      backend.manifest.preprocessing)[0].mean() for i in readable])
    for index, name in enumerate(CHEXPERT_CLASSES):
        entry = result["per_class"][name]
        labels = table.labels[readable, index] > 0
        assert entry["positives"] == labels.sum() and entry["negatives"] == (~labels).sum()
        assert entry["auroc"] == (None if labels.all() or not labels.any() else pytest.approx(auroc(labels, brightness)))
    defined = [e["auroc"] for e in result["per_class"].values() if e["auroc"] is not None]
    assert defined and result["mean_auroc"] == pytest.approx(np.mean(defined))


def test_evaluate_command_on_phantoms(targets_graph: Path, phantom_data: Path, tmp_path: Path):
    result = CliRunner().invoke(main, ["evaluate", "--model", str(targets_graph), "--data", str(phantom_data),
                                       "--steps", "4", "--examples", "2", "--out", str(tmp_path), "--threads", "2"])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "evaluation.json").read_text())
    assert document["schema"] == "chexplain.evaluate/1" and not document["failures"]
    assert document["model"] == "densenet121-targets"  # export's name option renames the default model
    assert document["classification"]["images"] == 4 and "| mean over defined classes |" in result.stdout
    sheets = sorted((tmp_path / "examples").glob("*.png"))
    assert len(sheets) == 2 and sheets[0].name.startswith("001-patient")
    methods = {r["method"] for r in document["records"]}
    assert methods == {"gradcam", "lrp:epsilon"}
    for record in document["records"]:
        for metric in ("pointing_game", "mass_accuracy", "rank_accuracy", "top_iou", "deletion_auc", "insertion_auc"):
            assert 0.0 <= record[metric] <= 1.0, (metric, record[metric])
        assert 0.0 <= record["gini"] <= 1.0 and record["components"] >= 1
    summary = {(row["method"], row["finding"]): row for row in document["summary"]}
    for method in methods:
        overall = summary[(method, "all findings")]
        assert overall["n"] == sum(1 for r in document["records"] if r["method"] == method)
        assert set(METRICS) <= set(overall)
        assert overall["mass_accuracy"] == pytest.approx(
            np.mean([r["mass_accuracy"] for r in document["records"] if r["method"] == method]))
    assert "| lrp:epsilon | all findings |" in result.stdout and (tmp_path / "evaluation.md").is_file()
    assert document["settings"]["noise_levels"] == ["1e-04", "1e-03", "1e-02"] and document["settings"]["noise_draws"] == 3
    for record in document["records"]:
        assert set(record["robustness"]) == {"1e-04", "1e-03", "1e-02"}
        for level in record["robustness"].values():
            assert -1.0 <= level["pearson"] <= 1.0 and -1.0 <= level["ssim"] <= 1.0 and level["max_sensitivity"] >= 0
    cam = summary[("gradcam", "all findings")]["robustness"]
    assert cam["1e-04"]["max_sensitivity"]["mean"] < cam["1e-02"]["max_sensitivity"]["mean"]  # more noise, more change
    assert cam["1e-03"]["pearson"]["worst"] > 0.99
    assert "| Pearson @1e-04 |" in result.stdout and document["randomisation"] is None


def test_evaluate_noise_draws_are_seeded(targets_graph: Path, phantom_data: Path, tmp_path: Path):
    args = ["evaluate", "--model", str(targets_graph), "--data", str(phantom_data), "--limit", "1", "--steps", "2",
            "--examples", "0", "--methods", "lrp:epsilon", "--noise", "1e-2", "--draws", "2", "--threads", "2"]
    runs = [CliRunner().invoke(main, [*args, "--seed", seed, "--out", str(tmp_path / name)])
            for seed, name in (("4", "a"), ("4", "b"), ("5", "c"))]
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    a, b, c = (json.loads((tmp_path / name / "evaluation.json").read_text())["records"] for name in "abc")
    assert [r["robustness"] for r in a] == [r["robustness"] for r in b]  # same seed, same draws
    assert [r["robustness"] for r in a] != [r["robustness"] for r in c]
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text())["classification"]["images"] == 4
    none = CliRunner().invoke(main, [*args, "--noise", "none", "--no-auroc", "--out", str(tmp_path / "none")])
    assert none.exit_code == 0 and "Pearson @" not in none.stdout and "AUROC" not in none.stdout
    quiet = json.loads((tmp_path / "none" / "evaluation.json").read_text())
    assert quiet["records"][0]["robustness"] == {} and quiet["classification"] is None
    bad = CliRunner().invoke(main, [*args, "--noise", "2", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "between 0 and 1" in bad.stderr


def test_evaluate_randomisation_check(targets_graph: Path, phantom_data: Path, tmp_path: Path):
    """The cascade on the graph's own model: every block re-initialised in turn, maps compared."""
    args = ["evaluate", "--model", str(targets_graph), "--data", str(phantom_data), "--limit", "1", "--steps", "2",
            "--examples", "0", "--methods", "gradcam,lrp:epsilon", "--noise", "none", "--threads", "2",
            "--randomisation-images", "1"]
    result = CliRunner().invoke(main, [*args, "--randomisation", "densenet121-chexpert", "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    check = json.loads((tmp_path / "ok" / "evaluation.json").read_text())["randomisation"]
    assert [step["randomised_down_to"] for step in check["steps"]][:2] == ["classifier", "features.norm5"]
    assert len(check["steps"]) == 11 and set(check["verdicts"]) == {"gradcam", "lrp:epsilon"}
    for step in check["steps"]:
        for values in step["methods"].values():
            assert -1.0 <= values["spearman_abs"] <= 1.0 and -1.0 <= values["ssim"] <= 1.0
    assert check["verdicts"]["gradcam"]["passed"]  # Grad-CAM of a random classifier is another map
    assert "| randomised down to | gradcam | lrp:epsilon |" in result.stdout and "| verdict |" in result.stdout
    other = tmp_path / "seeded.pt"
    torch.save(seeded_model()[0].state_dict(), other)
    wrong = CliRunner().invoke(main, [*args, "--randomisation", str(other), "--out", str(tmp_path / "wrong")])
    assert wrong.exit_code == 2 and "not the model" in wrong.stderr


def test_evaluate_all_classes_adds_the_classes_without_ground_truth(targets_graph: Path, phantom_data: Path,
                                                                   tmp_path: Path):
    args = ["evaluate", "--model", str(targets_graph), "--data", str(phantom_data), "--limit", "1", "--steps", "2",
            "--examples", "0", "--methods", "gradcam,lrp:epsilon", "--threads", "2"]
    positive = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "positive")])
    every = CliRunner().invoke(main, [*args, "--classes", "all", "--out", str(tmp_path / "all")])
    assert positive.exit_code == 0 and every.exit_code == 0, (positive.output, every.output)
    first = json.loads((tmp_path / "positive" / "evaluation.json").read_text())
    both = json.loads((tmp_path / "all" / "evaluation.json").read_text())
    assert both["settings"]["classes"] == "all" and first["settings"]["classes"] == "positive"
    present = [r for r in both["records"] if r["present"]]
    absent = [r for r in both["records"] if not r["present"]]
    assert len(present) == len(first["records"]) and len(present) + len(absent) == 2 * 14
    for record in absent:  # no region: localisation undefined, the rest measured
        assert record["pointing_game"] is None and record["mass_accuracy"] is None
        assert 0.0 <= record["gini"] <= 1.0 and 0.0 <= record["deletion_auc"] <= 1.0
    summary = {(row["method"], row["finding"]): row for row in both["summary"]}
    reference = {(row["method"], row["finding"]): row for row in first["summary"]}
    for method in ("gradcam", "lrp:epsilon"):
        assert summary[(method, "all findings")]["mass_accuracy"] == pytest.approx(
            reference[(method, "all findings")]["mass_accuracy"], abs=1e-6)
        row = summary[(method, ABSENT)]
        assert row["n"] == len(absent) // 2 and row["pointing_game"] is None and row["gini"] is not None
    assert f"| gradcam | {ABSENT} |" in every.stdout and "| - |" in every.stdout


def test_evaluate_needs_a_targets_graph_and_ground_truth(default_onnx: Path, phantom_data: Path):
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", "--model", str(default_onnx), "--data", str(phantom_data)])
    assert result.exit_code == 2 and "targets input" in result.stderr
    result = runner.invoke(main, ["evaluate", "--model", str(default_onnx)])
    assert result.exit_code == 2 and "--data" in result.stderr
