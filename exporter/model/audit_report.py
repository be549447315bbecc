"""The audit's findings as data: per-scalar and per-learned-scale rows, findings, a non-scalar
summary, the report.

`exporter.model.audit` fills these; the export report embeds `AuditReport.to_dict()` and the CLI
prints `AuditReport.table()`. Learned scale vectors (`exporter.model.learned_scales`) get a
scalar's judgments each, and are printed one line per kind (`LayerScale.gamma`), so a model with
dozens of them stays readable; the JSON lists every one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
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
            **_judgments(self),
        }


def _judgments(finding: ScalarFinding | ScaleVectorFinding) -> dict[str, Any]:
    """What the audit judged of a scalar or a learned scale, as JSON."""
    return {
        "tracked": finding.tracked,
        "trainable": finding.trainable,
        "used_by_inference": finding.used_by_inference,
        "finite": finding.finite,
        "unchanged_since_init": finding.unchanged_since_init,
        "initial_value": json_safe(finding.initial_value),
        "status": finding.status,
    }


@dataclass
class ScaleVectorFinding:
    """A learned scale vector (`LayerScale.gamma`): a scalar's judgments, its kind (`group`,
    `Layer.attribute`), and its value range instead of its values."""

    name: str
    group: str
    shape: tuple[int, ...]
    dtype: str
    min: float
    max: float
    tracked: bool
    trainable: bool
    used_by_inference: bool
    finite: bool
    unchanged_since_init: bool | None
    initial_value: float | None  # the constant it was created with, when it had one
    status: str
    variable: tf.Variable = field(repr=False, compare=False)

    @property
    def channels(self) -> int:
        return max(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "channels": self.channels,
            "min": json_safe(self.min),
            "max": json_safe(self.max),
            **_judgments(self),
        }


def scale_group_cells(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """One row of cells per kind of learned scale, from `ScaleVectorFinding.to_dict()`s (or the
    export report's rows, which carry the same keys): kind, count, channels, judgments."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    return [
        (
            group,
            str(len(members)),
            _span([m["channels"] for m in members], "d"),
            _share(members, "tracked"),
            _share(members, "trainable"),
            _share(members, "used_by_inference"),
            _at_init(members),
            ", ".join(f"{s} {n}" for s, n in Counter(m["status"] for m in members).items()),
        )
        for group, members in groups.items()
    ]


SCALE_GROUP_HEADER = (
    "learned scale", "vectors", "channels", "tracked", "trainable", "inference", "at init",
    "status",
)  # fmt: skip


def _span(values: Sequence[Any], spec: str) -> str:
    low, high = min(values), max(values)
    return format(low, spec) if low == high else f"{low:{spec}}-{high:{spec}}"


def _share(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    """`yes` / `no` when every row agrees, else `k of n`."""
    count = sum(1 for r in rows if r[key])
    return "yes" if count == len(rows) else "no" if count == 0 else f"{count} of {len(rows)}"


def _at_init(rows: Sequence[Mapping[str, Any]]) -> str:
    """Whether the vectors still hold their initial values, with that value when known."""
    known = [r for r in rows if r["unchanged_since_init"] is not None]
    if not known:
        return "unknown"
    text = _share(known, "unchanged_since_init")
    values = {r["initial_value"] for r in known if r["unchanged_since_init"]}
    if text != "no" and len(values) == 1 and None not in values:
        text += f" ({values.pop():g})"
    return text if len(known) == len(rows) else f"{text}, {len(rows) - len(known)} unknown"


@dataclass
class NonScalarSummary:
    """Counts for weights with more than one element (kernels, embeddings, learned scales...)."""

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
    """Scalars, learned scale vectors, a summary of the other weights, and the findings."""

    model_name: str
    scalars: list[ScalarFinding]
    non_scalar_summary: NonScalarSummary
    findings: list[Finding]
    learned_scales: list[ScaleVectorFinding] = field(default_factory=list)

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
            "learned_scales": [s.to_dict() for s in self.learned_scales],
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
        if self.learned_scales:
            lines += ["", f"learned scale vectors: {len(self.learned_scales)} (--json lists each)"]
            cells = scale_group_cells([s.to_dict() for s in self.learned_scales])
            lines += aligned_rows(SCALE_GROUP_HEADER, cells, rule=True)
        summary = self.non_scalar_summary
        lines.append(
            f"non-scalars: {summary.count} weights, {summary.total_params} params, "
            f"{summary.used_by_inference} used by inference"
        )
        lines.extend(f"{f.level.upper()}: {f.message}" for f in self.findings)
        return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
