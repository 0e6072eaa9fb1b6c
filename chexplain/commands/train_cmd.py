"""`chexplain train`: DenseNet121 on CheXpert-format data (torchrun for several GPUs)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ChexplainError
from ..optional import hint
from . import console, options


@click.command()
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder the CSVs' image paths start from (e.g. the one holding CheXpert-v1.0-small/).")
@click.option("--train-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Training labels in CheXpert's layout [default: DATA/train.csv].")
@click.option("--valid-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Validation labels [default: DATA/valid.csv]: AUROC per epoch, Youden thresholds.")
@click.option("--uncertainty", type=click.Choice(["u-ones", "u-zeros", "u-ignore"]), default="u-ones", show_default=True,
              help="Uncertain (-1) labels count as positive, as negative, or not at all.")
@click.option("--image-size", type=click.IntRange(min=32), default=224, show_default=True, help="Network input size.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Per process.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="AdamW learning rate (cosine schedule to zero).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-5, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Data-loading processes.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--all-views", is_flag=True, help="Also train on lateral views (frontal only by default).")
@click.option("--no-augment", is_flag=True, help="No random rotation/scale/shift.")
@click.option("--init", "init_checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Fine-tune from this checkpoint instead of a fresh seeded DenseNet121.")
@click.option("--name", default="densenet121-trained", show_default=True, help="Model name in the manifest.")
@click.option("--arch", "architecture", default="densenet121", show_default=True, metavar="NAME",
              help="Architecture to train from scratch, by torchvision name (resnet50, efficientnet_b0, "
                   "mobilenet_v3_large, convnext_tiny, ...); --init takes the checkpoint's own.")
@options.out(None, "Writes last.pt (after every epoch, for --resume) and model.pt (the trained model).", required=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@options.verbosity
def train(data_root, train_csv, valid_csv, uncertainty, image_size, epochs, batch_size, lr, weight_decay, workers, seed,
          all_views, no_augment, init_checkpoint, name, architecture, out_dir, resume) -> None:
    """Train a classifier (DenseNet121 by default) on CheXpert-format data; runs under torchrun for several GPUs."""
    try:
        from ..models.training import TrainConfig, eta_text
        from ..models.training import train as run_training
    except ImportError as error:  # torch itself, or a package it needs
        raise click.UsageError(f"train needs torch ({error}): {hint('torch')}") from None
    train_csv, valid_csv = train_csv or data_root / "train.csv", valid_csv or data_root / "valid.csv"
    for path in (train_csv, valid_csv):
        if not path.is_file():
            raise click.UsageError(f"no label CSV at {path}")
    if (out_dir / "last.pt").exists() and not resume:
        raise click.UsageError(f"{out_dir} holds a training run (last.pt): pass --resume to continue it, or another --out")
    config = TrainConfig(data=data_root, train_csv=train_csv, valid_csv=valid_csv, out=out_dir, uncertainty=uncertainty,
                         image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         workers=workers, seed=seed, frontal_only=not all_views, augment=not no_augment,
                         init=init_checkpoint, name=name, resume=resume, architecture=architecture)
    from ..models.architectures import family_of

    try:
        family_of(architecture)
    except ChexplainError as error:
        raise click.UsageError(str(error)) from None

    def show(step: int, steps: int, loss: float, eta: float) -> None:
        if step in (1, steps) or step % max(steps // 20, 1) == 0:  # about every 5%
            console.info(f"  step {step}/{steps}  loss {loss:.4f}  eta {eta_text(eta)}", err=True)

    run_training(config, log=console.info, progress=show)
