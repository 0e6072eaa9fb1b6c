"""`chexplain phantoms`: synthetic radiographs with a ground-truth mask per finding."""

from __future__ import annotations

import sys

import click

from . import console, options


@click.command()
@options.out(None, "Dataset folder: train.csv, valid.csv, phantoms/ (PNGs) and masks/ (one PNG per finding).",
             required=True)
@click.option("--n", "count", type=click.IntRange(min=1), default=5000, show_default=True, help="Number of radiographs.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same dataset.")
@click.option("--size", type=click.IntRange(min=64), default=1024, show_default=True, help="Width and height in pixels.")
@click.option("--valid-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Share of the radiographs written to valid.csv (the last ones).")
@click.option("--overwrite", is_flag=True, help="Replace a dataset already in --out.")
@options.verbosity
def phantoms(out_dir, count, seed, size, valid_fraction, overwrite) -> None:
    """Write synthetic frontal chest radiographs with a ground-truth mask per finding, in
    CheXpert's CSV layout (for training the demo model and evaluating explanations)."""
    from ..models.phantoms import write_dataset

    if (out_dir / "train.csv").exists() and not overwrite:
        raise click.UsageError(f"{out_dir} already holds a dataset (train.csv); pass --overwrite to replace it")
    with click.progressbar(length=count, label=f"drawing {count} phantoms", file=sys.stderr,
                           hidden=console.verbosity() < 0) as bar:
        last = [0]

        def advance(done: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        train_csv, valid_csv = write_dataset(out_dir, count, seed=seed, size=size, valid_fraction=valid_fraction,
                                             progress=advance)
    click.echo(f"{count} phantoms ({size}x{size}, seed {seed}): {train_csv}, {valid_csv}")
