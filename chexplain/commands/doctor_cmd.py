"""`chexplain doctor`: what is installed, and what each command will use."""

from __future__ import annotations

import json

import click

from . import options


@click.command()
@options.as_json("Print the findings as JSON.")
@options.verbosity
def doctor(as_json) -> None:
    """Show what is installed (torch, ONNX Runtime providers, TensorRT, GPUs, DICOM decoders)."""
    from ..runtime.host import collect, render

    report = collect()
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(render(report)))
