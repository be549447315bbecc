"""Shared text and JSON formatting for reports: aligned tables and strict-JSON numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def aligned_rows(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, rule: bool = False
) -> list[str]:
    """Header and rows as lines, each column padded to its widest cell, two spaces apart;
    `rule` adds a line of dashes under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def json_safe(value: Any) -> Any:
    """Non-finite floats as strings ('nan', 'inf'), recursively, so the JSON stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
