"""frozen-scalars exporter: audit a Keras model's scalars, freeze it, export and prove it.

from exporter import export_model, ExportOptions, audit_model

The names below are imported on first use (PEP 562), so `python -m exporter --help` and the
CLI's argument errors answer without importing TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "AuditReport": "exporter.model.audit_report",
    "audit_model": "exporter.model.audit",
    "export_model": "exporter.export",
    "ExportOptions": "exporter.options",
    "ExportReport": "exporter.report",
    "record_initial_values": "exporter.model.initial_values",
    "ParityOptions": "exporter.options",
    **dict.fromkeys(
        (
            "AuditError",
            "ExportError",
            "ExporterError",
            "FreezeError",
            "ModelLoadError",
            "ParityError",
            "TraceError",
        ),
        "exporter.errors",
    ),
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'exporter' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
