"""`export_model`: trace → audit → freeze → write SavedModel + ONNX → parity → publish → report.

Both artifacts are built in scratch directories and validated (freeze proof, onnx.checker,
ORT load, parity) before either is published, so TF Serving never sees a version that
failed a check, and a failure leaves the output tree exactly as it was.

One job at ~440 lines: the pipeline's order is the guarantee (no artifact is published before
every check passed), and the report rows that prove each scalar and learned scale per artifact
need the freeze, both writers' results and the checkpoint's read-back together.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from exporter import tf_internals
from exporter.errors import (
    AuditError,
    CppLoaderError,
    ExportError,
    OnnxReferenceError,
    ParityError,
    ServingCompatError,
)
from exporter.freeze.frozen_graph import FrozenGraph, freeze
from exporter.freeze.tables import input_vocabularies
from exporter.model.audit import audit_model
from exporter.model.audit_report import AuditReport
from exporter.model.trace import input_signature_from_model, trace_model
from exporter.onnx_format.convert import OnnxArtifact, write_onnx
from exporter.onnx_format.triton import TRITON_CONFIG, check_triton_types, triton_config
from exporter.options import FORMATS, ExportOptions, Progress, check_model_name
from exporter.publish import Publication, check_writable, next_version, output_failure
from exporter.report import REPORT_FILE, SAVEDMODEL_REPORT, ExportReport, sha256
from exporter.savedmodel.compat import check_compatible, image_tag, savedmodel_facts
from exporter.savedmodel.writer import write_savedmodel
from exporter.verify.c_api import cpp_runner, unavailable_reason
from exporter.verify.onnx_reference import reference_runner
from exporter.verify.parity import (
    StagedParity,
    eager_runner,
    float_spread,
    keras_runner,
    onnx_runner,
    sample_batches,
    samples_for,
    savedmodel_runner,
    ulp_runner,
)
from exporter.verify.runtimes import artifact_of
from exporter.verify.sample_inputs import conform_inputs
from exporter.verify.tolerances import compute_dtypes, resolve_tolerances, widen_to_spread

_OTHER_FORMAT = {"savedmodel": "onnx", "onnx": "savedmodel"}


def _check_cpp_loader(staged: StagedParity, sm_dir: Path, say: Progress) -> None:
    """The SavedModel through TF Serving's own loader (skipped, with why, if the wheel lacks it)."""
    why = unavailable_reason()
    if why:
        say(f"parity: savedmodel_cpp skipped: {why}")
        staged.skip("savedmodel_cpp", why)
        return
    say("parity: Keras vs savedmodel_cpp (TF_LoadSessionFromSavedModel, TF Serving's loader)")
    staged.check("savedmodel_cpp", lambda: cpp_runner(sm_dir), (CppLoaderError,))


def _ship_other(fmt: str, formats: tuple[str, ...]) -> str:
    """The fix-it hint when `fmt` is impossible but the other requested format may ship."""
    other = _OTHER_FORMAT[fmt]
    if other not in formats:
        return ""
    return f" Pass --formats {other} to ship the {other} artifact alone."


def _with_hint(exc: Exception, hint: str) -> str:
    text = str(exc)
    return text if not hint or "--formats" in text else text + hint


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


def _spread_tolerances(
    staged: StagedParity, traced: Any, tolerances: dict[str, Any], say: Progress
) -> dict[str, Any]:
    """The default tolerances, widened to the model's own float32 spread: how far its answer
    moves between its `tf.function` and an eager run, and when every float input moves by one
    ulp (a deep float32 net, e.g. a random-weight EfficientNet, moves by ~1 on logits of
    ~500, so no fixed atol tells rounding from a bug). A model that cannot run eagerly is
    measured by the ulp run alone (and says so)."""
    say("parity: the model's own spread (Keras eagerly, and inputs moved by one ulp)")
    reference = staged.expected
    spread = float_spread(reference, ulp_runner(keras_runner(traced)), staged.batches)
    try:
        eager = float_spread(reference, eager_runner(traced), staged.batches)
    except (tf.errors.OpError, TypeError, ValueError) as exc:
        say(f"parity: the model does not run eagerly ({type(exc).__name__}); ulp spread only")
        eager = {}
    return widen_to_spread(tolerances, spread, eager)


