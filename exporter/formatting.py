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


def format_bytes(count: int) -> str:
    """`8.0 KiB`, `1.5 MiB`, `2.0 GiB`: binary units, one decimal."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"


def shape_text(shape: Sequence[int | None] | None) -> str:
    """A shape as `saved_model_cli show` prints it: `(-1, 64)`, unknown dims -1, `unknown rank`."""
    if shape is None:
        return "unknown rank"
    dims = ["-1" if d is None or d < 0 else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def signature_rows(signature: dict[str, Any]) -> list[str]:
    """`{"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}` as an aligned table."""
    rows = [
        (kind[:-1], name, str(spec.get("dtype")), shape_text(spec.get("shape")))
        for kind in ("inputs", "outputs")
        for name, spec in signature.get(kind, {}).items()
    ]
    return aligned_rows(("", "name", "dtype", "shape"), rows)


def read_only_story(variables: Sequence[tuple[str, int]]) -> str:
    """The one sentence export and inspect both say about weights kept as variables:
    `variables` are (name, bytes) of large tensors that stay read-only variables by design."""
    count, total = len(variables), sum(size for _, size in variables)
    names = ", ".join(name for name, _ in variables[:3])
    if count > 3:
        names += f" and {count - 3} more"
    one = count == 1
    return (
        f"{count} large tensor{'' if one else 's'} ({format_bytes(total)}: {names}) "
        f"stay{'s' if one else ''} {'a read-only variable' if one else 'read-only variables'} "
        f"by design; no op but the loader's restore can write {'it' if one else 'them'}"
    )


def plural(count: int, noun: str) -> str:
    """`1 scalar`, `2 scalars`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
