"""The bundled demo model: trained on phantoms, stored in FP16, saying what it is, and as good
on held-out phantoms as docs/models.md reports."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from chexplain.cli import main
from chexplain.models import DEFAULT_MODEL, load_checkpoint, save_checkpoint
from chexplain.models.demo import bundle
from chexplain.models.phantoms import write_dataset
from chexplain.models.zoo import bundled_weights, load_model, seeded_model

# Held-out AUROC of the bundled model as docs/models.md reports it (500 phantoms of seed 1). The
# test's 80 phantoms are the first 80 of them (same seed, same images).
DOCUMENTED_AUROC = {
    "No Finding": 0.996, "Enlarged Cardiomediastinum": 1.0, "Cardiomegaly": 1.0, "Lung Opacity": 1.0,
    "Lung Lesion": 0.936, "Edema": 1.0, "Consolidation": 0.937, "Pneumonia": 0.908, "Atelectasis": 0.996,
    "Pneumothorax": 1.0, "Pleural Effusion": 1.0, "Pleural Other": 0.977, "Fracture": 0.741, "Support Devices": 1.0,
}
DOCUMENTED_MEAN_AUROC = 0.964
HELD_OUT_COUNT = 80


def test_bundle_writes_fp16_and_a_manifest_that_says_what_it_is(tmp_path: Path):
    model, manifest = seeded_model()
    save_checkpoint(model, manifest, tmp_path / "model.pt")
    out = bundle(tmp_path / "model.pt", "chexplain phantoms --n 10", tmp_path / "demo.pt")
    stored = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    loaded, described = load_checkpoint(out)
    assert described.name == DEFAULT_MODEL and described.weights.source == "phantoms"
    assert described.weights.training_data == "chexplain phantoms --n 10" and described.is_demo
    assert "SYNTHETIC PHANTOMS" in described.banner() and "NOT FOR CLINICAL USE" in described.banner()
    assert "Not for clinical use" in described.description
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=5e-2)


def test_the_default_model_is_the_bundled_demo():
    path = bundled_weights(DEFAULT_MODEL)
    assert path is not None and path.stat().st_size < 20 * 2**20  # FP16: about 14 MiB
    _, manifest = load_model()
    assert manifest.weights.source == "phantoms" and manifest.weights.sha256
    assert "chexplain phantoms" in manifest.weights.training_data
    assert sum(abs(t - 0.5) > 1e-6 for t in manifest.thresholds.values()) >= 10  # chosen on validation


def test_held_out_auroc_is_reproduced_by_evaluate(targets_graph: Path, tmp_path: Path):
    write_dataset(tmp_path / "heldout", HELD_OUT_COUNT, seed=1, size=256, valid_fraction=0)
    result = CliRunner().invoke(main, ["evaluate", "--model", str(targets_graph), "--data", str(tmp_path / "heldout"),
                                       "--csv", "train.csv", "--method", "gradcam", "--limit", "2", "--steps", "2", "--examples", "0",
                                       "--out", str(tmp_path / "out"), "--threads", "2"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "evaluation.json").read_text())["classification"]
    assert scores["images"] == HELD_OUT_COUNT
    assert scores["mean_auroc"] >= DOCUMENTED_MEAN_AUROC - 0.05
    for name, entry in scores["per_class"].items():
        if entry["positives"] >= 5:  # fewer positives: too few to say anything
            assert entry["auroc"] >= DOCUMENTED_AUROC[name] - 0.2, (name, entry)
