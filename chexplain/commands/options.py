"""Click options shared by several commands, each defined once (names, types, help)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import ChexplainError
from ..grammar import BACKENDS, DEFAULT_MODEL
from . import console

if TYPE_CHECKING:
    from ..runtime.backends import Backend

Command = TypeVar("Command", bound=Callable[..., Any])

BACKEND_HELP = ("Inference backend: a TensorRT engine built beside the graph for this GPU (auto takes it when it "
                "loads), or ONNX Runtime on its best provider.")
EXPORTED_MODEL_HELP = "Exported model: a name under artifacts/ ($CHEXPLAIN_ARTIFACTS), a folder, an .onnx or an .engine file."


def _set_verbosity(context: click.Context, parameter: click.Parameter, value: int) -> int:
    for _ in range(value):
        console.change_verbosity(context, 1 if parameter.name == "verbose" else -1)
    return value


def verbosity(command: Command) -> Command:
    """``-v/--verbose`` and ``-q/--quiet``, on every command."""
    command = click.option("-q", "--quiet", count=True, expose_value=False, callback=_set_verbosity,
                           help="Print only results, warnings and errors.")(command)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbosity,
                        help="Also print the traceback behind an error.")(command)


def inputs(command: Command) -> Command:
    """Radiographs and folders; each missing or unreadable one gets its own error (exit 1)."""
    return click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...", type=click.Path())(command)


def model(help: str = EXPORTED_MODEL_HELP, default: str | None = DEFAULT_MODEL) -> Callable[[Command], Command]:
    return click.option("--model", "-m", type=click.Path(), default=default, show_default=default is not None,
                        help=help)


def out(default: Path | None, help: str, required: bool = False, name: str = "out_dir") -> Callable[[Command], Command]:
    return click.option("--out", name, type=click.Path(file_okay=False, path_type=Path), default=default,
                        required=required, show_default=default is not None, help=help)


def backend(default: str | None = "auto", help: str = BACKEND_HELP) -> Callable[[Command], Command]:
    return click.option("--backend", type=click.Choice(BACKENDS), default=default, show_default=default is not None,
                        help=help)


def threads(help: str = "CPU threads for ONNX Runtime.") -> Callable[[Command], Command]:
    return click.option("--threads", type=click.IntRange(min=1), default=None, help=help)


def classes(help: str) -> Callable[[Command], Command]:
    return click.option("--classes", default=None, metavar="topk:N|all|A,B", help=help)


def methods(help: str, names: tuple[str, ...] = ("--method", "methods")) -> Callable[[Command], Command]:
    return click.option(*names, multiple=True, metavar="METHOD[,METHOD]", help=help)


def as_json(help: str) -> Callable[[Command], Command]:
    return click.option("--json", "as_json", is_flag=True, help=help)


def thresholds(help: str) -> Callable[[Command], Command]:
    return click.option("--threshold", "thresholds", multiple=True, metavar="[CLASS=]T", help=help)


def allow_any_view(help: str) -> Callable[[Command], Command]:
    return click.option("--allow-any-view", is_flag=True, help=help)


def images(help: str = "Radiographs for the parity check [default: the bundled samples].") -> Callable[[Command], Command]:
    return click.option("--images", "image_dir", type=click.Path(exists=True, path_type=Path), default=None, help=help)


def parse_thresholds(values: tuple[str, ...], class_names: tuple[str, ...]) -> dict[str, float]:
    """``0.4`` sets every class; ``Cardiomegaly=0.3`` sets one. Later values win."""
    result: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            t = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected a number or CLASS=NUMBER", param_hint="--threshold") from None
        if not 0.0 <= t <= 1.0:
            raise click.BadParameter(f"{value!r}: a threshold lies in [0, 1]", param_hint="--threshold")
        if not name:
            result.update(dict.fromkeys(class_names, t))
        elif name in class_names:
            result[name] = t
        else:
            raise click.BadParameter(f"unknown class {name!r}; classes: {', '.join(class_names)}", param_hint="--threshold")
    return result


def open_model(model: str | None, backend: str | None, threads: int | None) -> Backend:
    """The backend for ``--model``/``--backend``/``--threads``; the stage's refusal is a usage error (exit 2)."""
    from ..runtime.backends import open_backend

    try:
        return open_backend(model, backend or "auto", threads=threads, notify=console.note)
    except ChexplainError as error:
        raise click.UsageError(str(error)) from None
