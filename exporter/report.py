"""The export report: one JSON document per export, the machine-readable proof of what shipped.

It is written inside every version directory it describes before that directory is published
(`tfserving/NAME/V/assets.extra/export_report.json`, beside TF Serving's warmup file, and
`onnx/NAME/V/export_report.json`), so a published version always carries its report; a copy
at `reports/NAME/V.json` is published right after the versions, for tools that list reports.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from exporter.formatting import (
    aligned_rows,
    format_bytes,
    json_safe,
    plural,
    read_only_story,
    signature_rows,
)
from exporter.model.audit_report import SCALE_GROUP_HEADER, scale_group_cells
from exporter.verify.parity import ParityReport

REPORT_SCHEMA = "frozen-scalars/export-report/v1"
REPORT_FILE = "export_report.json"
SAVEDMODEL_REPORT = Path("assets.extra") / REPORT_FILE  # inside a SavedModel version
_PACKAGES = ("tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "onnxruntime", "numpy")


def package_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that shape an export (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sha256(path: Path) -> str:
    """Hex digest of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ExportReport:
    """Everything one export produced and proved; `to_dict()` is the JSON schema."""

    name: str
    version: int
    out_dir: Path
    savedmodel_dir: Path | None  # None when not produced (--formats onnx)
    onnx_path: Path | None  # None when not produced (--formats savedmodel)
    signature: dict[str, Any]
    scalars: list[dict[str, Any]]
    audit: dict[str, Any]
    freeze_proof: dict[str, Any]
    parity: ParityReport
    onnx: dict[str, Any] | None  # None when ONNX was not produced (--formats)
    weights_bytes: int  # constants + read-only variables: what a server holds per version
    tfserving: dict[str, Any] | None  # GraphDef versions, ops, serving version checked
    saved_model_pb_sha256: str | None  # digests of the staged files, taken before publication
    onnx_sha256: str | None
    warnings: list[str] = field(default_factory=list)
    formats: dict[str, Any] = field(default_factory=dict)  # produced / not_produced: why
    identical_to: int | None = (
        None  # an earlier version with the same bytes (see identical_version)
    )
    learned_scales: list[dict[str, Any]] = field(default_factory=list)  # per vector, with proof
    path: Path | None = None

    @property
    def passed(self) -> bool:
        return bool(self.freeze_proof.get("proven")) and self.parity.passed

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "schema": REPORT_SCHEMA,
                "name": self.name,
                "version": self.version,
                "packages": package_versions(),
                "artifacts": {
                    "savedmodel_dir": self.savedmodel_dir and str(self.savedmodel_dir),
                    "saved_model_pb_sha256": self.saved_model_pb_sha256,
                    "onnx_path": self.onnx_path and str(self.onnx_path),
                    "onnx_sha256": self.onnx_sha256,
                },
                "formats": self.formats,
                "identical_to": self.identical_to,
                "signature": self.signature,
                "scalars": self.scalars,
                "learned_scales": self.learned_scales,
                "audit": self.audit,
                "freeze_proof": self.freeze_proof,
                "onnx": self.onnx,
                "weights_bytes": self.weights_bytes,
                "tfserving": self.tfserving,
                "parity": self.parity.to_dict(),
                "warnings": self.warnings,
                "passed": self.passed,
            }
        )

    def to_json(self) -> bytes:
        """The report file's bytes."""
        return json.dumps(self.to_dict(), indent=2).encode() + b"\n"

    def summary(self) -> str:
        """The end-of-export summary: signature, scalars, freeze proof, parity, paths."""
        return "\n".join(
            [
                "Signature",
                *signature_rows(self.signature),
                *self._named_by_exporter(),
                "",
                "Scalars",
                self.scalar_table(),
                *self._learned_scales_section(),
                "",
                self.proof_summary(),
                "",
                self.parity.table(),
                "",
                f"Version     {self.version} ({self._formats_text()})",
                f"SavedModel  {self.savedmodel_dir or '- (not produced)'}",
                f"ONNX        {self.onnx_path or '- (not produced)'}",
                f"Report      {self.path}",
            ]
        )

    def _formats_text(self) -> str:
        """Which formats this version has; versions number exports, so the others are gaps."""
        produced = self.formats.get("produced", [])
        missing = self.formats.get("not_produced", {})
        same = [f"identical to version {self.identical_to}"] if self.identical_to else []
        return "; ".join(
            [", ".join(produced) or "-"] + [f"no {f}: {why}" for f, why in missing.items()] + same
        )

    def identical_version(self, reports: Path) -> int | None:
        """The newest earlier version under `reports` whose artifacts have the same bytes as
        this one's: the same formats, saved_model.pb and model.onnx digests. Only said of fully
        frozen exports, where those two files hold every weight (kept variables live beside)."""
        if self.freeze_proof.get("read_only_variables"):
            return None
        mine = (self.formats.get("produced"), self.saved_model_pb_sha256, self.onnx_sha256)
        earlier = [int(p.stem) for p in reports.glob("*.json") if p.stem.isdigit()]
        for version in sorted((v for v in earlier if v < self.version), reverse=True):
            path = reports / f"{version}.json"
            try:
                doc = json.loads(path.read_text())
                theirs = (
                    doc["formats"]["produced"],
                    doc["artifacts"]["saved_model_pb_sha256"],
                    doc["artifacts"]["onnx_sha256"],
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if theirs == mine and not doc["freeze_proof"].get("read_only_variables"):
                return version
        return None

    def _named_by_exporter(self) -> list[str]:
        """A note when the model named no input or output, so the exporter did."""
        generated = [
            name
            for kind in ("inputs", "outputs")
            for name in self.signature.get(kind, {})
            if re.fullmatch(r"(input|output)_\d+", name)
        ]
        if not generated:
            return []
        return [
            f"note: {', '.join(generated)} are names the exporter chose (the model names none): "
            "name inputs with keras.Input(name=...) and return a dict of outputs to choose them"
        ]

    def proof_summary(self) -> str:
        """The freeze proof: what is now a Const, what stays a read-only variable, and why.

        The wording for kept variables is `inspect`'s too (`read_only_story`)."""
        proof = self.freeze_proof
        tables = proof.get("tables", [])
        constants = proof["constants"]
        scalars = sum(1 for c in constants if int(np.prod(c["shape"])) == 1)
        exact = all(c["bit_exact"] for c in constants)
        kept = proof.get("read_only_variables", [])
        left = proof["variable_ops_remaining"]
        parts = [
            f"{plural(len(constants), 'weight')} frozen into Consts ({plural(scalars, 'scalar')}, "
            f"{plural(len(constants) - scalars, 'tensor')}), "
            f"{'bit-exact' if exact else 'NOT bit-exact'}"
        ]
        if kept:
            parts.append(read_only_story([(v["name"], v["bytes"]) for v in kept]))
        other = "other variable op" if kept else "variable op"
        parts.append(
            f"{plural(len(left), other)} left in graph + library"
            if left
            else f"no {other} left in graph + library"
        )
        if tables:
            parts.append(f"{len(tables)} lookup tables initialised by the init op")
        lines = [f"Frozen proof: {'PASSED' if proof['proven'] else 'FAILED'}: {'; '.join(parts)}"]
        lines += [
            f"  table {t['layer']}: {t['key_dtype']} -> {t['value_dtype']}, "
            f"{t['size']} keys, contents in {t['contents']}"
            for t in tables
        ]
        if kept:
            rows = [
                (
                    v["name"],
                    "x".join(map(str, v["shape"])),
                    format_bytes(v["bytes"]),
                    {True: "yes", False: "NO"}.get(v.get("checkpoint_bit_exact"), "-"),
                )
                for v in kept
            ]
            header = ("read-only variable", "shape", "size", "checkpoint bit-exact")
            lines += aligned_rows(header, rows)
        return "\n".join(lines)

    def _learned_scales_section(self) -> list[str]:
        """One line per kind of learned scale vector (the JSON report lists each)."""
        if not self.learned_scales:
            return []
        return [
            "",
            f"Learned scales: {plural(len(self.learned_scales), 'vector')}, judged like "
            "scalars (the report lists each)",
            self.learned_scale_table(),
        ]

    def learned_scale_table(self) -> str:
        """Per kind (`LayerScale.gamma`): count, channels, trained?, and where the vectors live
        now, with the bytes checked (a column per artifact produced)."""
        header = [h for h in SCALE_GROUP_HEADER if h not in ("tracked", "inference")]
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in self.learned_scales:
            groups.setdefault(row["group"], []).append(row)
        cells = []
        for audit_cells, members in zip(
            scale_group_cells(self.learned_scales), groups.values(), strict=True
        ):
            row = [c for h, c in zip(SCALE_GROUP_HEADER, audit_cells, strict=True) if h in header]
            if self.savedmodel_dir is not None:
                row.append(_savedmodel_cell(members))
            if self.onnx_path is not None:
                row.append(_onnx_cell(members))
            cells.append(tuple(row))
        header += ["SavedModel"] if self.savedmodel_dir is not None else []
        header += ["ONNX"] if self.onnx_path is not None else []
        return "\n".join(aligned_rows(tuple(header), cells))

    def scalar_table(self) -> str:
        """Human table of the scalars that shipped and where each one lives now (a column
        per artifact produced)."""
        columns = [("scalar", lambda s: s["name"])]
        columns += [
            (
                "value",
                lambda s: f"{s['value']:.6g}" if isinstance(s["value"], float) else str(s["value"]),
            ),
            ("tracked", lambda s: "yes" if s["tracked"] else "NO"),
            ("trainable", lambda s: "yes" if s["trainable"] else "no"),
        ]
        if self.savedmodel_dir is not None:
            columns.append(("SavedModel Const", lambda s: s["savedmodel_const"] or "-"))
        if self.onnx_path is not None:
            columns.append(("ONNX", lambda s: s["onnx_initializer"] or s["onnx_note"]))
        rows = [tuple(cell(s) for _, cell in columns) for s in self.scalars]
        return "\n".join(aligned_rows(tuple(name for name, _ in columns), rows))


def _savedmodel_cell(rows: list[dict[str, Any]]) -> str:
    """`18 Consts, bit-exact`; kept variables counted apart; any mismatch named."""
    consts = sum(1 for r in rows if r["savedmodel_const"])
    kept = sum(1 for r in rows if r["savedmodel_variable"])
    parts = [plural(consts, "Const")] if consts else []
    parts += [plural(kept, "read-only variable")] if kept else []
    missing = len(rows) - consts - kept
    parts += [f"{missing} not in graph"] if missing else []
    bad = sum(1 for r in rows if r["savedmodel_bit_exact"] is False)
    placed = consts + kept
    exact = "" if not placed else f", NOT bit-exact: {bad}" if bad else ", bit-exact"
    return " + ".join(parts) + exact


def _onnx_cell(rows: list[dict[str, Any]]) -> str:
    """`18 initializers, bit-exact`; exact float16 casts (mixed precision) and what tf2onnx
    folded away (parity proves those) counted apart."""
    found = [r for r in rows if r["onnx_initializer"]]
    exact = sum(1 for r in found if r["onnx_note"].endswith("bit-exact"))
    parts = [f"{plural(exact, 'initializer')}, bit-exact"] if exact else []
    casts = len(found) - exact
    parts += [f"{plural(casts, 'float16 initializer')}, exact casts"] if casts else []
    notes = [r["onnx_note"] for r in rows if not r["onnx_initializer"]]
    parts += [f"{n} {note}" for note, n in Counter(notes).items()]
    return "; ".join(parts)
