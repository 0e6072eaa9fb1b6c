"""The bundled demo model: DenseNet121 trained by ``chexplain train`` on ``chexplain phantoms``,
stored in FP16 as ``models/weights/densenet121-chexpert.pt``. ``make demo-model`` reproduces it.

    python -m chexplain.models.demo RUN/model.pt --training-data "what it was trained on"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..grammar import DEFAULT_MODEL
from ..runtime.manifest import Weights
from .checkpoints import load_checkpoint, save_checkpoint
from .zoo import WEIGHTS_DIR

DESCRIPTION = (
    "DenseNet121 trained from scratch by chexplain on synthetic phantom radiographs (chexplain phantoms), "
    "to demonstrate the pipeline and to measure the explanations against known ground truth. It has never "
    "seen a patient's radiograph: its predictions on real radiographs mean nothing. Not for clinical use."
)


def bundle(trained: Path, training_data: str, out: Path = WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt") -> Path:
    """Write ``trained`` (a chexplain checkpoint from ``chexplain train``) as the bundled demo
    model: FP16 parameters, the default model's name and a manifest saying what it is."""
    model, manifest = load_checkpoint(trained, kind="chexplain")
    manifest.name = DEFAULT_MODEL
    manifest.description = DESCRIPTION
    manifest.weights = Weights(source="phantoms", file=out.name, training_data=training_data)
    return save_checkpoint(model, manifest, out, half=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trained", type=Path, help="model.pt written by chexplain train")
    parser.add_argument("--training-data", required=True, help="What the model was trained on, for its manifest.")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / f"{DEFAULT_MODEL}.pt")
    args = parser.parse_args(argv)
    path = bundle(args.trained, args.training_data, args.out)
    print(f"bundled: {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