def _int_high(model: Any) -> int:
    """Upper bound for random int inputs: the smallest Embedding vocabulary, else 10."""
    dims = [
        layer.input_dim
        for layer in tf_internals.flatten_layers(model)
        if hasattr(layer, "input_dim") and isinstance(layer.input_dim, int)
    ]
    return min([10, *dims])


def _onnx_section(onnx_art: OnnxArtifact | None) -> dict[str, Any] | None:
    if onnx_art is None:
        return None
    return {
        "opset": onnx_art.opset,
        "external_data": onnx_art.external_data,
        # What ORT must load to run the file (SessionOptions.register_custom_ops_library).
        "custom_op_library": onnx_art.custom_op_library,
        "rewrites": onnx_art.rewrites,
    }


def _formats_section(formats: tuple[str, ...], onnx_only: bool) -> dict[str, Any]:
    flag = "--onnx-only" if onnx_only else f"--formats {','.join(formats)}"
    return {
        "produced": list(formats),
        "not_produced": {f: f"not requested ({flag})" for f in FORMATS if f not in formats},
    }


def _bytes_needed(frozen: FrozenGraph, formats: tuple[str, ...]) -> int:
    """About what an export writes: the weights once per format, plus graphs and reports."""
    return (frozen.weights_bytes + frozen.lifted_bytes) * len(formats) + 64 * 1024


def _not_in_onnx(used: bool, onnx_art: OnnxArtifact | None, found: Any) -> str | None:
    """Why a weight has no initializer of its own in the ONNX file, or None when it has one."""
    if not used:
        return "not in inference graph"
    if onnx_art is None:
        return "no ONNX artifact"
    return "folded by tf2onnx (proven by parity)" if found is None else None


def _scalar_rows(
    audit: AuditReport, frozen: FrozenGraph, onnx_art: OnnxArtifact | None
) -> list[dict[str, Any]]:
    rows = []
    for s in audit.scalars:
        const = frozen.const_for(s.variable) if s.used_by_inference else None
        initializer = onnx_art.initializer_for(const.node_name) if const and onnx_art else None
        note = _not_in_onnx(s.used_by_inference, onnx_art, initializer)
        if note is None and onnx_art.initializers[initializer].tobytes() != const.value.tobytes():
            note = "initializer differs from Const"
        note = note or "initializer, bit-exact"
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


