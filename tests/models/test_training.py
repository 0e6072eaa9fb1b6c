"""Training on phantoms end to end (a few steps, checkpoint, resume, AUROC), the metrics on known answers."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from chexplain.cli import main
from chexplain.models.checkpoints import load_checkpoint
from chexplain.models.training import TrainConfig, eta_text, masked_bce, random_affine, train
from chexplain.runtime.evaluation.metrics import auroc, youden_threshold


def _pairwise_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]))


def test_auroc_equals_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 30)
        scores = rng.integers(0, 6, 30).astype(float)  # many ties
        if labels.min() == labels.max():
            continue
        assert auroc(labels, scores) == pytest.approx(_pairwise_auroc(labels, scores))
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0 and auroc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert auroc([1, 1], [0.3, 0.4]) is None


def test_youden_threshold_separates_when_it_can():
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9]) == 0.6
    assert youden_threshold([0, 1, 0, 1], [0.2, 0.4, 0.5, 0.7]) == 0.4  # J = 1 - 0.5 at 0.4 and 0.7; the first wins
    assert youden_threshold([1, 1], [0.2, 0.4]) is None


def test_masked_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    known = torch.tensor([[1.0, 1.0, 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :2], labels[:, :2])
    assert masked_bce(logits, labels, known) == pytest.approx(float(expected))
    assert masked_bce(logits, labels, torch.zeros_like(known)) == 0


def test_augmentation_keeps_the_sides():
    """Small affine changes only: the bright side stays on its side (no flip)."""
    pixels = np.zeros((64, 64), np.float32)
    pixels[:, 40:] = 1.0
    moved = random_affine(pixels, np.random.default_rng(1))
    assert moved[:, 48:].mean() > 0.9 and moved[:, :24].mean() < 0.1
    assert eta_text(59) == "0:59" and eta_text(3725) == "1:02:05"


def test_training_runs_checkpoints_resumes_and_learns(phantom_data: Path, tmp_path: Path):
    config = TrainConfig(data=phantom_data, train_csv=phantom_data / "train.csv", valid_csv=phantom_data / "valid.csv",
                         out=tmp_path / "run", image_size=64, epochs=2, batch_size=8, lr=3e-3, workers=0,
                         augment=False, name="densenet121-phantoms-test")
    steps = []
    first = train(config, log=lambda _: None, progress=lambda step, total, loss, eta: steps.append((step, total, loss)))
    assert [s[0] for s in steps] == [1, 2] and steps[-1][1] == 2
    assert (tmp_path / "run" / "last.pt").is_file() and first.model_path.is_file()
    assert [h.epoch for h in first.history] == [1, 2]
    assert any(v is not None for v in first.history[-1].auroc.values())
    config.epochs, config.resume = 6, True
    resumed = train(config, log=lambda _: None)
    assert [h.epoch for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    losses = [h.train_loss for h in resumed.history]
    assert losses[-1] < losses[0]  # eight images, one batch: the loss falls
    model, manifest = load_checkpoint(resumed.model_path)
    assert manifest.name == "densenet121-phantoms-test" and manifest.preprocessing.size == (64, 64)
    assert manifest.weights.training_data.startswith("8 images of") and manifest.is_demo is False
    assert set(manifest.thresholds.values()) != {0.5}  # Youden's J where a class has both labels
    tuned = train(TrainConfig(data=phantom_data, train_csv=config.train_csv, valid_csv=config.valid_csv,
                              out=tmp_path / "tuned", image_size=64, epochs=1, batch_size=8, workers=0,
                              init=resumed.model_path, name="tuned"), log=lambda _: None)
    assert tuned.manifest.name == "tuned" and tuned.history[0].epoch == 1


def test_train_command_trains_then_refuses_to_overwrite_the_run(phantom_data: Path, tmp_path: Path):
    args = ["train", "--data", str(phantom_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--image-size", "64",
            "--batch-size", "4", "--workers", "0", "--uncertainty", "u-ignore"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1/1: train loss" in result.stdout and "step 2/2" in result.stderr
    assert (tmp_path / "run" / "model.pt").is_file()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--resume" in again.stderr
