"""Writing the report: ``report.json``, ``report.md`` and the plots, each file atomically."""

from __future__ import annotations

from pathlib import Path

from aire_export.files import REPORT_NAME, write_atomically
from aire_export.report.markdown import render_markdown
from aire_export.report.plots import write_plots
from aire_export.report.record import Report


def write_report(report: Report, folder: Path) -> None:
    """report.json, report.md and the plots, into ``folder``."""
    plots, skipped = write_plots(report, folder)
    report.plots = plots
    if skipped:
        report.warnings.append(skipped)
    text = report.dumps()
    write_atomically(folder / REPORT_NAME, lambda f: f.write(text.encode()))
    markdown = render_markdown(report)
    write_atomically(folder / "report.md", lambda f: f.write(markdown.encode()))
