"""The report (DESIGN §5, §9): a typed :class:`Report`, one :func:`verdict` for ``run`` and
``validate``, ``report.json`` against an explicit schema with a version (schema.py),
``report.md`` (markdown.py) and PNG plots (plots.py)."""

from aire_export.report.record import (
    ModelRecord,
    Report,
    Verdict,
    environment,
    export_json,
    verdict,
)
from aire_export.report.schema import REPORT_SCHEMA, SCHEMA, SCHEMA_VERSION
from aire_export.report.write import write_report

__all__ = [
    "REPORT_SCHEMA",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ModelRecord",
    "Report",
    "Verdict",
    "environment",
    "export_json",
    "verdict",
    "write_report",
]