def _scale_rows(
    audit: AuditReport,
    frozen: FrozenGraph,
    onnx_art: OnnxArtifact | None,
    checkpoint: dict[str, Any],
) -> list[dict[str, Any]]:
    """Each learned scale vector's audit row plus where its exact bytes live in each artifact:
    a SavedModel Const (or, past --max-frozen-bytes, the checkpoint of a read-only variable) and
    an ONNX initializer (found by its Const's name, else by its bytes: tf2onnx shares equal
    constants and folds reshapes of them)."""
    lifted = {v.variable.ref(): v for v in frozen.lifted}
    rows = []
    for s in audit.learned_scales:
        const = frozen.const_for(s.variable) if s.used_by_inference else None
        kept = lifted.get(s.variable.ref()) if s.used_by_inference else None
        exact = const.bit_exact if const else None
        if kept:  # the checkpoint's read-back, by key
            exact = checkpoint.get("bit_exact", {}).get(kept.key)
        row = s.to_dict() | {
            "savedmodel_const": const.node_name if const else None,
            "savedmodel_variable": kept.key if kept else None,
            "savedmodel_bit_exact": exact,
            "onnx_initializer": None,
        }
        found, cast = None, None
        if onnx_art is not None and (const or kept):
            node, value = (const.node_name, const.value) if const else (kept.node_name, kept.view())
            found = onnx_art.holding(node, value)
            if found is None and value.dtype in (np.float32, np.float64):  # mixed precision
                found, cast = onnx_art.holding(node, value.astype(np.float16)), "float16"
        note = _not_in_onnx(s.used_by_inference, onnx_art, found)
        if found is not None:
            row["onnx_initializer"] = found[0]
            note = "initializer, bit-exact" if found[1] else "equal initializer, bit-exact"
            if cast:  # tf2onnx folded the read's Cast: the initializer is the exact cast
                note = f"{cast} initializer, the exact cast of the weight (Cast folded by tf2onnx)"
        rows.append(row | {"onnx_note": note})
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
    model: Any, out_dir: str | Path, name: str, options: ExportOptions | None = None
) -> ExportReport:
    """Export `model` frozen to `out_dir` for TF Serving and ONNX Runtime; return the report.

    Layout: `tfserving/NAME/VERSION/`, `onnx/NAME/VERSION/model.onnx`, the report inside
    both (`assets.extra/export_report.json`, `export_report.json`) and copied to
    `reports/NAME/VERSION.json`. `options` (validated when built) picks the version, the
    formats, the tolerances, the TF Serving version the SavedModel must load on, when large
    tensors stay read-only variables, and the progress callbacks (`ExportOptions`).
    Raises UsageError or OutputError (the caller's to fix: a bad name or input, an
    unwritable or full output), or AuditError, FreezeError, ExportError (an artifact failed
    its check), ServingCompatError or ParityError; on any of them nothing is published and
    no directory is left behind. Bad `parity_inputs` and an unwritable output are refused
    before anything is traced.
    """
    opts = options or ExportOptions()
    formats = opts.formats
    say = opts.progress or (lambda _msg: None)
    out = Path(out_dir)
    check_model_name(name)
    tfs_base, onnx_base = out / "tfserving" / name, out / "onnx" / name
    reports = out / "reports" / name
    for directory in (tfs_base, onnx_base, reports):
        check_writable(directory)
    parity_inputs = list(opts.parity_inputs)
    if parity_inputs:
        specs = opts.input_signature or input_signature_from_model(model)[0]
        parity_inputs = [
            conform_inputs(batch, specs, source=f"parity_inputs[{i}]")
            for i, batch in enumerate(parity_inputs)
        ]

    say("trace: building tf.function from the model's signature")
    traced = trace_model(model, opts.input_signature)
    say("audit: classifying scalars")
    audit = audit_model(model, traced=traced, initial_values=opts.initial_values)
    warnings = _refuse_unsafe(audit, opts.allow_untracked)

    if "onnx" in formats:  # before any conversion: Triton must be able to declare every tensor
        check_triton_types(traced.signature_dict())
    say("freeze: variables -> constants, proving no variable op is left")
    frozen = freeze(
        traced,
        allow_oversized="savedmodel" not in formats,
        max_frozen_bytes=opts.max_frozen_bytes,
    )
    tolerances = resolve_tolerances(
        {k: v["dtype"] for k, v in traced.signature_dict()["outputs"].items()},
        compute_dtypes(model),
        opts.atol,
        opts.rtol,
    )
    if frozen.lifted:
        say(
            f"freeze: {len(frozen.lifted)} large tensors ({frozen.lifted_bytes / 2**20:.0f} MiB) "
            f"stay read-only variables; {len(frozen.consts)} frozen into Consts"
        )
    weights_step = opts.weights_progress or (lambda _label, _done, _total: None)
    serving_tag = image_tag(opts.serving_version)
    variables_proof: dict[str, Any] = {}

    int_high = _int_high(model)
    version = opts.version or next_version(tfs_base, onnx_base)
    tfserving = None
    batch_sizes = [1, 8]
    samples = samples_for(frozen.weights_bytes + frozen.lifted_bytes, opts.parity_samples)
    staged = StagedParity(
        "keras",
        keras_runner(traced),
        sample_batches(
            traced.input_specs,
            samples=samples,
            batch_sizes=batch_sizes,
            extra=parity_inputs,
            int_high=int_high,
            vocabularies=input_vocabularies(frozen.graph_def, frozen.inputs),
        ),
        atol=0.0 if opts.atol is None else opts.atol,
        rtol=0.0 if opts.rtol is None else opts.rtol,
        batch_sizes=batch_sizes,
        tolerances=tolerances,
        prepare=None
        if opts.atol is not None
        else lambda s: _spread_tolerances(s, traced, tolerances, say),
    )
    onnx_art = None
    try:
        with Publication() as publication:
            if "savedmodel" in formats:
                sm_dir = publication.directory(tfs_base / str(version))
                say(f"savedmodel: writing version {version}")
                try:
                    variables_proof = write_savedmodel(
                        frozen,
                        sm_dir,
                        model_name=name,
                        warmup_requests=opts.warmup_requests,
                        int_high=int_high,
                        progress=weights_step,
                    )
                    say(f"tfserving: checking ops against TF Serving {serving_tag}")
                    facts = savedmodel_facts(sm_dir)
                    check_compatible(facts, opts.serving_version)
                except (ExportError, ServingCompatError) as exc:
                    raise type(exc)(_with_hint(exc, _ship_other("savedmodel", formats))) from exc
                tfserving = {**facts.to_dict(), "serving_version": serving_tag}
                # One runtime at a time: the Session's copy of the weights is freed before ONNX.
                if "savedmodel" in opts.runtimes:
                    say("parity: Keras vs savedmodel (TF1 Session, Python loader)")
                    staged.check("savedmodel", lambda: savedmodel_runner(sm_dir))
                if "savedmodel_cpp" in opts.runtimes:
                    _check_cpp_loader(staged, sm_dir, say)
            if "onnx" in formats:
                onnx_dir = publication.directory(onnx_base / str(version))
                say("onnx: converting with tf2onnx, checking with onnx.checker and ONNX Runtime")
                try:
                    onnx_art = write_onnx(
                        frozen,
                        onnx_dir,
                        opset=opts.opset,
                        progress=partial(weights_step, "onnx: weights written"),
                        layer_names=traced.layer_names,
                        proof_sizes=frozenset(
                            int(v.variable.shape.num_elements()) for v in audit.learned_scales
                        ),
                    )
                except ExportError as exc:
                    raise type(exc)(_with_hint(exc, _ship_other("onnx", formats))) from exc
                if "onnxruntime" in opts.runtimes:
                    say("parity: Keras vs onnxruntime")
                    staged.check("onnxruntime", lambda: onnx_runner(onnx_art.session))
                if "onnx_reference" in opts.runtimes:
                    say("parity: Keras vs onnx_reference (onnx.reference.ReferenceEvaluator)")
                    path = onnx_dir / onnx_art.filename
                    staged.check(
                        "onnx_reference", lambda: reference_runner(path), (OnnxReferenceError,)
                    )
            parity = staged.report()
            if not parity.passed:
                failed = {artifact_of(c.runtime) for c in parity.comparisons if not c.passed}
                failed |= {artifact_of(r) for r in parity.errors}
                hint = _ship_other(failed.pop(), formats) if len(failed) == 1 else ""
                raise ParityError(
                    "Exported artifacts disagree with the Keras model beyond the tolerances "
                    "below, or a runtime could not run them (pass --atol/--rtol to change the "
                    f"tolerances, --runtimes the runtimes); nothing was published.{hint}\n"
                    f"{parity.table()}"
                )
            report = ExportReport(
                name=name,
                version=version,
                out_dir=out,
                savedmodel_dir=tfs_base / str(version) if "savedmodel" in formats else None,
                onnx_path=onnx_base / str(version) / onnx_art.filename if onnx_art else None,
                signature=traced.signature_dict(),
                scalars=_scalar_rows(audit, frozen, onnx_art),
                learned_scales=_scale_rows(audit, frozen, onnx_art, variables_proof),
                audit=audit.to_dict(),
                freeze_proof=_with_checkpoint(frozen.proof(), variables_proof),
                parity=parity,
                onnx=_onnx_section(onnx_art),
                weights_bytes=frozen.weights_bytes + frozen.lifted_bytes,
                tfserving=tfserving,
                saved_model_pb_sha256=sha256(sm_dir / "saved_model.pb")
                if "savedmodel" in formats
                else None,
                onnx_sha256=sha256(onnx_dir / onnx_art.filename) if onnx_art else None,
                warnings=warnings,
                formats=_formats_section(formats, opts.onnx_only),
            )
            report.identical_to = report.identical_version(reports)
            document = report.to_json()
            if "savedmodel" in formats:
                (sm_dir / SAVEDMODEL_REPORT).parent.mkdir(exist_ok=True)
                (sm_dir / SAVEDMODEL_REPORT).write_bytes(document)
            if onnx_art is not None:
                (onnx_dir / REPORT_FILE).write_bytes(document)
                publication.file(
                    onnx_base / TRITON_CONFIG, triton_config(name, report.signature).encode()
                )
            report.path = reports / f"{version}.json"
            publication.file(report.path, document)
            say(f"publish: version {version}")
    except (OSError, tf.errors.OpError, ExportError) as exc:
        # Publication has removed what it staged: the space it took is free again.
        failure = output_failure(exc, out, _bytes_needed(frozen, formats))
        if failure is None:
            raise
        raise failure from exc
    say(f"report: {report.path}")
    return report
