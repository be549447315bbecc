"""`export_model`: trace → audit → freeze → write SavedModel + ONNX → parity → publish → report.

Both artifacts are built in scratch directories and validated (freeze proof, onnx.checker,
ORT load, parity) before either is published, so TF Serving never sees a version that
failed a check, and a failure leaves the output tree exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from exporter.audit import audit_model
from exporter.audit_report import AuditReport
from exporter.errors import AuditError, ExportError, ParityError
from exporter.freeze import FrozenGraph, freeze
from exporter.lift import DEFAULT_MAX_FROZEN_BYTES
from exporter.onnx_export import TRITON_CONFIG, OnnxArtifact, check_opset, triton_config, write_onnx
from exporter.parity import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    keras_runner,
    onnx_runner,
    sample_batches,
    savedmodel_runner,
)
from exporter.publish import Publication, check_writable, next_version
from exporter.report import REPORT_FILE, SAVEDMODEL_REPORT, ExportReport, sha256
from exporter.sample_inputs import conform_inputs
from exporter.savedmodel import check_warmup_requests, write_savedmodel
from exporter.serving_compat import (
    DEFAULT_SERVING_VERSION,
    check_compatible,
    image_tag,
    savedmodel_facts,
    version_table,
)
from exporter.staged_parity import StagedParity, samples_for
from exporter.trace import input_signature_from_model, trace_model

Progress = Callable[[str], None]
WeightsProgress = Callable[[str, int, int], None]  # stage label, bytes done, bytes total


def _refuse_unsafe(audit: AuditReport, allow_untracked: bool) -> list[str]:
    """Raise AuditError on the audit's first error finding; return warnings to report.

    An untracked captured variable is the one error a user may override
    (`allow_untracked`): it then ships, untrained, with a warning in the report.
    """
    warnings = []
    for finding in audit.findings:
        overridable = finding.code == "untracked_captured"
        if finding.level == "warning" or (
            finding.level == "error" and overridable and allow_untracked
        ):
            warnings.append(finding.message)
        elif finding.level == "error":
            hint = " (Pass --allow-untracked to export it anyway.)" if overridable else ""
            raise AuditError(
                f"Refusing to export ({finding.code.replace('_', '-')}): {finding.message}{hint}"
            )
    return warnings


def _int_high(model: Any) -> int:
    """Upper bound for random int inputs: the smallest Embedding vocabulary, else 10."""
    dims = [
        layer.input_dim
        for layer in getattr(model, "_flatten_layers", lambda: [])()
        if hasattr(layer, "input_dim") and isinstance(layer.input_dim, int)
    ]
    return min([10, *dims])


def _scalar_rows(
    audit: AuditReport, frozen: FrozenGraph, onnx_art: OnnxArtifact
) -> list[dict[str, Any]]:
    rows = []
    for s in audit.scalars:
        const = frozen.const_for(s.variable) if s.used_by_inference else None
        initializer = onnx_art.initializer_for(const.node_name) if const else None
        if not s.used_by_inference:
            note = "not in inference graph"
        elif initializer is None:
            note = "folded by tf2onnx (proven by parity)"
        elif onnx_art.initializers[initializer].tobytes() != const.value.tobytes():
            note = "initializer differs from Const"
        else:
            note = "initializer, bit-exact"
        rows.append(
            {
                "name": s.name,
                "shape": list(s.shape),
                "dtype": s.dtype,
                "value": s.value,
                "tracked": s.tracked,
                "trainable": s.trainable,
                "used_by_inference": s.used_by_inference,
                "savedmodel_const": const.node_name if const else None,
                "savedmodel_const_bit_exact": const.bit_exact if const else None,
                "onnx_initializer": initializer,
                "onnx_note": note,
            }
        )
    return rows


def _with_checkpoint(proof: dict[str, Any], checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The freeze proof plus where each read-only variable's exact bytes were found."""
    if not checkpoint:
        return proof
    exact = checkpoint["bit_exact"]
    for entry in proof["read_only_variables"]:
        entry["checkpoint_bit_exact"] = exact.get(entry["name"], False)
    return proof | {
        "proven": proof["proven"] and all(exact.values()),
        "checkpoint": {k: v for k, v in checkpoint.items() if k != "bit_exact"},
    }


