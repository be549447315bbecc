"""The export report: one JSON document per export, the machine-readable proof of what shipped.

It is written inside every version directory it describes before that directory is published
(`tfserving/NAME/V/assets.extra/export_report.json`, beside TF Serving's warmup file, and
`onnx/NAME/V/export_report.json`), so a published version always carries its report; a copy
at `reports/NAME/V.json` is published right after the versions, for tools that list reports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from exporter.formatting import aligned_rows, json_safe
from exporter.verify.parity import ParityReport

REPORT_SCHEMA = "frozen-scalars/export-report/v1"
REPORT_FILE = "export_report.json"
SAVEDMODEL_REPORT = Path("assets.extra") / REPORT_FILE  # inside a SavedModel version
_PACKAGES = ("tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "onnxruntime", "numpy")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape an export."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
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
                "signature": self.signature,
                "scalars": self.scalars,
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
        """The end-of-export summary: scalars, freeze proof, parity, paths."""
        return "\n".join(
            [
                "Scalars",
                self.scalar_table(),
                "",
                self.proof_summary(),
                "",
                self.parity.table(),
                "",
                f"SavedModel  {self.savedmodel_dir or '- (not produced)'}",
                f"ONNX        {self.onnx_path or '- (not produced)'}",
                f"Report      {self.path}",
            ]
        )

    def proof_summary(self) -> str:
        """One line: did the freeze proof hold, and on how many variables."""
        proof = self.freeze_proof
        tables = proof.get("tables", [])
        line = "\n".join(
            [
                f"Frozen proof: {'PASSED' if proof['proven'] else 'FAILED'} "
                f"({len(proof['variable_ops_remaining'])} variable ops left in graph + library, "
                f"{len(proof['constants'])} variables now Const, bit-exact: "
                f"{all(c['bit_exact'] for c in proof['constants'])}"
                f"{f', {len(tables)} lookup tables initialised by the init op' if tables else ''})",
                *(
                    f"  table {t['layer']}: {t['key_dtype']} -> {t['value_dtype']}, "
                    f"{t['size']} keys, contents in {t['contents']}"
                    for t in tables
                ),
            ]
        )
        kept = proof.get("read_only_variables", [])
        if not kept:
            return line
        rows = [
            (
                v["name"],
                "x".join(map(str, v["shape"])),
                f"{v['bytes'] / 2**20:.1f} MiB",
                {True: "yes", False: "NO"}.get(v.get("checkpoint_bit_exact"), "-"),
            )
            for v in kept
        ]
        header = ("read-only variable", "shape", "size", "checkpoint bit-exact")
        return "\n".join([line, *aligned_rows(header, rows)])

    def scalar_table(self) -> str:
        """Human table of the scalars that shipped and where each one lives now."""
        header = ("scalar", "value", "tracked", "trainable", "SavedModel Const", "ONNX")
        rows = [
            (
                s["name"],
                f"{s['value']:.6g}" if isinstance(s["value"], float) else str(s["value"]),
                "yes" if s["tracked"] else "NO",
                "yes" if s["trainable"] else "no",
                s["savedmodel_const"] or "-",
                s["onnx_initializer"] or s["onnx_note"],
            )
            for s in self.scalars
        ]
        return "\n".join(aligned_rows(header, rows))
