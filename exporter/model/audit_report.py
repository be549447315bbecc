"""The audit's findings as data: per-scalar rows, findings, a non-scalar summary, the report.

`exporter.model.audit` fills these; the export report embeds `AuditReport.to_dict()` and the CLI
prints `AuditReport.table()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import tensorflow as tf

from exporter.formatting import aligned_rows, json_safe

Level = Literal["error", "warning", "info"]

# Highest-priority status first; a scalar's status is the first that applies.
STATUSES = ("non-finite", "untracked", "unchanged", "not-used", "non-trainable", "ok")


@dataclass(frozen=True)
class Finding:
    """One audit result: `level` error/warning/info, about `variable` (a name)."""

    level: Level
    variable: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "level": self.level,
            "variable": self.variable,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class ScalarFinding:
    """Everything known about one scalar; `variable` is the `tf.Variable` (join key
    for freezing via `variable.ref()`), left out of `repr` and `to_dict`."""

    name: str
    value: float | int | bool
    shape: tuple[int, ...]
    dtype: str
    tracked: bool
    trainable: bool
    used_by_inference: bool
    finite: bool
    unchanged_since_init: bool | None
    initial_value: float | None
    status: str
    variable: tf.Variable = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": json_safe(self.value),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "tracked": self.tracked,
            "trainable": self.trainable,
            "used_by_inference": self.used_by_inference,
            "finite": self.finite,
            "unchanged_since_init": self.unchanged_since_init,
            "initial_value": json_safe(self.initial_value),
            "status": self.status,
        }


@dataclass
class NonScalarSummary:
    """Counts for weights with more than one element (kernels, embeddings, ...)."""

    count: int = 0
    total_params: int = 0
    used_by_inference: int = 0
    not_used_by_inference: int = 0
    non_finite: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # trainable, still their initial values

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total_params": self.total_params,
            "used_by_inference": self.used_by_inference,
            "not_used_by_inference": self.not_used_by_inference,
            "non_finite": list(self.non_finite),
            "untracked": list(self.untracked),
            "unchanged": list(self.unchanged),
        }


@dataclass
class AuditReport:
    """Scalars, a summary of the other weights, and the findings about both."""

    model_name: str
    scalars: list[ScalarFinding]
    non_scalar_summary: NonScalarSummary
    findings: list[Finding]

    @property
    def has_errors(self) -> bool:
        return any(f.level == "error" for f in self.findings)

    def scalar(self, name: str) -> ScalarFinding:
        """The scalar called `name` (full path, or a unique last path component)."""
        exact = [s for s in self.scalars if s.name == name]
        if exact:
            return exact[0]
        tail = [s for s in self.scalars if s.name.rsplit("/", 1)[-1] == name]
        if len(tail) != 1:
            known = [s.name for s in self.scalars]
            raise KeyError(f"No unique scalar named {name!r}; scalars are {known}.")
        return tail[0]

    def findings_for(self, name: str, level: Level | None = None) -> list[Finding]:
        """Findings about variable `name`, optionally of one level."""
        return [
            f for f in self.findings if f.variable == name and (level is None or f.level == level)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "has_errors": self.has_errors,
            "scalars": [s.to_dict() for s in self.scalars],
            "non_scalar_summary": self.non_scalar_summary.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
        }

    def table(self) -> str:
        """Aligned table of the scalars, then the summary and findings, for humans."""
        header = ("name", "shape", "dtype", "value", "tracked", "trainable", "inference", "status")
        rows = [
            (
                s.name,
                str(list(s.shape)),
                s.dtype,
                f"{s.value:.6g}" if isinstance(s.value, float) else str(s.value),
                _yes(s.tracked),
                _yes(s.trainable),
                _yes(s.used_by_inference),
                s.status,
            )
            for s in self.scalars
        ]
        lines = aligned_rows(header, rows, rule=True)
        summary = self.non_scalar_summary
        lines.append(
            f"non-scalars: {summary.count} weights, {summary.total_params} params, "
            f"{summary.used_by_inference} used by inference"
        )
        lines.extend(f"{f.level.upper()}: {f.message}" for f in self.findings)
        return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
