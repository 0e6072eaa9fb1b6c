"""What every command prints and how it exits: one place for exit codes, the one-line error,
warning and note formats, the verbosity set by ``-v``/``-q``, and a heartbeat for long steps.

Exit codes: 0 everything done, 1 some inputs (or the stage) failed, 2 usage or configuration
error. Errors and warnings go to stderr, always; notes and progress too, unless ``--quiet``;
``--verbose`` adds the traceback behind an error.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
HEARTBEAT_S = 15.0
_VERBOSITY_KEY = "chexplain.verbosity"


def verbosity() -> int:
    """-1 quiet, 0 normal, 1 verbose (outside a command: normal)."""
    context = click.get_current_context(silent=True)
    return context.meta.get(_VERBOSITY_KEY, 0) if context else 0


def change_verbosity(context: click.Context, step: int) -> None:
    """One ``-v`` (+1) or ``-q`` (-1), kept within quiet..verbose."""
    context.meta[_VERBOSITY_KEY] = max(-1, min(1, context.meta.get(_VERBOSITY_KEY, 0) + step))


def error(message: str) -> None:
    click.echo(f"chexplain: error: {message}", err=True)
    if verbosity() > 0 and sys.exc_info()[0] is not None:
        click.echo(traceback.format_exc().rstrip(), err=True)


def warning(message: str) -> None:
    click.echo(f"chexplain: warning: {message}", err=True)


def note(message: str) -> None:
    if verbosity() >= 0:
        click.echo(f"chexplain: note: {message}", err=True)


def info(message: str, err: bool = False) -> None:
    """A progress or result line that ``--quiet`` drops."""
    if verbosity() >= 0:
        click.echo(message, err=err)


def fail(message: str, code: int = EXIT_SOME_FAILED) -> NoReturn:
    error(message)
    sys.exit(code)


def exit_for_failures(failed: int, total: int) -> None:
    """Exit 1 with a warning when some of ``total`` inputs failed; otherwise return."""
    if failed:
        warning(f"{failed} of {total} inputs failed")
        sys.exit(EXIT_SOME_FAILED)


@contextmanager
def heartbeat(what: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """While a long step runs silently, say every ``every_s`` seconds that it still runs."""
    if verbosity() < 0:
        yield
        return
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            click.echo(f"  ... {what}: {time.monotonic() - start:.0f} s", err=True)

    thread = threading.Thread(target=beat, name="chexplain-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
