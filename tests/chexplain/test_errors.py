"""One error base: what a user can cause is one line and exit 1; anything else is a bug and
keeps its traceback."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from chexplain import errors
from chexplain.cli import main
from chexplain.errors import ChexplainError
from chexplain.export.tensorrt_build import EngineBuildError, TensorRTUnavailableError
from chexplain.runtime.backends.cuda import CudaUnavailableError


def test_every_kind_is_a_chexplain_error():
    kinds = [k for _, k in inspect.getmembers(errors, inspect.isclass) if k.__module__ == errors.__name__]
    assert {"ConfigError", "InputError", "CheckpointError", "ModelNotFoundError", "EngineMismatchError",
            "UnsupportedOperator", "MissingDependency"} <= {k.__name__ for k in kinds}
    assert all(issubclass(k, ChexplainError) for k in [*kinds, EngineBuildError, TensorRTUnavailableError,
                                                          CudaUnavailableError])


def test_a_refusal_is_one_line_and_exit_1(tmp_path: Path):
    (tmp_path / "index.json").write_text("{not json")
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith(f"chexplain: error: {tmp_path / 'index.json'}: not a chexplain explain index")
    assert "Traceback" not in result.output


def test_a_bug_shows_its_traceback(tmp_path: Path):
    """An exception that is not a ChexplainError reaches the user as it is, with its traceback."""
    script = ("import sys\n"
              "import chexplain.runtime.report.pages as pages\n"
              "def broken(*args, **kwargs):\n"
              "    raise KeyError('a bug in the report pages')\n"
              "pages.write_reports = broken\n"
              "from chexplain.cli import main\n"
              f"main(['report', {str(tmp_path)!r}])\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr and "KeyError: 'a bug in the report pages'" in run.stderr
    assert "chexplain: error:" not in run.stderr
