"""`chexplain report`: HTML reports for a folder of explain results (also `explain --report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import console, options


def write_reports(root: Path, document: dict[str, Any] | None, patient_name: bool, quiet: bool = False) -> None:
    """Every radiograph's report and the index page; exit 1 when none could be written."""
    from ..runtime.report.pages import write_reports as write_pages

    reports, index = write_pages(root, document, patient=patient_name, on_error=console.error)
    if not quiet:
        console.info(f"reports: {len(reports)}" + (f"; index: {index}" if index else ""), err=True)
    if index is None:
        console.fail(f"no report written in {root}")


@click.command()
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--patient-name", is_flag=True, help="Show the DICOM patient name and ID (hidden by default).")
@options.verbosity
def report(results_dir, patient_name) -> None:
    """Write HTML reports for a folder of `chexplain explain` results.

    One self-contained page per radiograph (report.html beside its sheet: the radiograph
    with zoom and pan, the findings against their thresholds, each explained class's maps
    side by side with an opacity slider, the model and the input) and RESULTS_DIR/index.html,
    sortable by each finding's probability. The pages make no network request. Needs the maps
    saved as arrays (explain without --no-arrays) and the inputs where they were explained.
    """
    write_reports(results_dir, None, patient_name)
