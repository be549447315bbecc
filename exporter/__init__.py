"""frozen-scalars exporter: audit a Keras model's scalars, freeze it, export and prove it.

from exporter import export_model, audit_model
"""

from exporter.audit import audit_model
from exporter.audit_report import AuditReport
from exporter.errors import (
    AuditError,
    ExporterError,
    ExportError,
    FreezeError,
    ModelLoadError,
    ParityError,
    TraceError,
)
from exporter.export import export_model
from exporter.report import ExportReport

__all__ = [
    "AuditError",
    "AuditReport",
    "ExportError",
    "ExportReport",
    "ExporterError",
    "FreezeError",
    "ModelLoadError",
    "ParityError",
    "TraceError",
    "audit_model",
    "export_model",
]
