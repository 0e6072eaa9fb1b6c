"""The `chexplain` command: the group and its commands, one module each under commands/.

Stages are imported inside the commands, so `predict`, `explain` and `serve` never import
torch. Shell completion is Click's: ``eval "$(_CHEXPLAIN_COMPLETE=bash_source chexplain)"``
(``zsh_source``, ``fish_source`` for those shells).
"""

from __future__ import annotations

import click

from . import __version__
from .commands import console
from .commands.bench_cmd import bench
from .commands.doctor_cmd import doctor
from .commands.engine_cmd import build_engine
from .commands.evaluate_cmd import evaluate
from .commands.explain_cmd import explain
from .commands.export_cmd import export
from .commands.node_cmd import serve, watch
from .commands.phantoms_cmd import phantoms
from .commands.predict_cmd import predict
from .commands.report_cmd import report
from .commands.train_cmd import train
from .errors import ChexplainError

COMMANDS = (predict, explain, export, build_engine, bench, evaluate, train, phantoms, report, doctor, serve, watch)


class Commands(click.Group):
    """The group: what a command raises as a ChexplainError, or the system's OSError (a file that
    cannot be written, a port that is taken), is one line and exit 1; anything else is a bug in
    chexplain and keeps its traceback (chexplain/errors.py)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (ChexplainError, OSError) as error:
            console.fail(str(error))


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chexplain")
def main() -> None:
    """Explainable chest X-ray classification: DenseNet121 on the 14 CheXpert
    observations, exported with its explanations as one ONNX/TensorRT graph.

    Not for clinical use.
    """


for command in COMMANDS:
    main.add_command(command)