def export_model(
    model: Any,
    out_dir: str | Path,
    name: str,
    *,
    version: int | None = None,
    opset: int | None = None,
    warmup_requests: int = 0,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    allow_untracked: bool = False,
    input_signature: Mapping[str, tf.TensorSpec] | None = None,
    initial_values: Mapping[str, float] | None = None,
    parity_inputs: Iterable[dict[str, np.ndarray]] = (),
    parity_samples: int = 4,
    onnx_only: bool = False,
    serving_version: str = DEFAULT_SERVING_VERSION,
    progress: Progress | None = None,
    max_frozen_bytes: int = DEFAULT_MAX_FROZEN_BYTES,
    weights_progress: WeightsProgress | None = None,
) -> ExportReport:
    """Export `model` frozen to `out_dir` for TF Serving and ONNX Runtime; return the report.

    Layout: `tfserving/NAME/VERSION/`, `onnx/NAME/VERSION/model.onnx`, the report inside
    both (`assets.extra/export_report.json`, `export_report.json`) and copied to
    `reports/NAME/VERSION.json`. Past `max_frozen_bytes` of weights the largest tensors stay
    read-only variables (SavedModel `variables/`, ONNX `model.onnx.data`); scalars and small
    tensors are always Consts. `onnx_only` skips the SavedModel. The SavedModel must load on
    TF Serving `serving_version` (its ops, op attrs and GraphDef version). `weights_progress`
    hears (stage, bytes done, bytes total) during long weight writes. Raises AuditError,
    FreezeError, ExportError, ServingCompatError or ParityError; on any of them nothing is
    published and no directory is left behind. Bad `parity_inputs` and an unwritable output
    are refused before anything is traced.
    """
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    if not name or "/" in name or name.startswith("."):
        raise ExportError(
            f"Model name {name!r} is not a valid directory name: use e.g. 'my_model'."
        )
    if version is not None and version < 1:
        raise ExportError(f"--version={version}: TF Serving versions are positive integers.")
    check_opset(opset)
    check_warmup_requests(warmup_requests)
    version_table(serving_version)
    tfs_base, onnx_base = out / "tfserving" / name, out / "onnx" / name
    reports = out / "reports" / name
    for directory in (tfs_base, onnx_base, reports):
        check_writable(directory)
    parity_inputs = list(parity_inputs)
    if parity_inputs:
        specs = input_signature or input_signature_from_model(model)[0]
        parity_inputs = [
            conform_inputs(batch, specs, source=f"parity_inputs[{i}]")
            for i, batch in enumerate(parity_inputs)
        ]

    say("trace: building tf.function from the model's signature")
    traced = trace_model(model, input_signature)
    say("audit: classifying scalars")
    audit = audit_model(model, traced=traced, initial_values=initial_values)
    warnings = _refuse_unsafe(audit, allow_untracked)

    say("freeze: variables -> constants, proving no variable op is left")
    frozen = freeze(traced, allow_oversized=onnx_only, max_frozen_bytes=max_frozen_bytes)
    if frozen.lifted:
        say(
            f"freeze: {len(frozen.lifted)} large tensors ({frozen.lifted_bytes / 2**20:.0f} MiB) "
            f"stay read-only variables; {len(frozen.consts)} frozen into Consts"
        )
    weights_step = weights_progress or (lambda _label, _done, _total: None)
    variables_proof: dict[str, Any] = {}

    int_high = _int_high(model)
    version = version or next_version(tfs_base, onnx_base)
    tfserving = None
    batch_sizes = [1, 8]
    samples = samples_for(frozen.weights_bytes + frozen.lifted_bytes, parity_samples)
    staged = StagedParity(
        "keras",
        keras_runner(traced),
        sample_batches(
            traced.input_specs,
            samples=samples,
            batch_sizes=batch_sizes,
            extra=parity_inputs,
            int_high=int_high,
        ),
        atol=atol,
        rtol=rtol,
        batch_sizes=batch_sizes,
    )
    with Publication() as publication:
        if not onnx_only:
            sm_dir = publication.directory(tfs_base / str(version))
            say(f"savedmodel: writing version {version}")
            variables_proof = write_savedmodel(
                frozen,
                sm_dir,
                model_name=name,
                warmup_requests=warmup_requests,
                int_high=int_high,
                progress=weights_step,
            )
            say(f"tfserving: checking ops against TF Serving {image_tag(serving_version)}")
            facts = savedmodel_facts(sm_dir)
            check_compatible(facts, serving_version)
            tfserving = {**facts.to_dict(), "serving_version": image_tag(serving_version)}
            # One runtime at a time: the Session's copy of the weights is freed before ONNX.
            say("parity: Keras vs savedmodel (TF1 Session, as TF Serving loads it)")
            staged.check("savedmodel", lambda: savedmodel_runner(sm_dir))
        onnx_dir = publication.directory(onnx_base / str(version))
        say("onnx: converting with tf2onnx, checking with onnx.checker and ONNX Runtime")
        onnx_art = write_onnx(
            frozen,
            onnx_dir,
            opset=opset,
            progress=lambda done, total: weights_step("onnx: weights written", done, total),
        )
        say("parity: Keras vs onnxruntime")
        staged.check("onnxruntime", lambda: onnx_runner(onnx_art.session))
        parity = staged.report()
        if not parity.passed:
            raise ParityError(
                "Exported artifacts disagree with the Keras model beyond "
                f"atol={atol:g}/rtol={rtol:g}; nothing was published.\n{parity.table()}"
            )
        report = ExportReport(
            name=name,
            version=version,
            out_dir=out,
            savedmodel_dir=None if onnx_only else tfs_base / str(version),
            onnx_path=onnx_base / str(version) / onnx_art.filename,
            signature=traced.signature_dict(),
            scalars=_scalar_rows(audit, frozen, onnx_art),
            audit=audit.to_dict(),
            freeze_proof=_with_checkpoint(frozen.proof(), variables_proof),
            parity=parity,
            onnx={"opset": onnx_art.opset, "external_data": onnx_art.external_data},
            weights_bytes=frozen.weights_bytes + frozen.lifted_bytes,
            tfserving=tfserving,
            saved_model_pb_sha256=None if onnx_only else sha256(sm_dir / "saved_model.pb"),
            onnx_sha256=sha256(onnx_dir / onnx_art.filename),
            warnings=warnings,
        )
        document = report.to_json()
        if not onnx_only:
            (sm_dir / SAVEDMODEL_REPORT).parent.mkdir(exist_ok=True)
            (sm_dir / SAVEDMODEL_REPORT).write_bytes(document)
        (onnx_dir / REPORT_FILE).write_bytes(document)
        publication.file(onnx_base / TRITON_CONFIG, triton_config(name, report.signature).encode())
        report.path = reports / f"{version}.json"
        publication.file(report.path, document)
        say(f"publish: version {version}")
    say(f"report: {report.path}")
    return report
