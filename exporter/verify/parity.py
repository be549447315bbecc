"""Numeric parity between runtimes, reported the way Polygraphy does.

Each candidate runtime's outputs are compared with the reference's, output by output:
max and mean absolute error, max relative error, and PASSED/FAILED against
`|candidate - reference| <= atol + rtol * |reference|` (numpy.allclose semantics).
The runners (Keras traced and eager, the SavedModel in a TF1 Session, ONNX Runtime), the
model's own eager/traced spread and `StagedParity` (one runtime alive at a time, for the
export's own check) live here too: one job, the comparison, with everything it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporter import tf_internals
from exporter.formatting import aligned_rows, json_safe
from exporter.verify.sample_inputs import no_token_batch, random_inputs

#: When no per-output tolerance applies: float32's (`exporter.verify.tolerances`).
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class OutputComparison:
    """One output of one runtime against the reference, over all samples."""

    runtime: str
    output: str
    max_abs: float
    mean_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool
    tolerance: str = ""  # why this atol/rtol (see exporter.verify.tolerances)


@dataclass
class ParityReport:
    """Every comparison of a parity run; `passed` only if all of them passed and no runtime
    failed to answer. The export's own check (Keras vs SavedModel vs ONNX Runtime) leaves the
    served-model fields empty; `verify.served_parity` fills them (model, version, targets)."""

    reference: str
    atol: float
    rtol: float
    batch_sizes: list[int]
    samples: int  # batches compared
    comparisons: list[OutputComparison] = field(default_factory=list)
    model_name: str | None = None
    version: int | None = None
    grpc_target: str | None = None
    rest_target: str | None = None
    errors: dict[str, str] = field(default_factory=dict)  # runtime -> first failure
    skipped: dict[str, str] = field(default_factory=dict)  # runtime -> reason

    @property
    def passed(self) -> bool:
        return (
            bool(self.comparisons) and not self.errors and all(c.passed for c in self.comparisons)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite errors become strings); served-model fields only when set."""
        doc = {**asdict(self), "passed": self.passed}
        if self.model_name is None:
            for key in ("model_name", "version", "grpc_target", "rest_target"):
                del doc[key]
            for key in ("errors", "skipped"):  # the export's check: only when there are any
                if not doc[key]:
                    del doc[key]
        return json_safe(doc)

    def table(self) -> str:
        """Polygraphy-style: one row per (runtime, output) against the reference."""
        if self.model_name is None:
            per_output = any(c.tolerance for c in self.comparisons)
            header = f"parity vs {self.reference} " + (
                "(tolerance per output: see 'tolerance')"
                if per_output
                else f"(atol={self.atol:g}, rtol={self.rtol:g})"
            )
        else:
            header = (
                f"parity: {self.model_name} version {self.version}, reference {self.reference}, "
                f"{self.samples} batches (batch sizes {', '.join(map(str, self.batch_sizes))})"
            )
        lines = [header, *comparison_rows(self.comparisons)]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        lines += [f"error   {name}: {why}" for name, why in self.errors.items()]
        failed = sum(not c.passed for c in self.comparisons)
        verdict = (
            "PASSED"
            if self.passed
            else (
                f"FAILED ({failed} of {len(self.comparisons)} over tolerance, "
                f"{len(self.errors)} runtime error(s))"
            )
        )
        lines.append(f"parity {verdict}")
        return "\n".join(lines)


def comparison_rows(comparisons: Iterable[OutputComparison]) -> list[str]:
    """Polygraphy-style rows (header first): runtime, output, errors, tolerances, status."""
    comparisons = list(comparisons)
    reasons = any(c.tolerance for c in comparisons)
    header = ("runtime", "output", "max abs", "mean abs", "max rel", "atol", "rtol", "status")
    header += ("tolerance",) if reasons else ()
    rows = [
        (
            c.runtime,
            c.output,
            f"{c.max_abs:.3e}",
            f"{c.mean_abs:.3e}",
            f"{c.max_rel:.3e}",
            f"{c.atol:g}",
            f"{c.rtol:g}",
            "PASSED" if c.passed else "FAILED",
        )
        + ((c.tolerance,) if reasons else ())
        for c in comparisons
    ]
    return aligned_rows(header, rows)


class _Accumulator:
    """Running max/mean of errors for one (runtime, output) pair."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.passed = True

    def add(self, candidate: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> None:
        if np.asarray(reference).dtype.kind in "OSU":  # strings: equal or not
            self._add_exact(np.asarray(candidate), np.asarray(reference))
            return
        cand = np.asarray(candidate, dtype=np.float64)
        ref = np.asarray(reference, dtype=np.float64)
        if cand.shape != ref.shape:
            self.passed = False
            self.max_abs = self.max_rel = float("inf")
            return
        diff = np.abs(cand - ref)
        same_nonfinite = (~np.isfinite(ref)) & (cand == ref) | (np.isnan(ref) & np.isnan(cand))
        diff = np.where(same_nonfinite, 0.0, diff)
        rel = diff / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
        if diff.size:
            self.max_abs = max(
                self.max_abs, float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
            )
            self.max_rel = max(self.max_rel, float(np.nanmax(np.where(diff == 0, 0.0, rel))))
            self.sum_abs += float(np.sum(np.where(np.isfinite(diff), diff, 0.0)))
            self.count += diff.size
        self.passed &= bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(ref))))

    def _add_exact(self, candidate: np.ndarray, reference: np.ndarray) -> None:
        def as_bytes(a: np.ndarray) -> list[bytes]:
            return [v.encode() if isinstance(v, str) else bytes(v) for v in a.reshape(-1)]

        same = candidate.shape == reference.shape and as_bytes(candidate) == as_bytes(reference)
        self.count += reference.size
        if not same:
            self.passed = False
            self.max_abs = self.max_rel = float("inf")


def compare(
    reference_name: str,
    reference: Runner,
    candidates: Mapping[str, Runner],
    batches: Iterable[dict[str, np.ndarray]],
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    batch_sizes: list[int] | None = None,
    tolerances: Mapping[str, Any] | None = None,
) -> ParityReport:
    """Run every runtime on every batch and compare each output with the reference's.

    `tolerances` (output -> `exporter.verify.tolerances.Tolerance`) overrides atol/rtol per output.
    """
    tolerances = tolerances or {}

    def tol(output: str) -> tuple[float, float, str]:
        t = tolerances.get(output)
        return (atol, rtol, "") if t is None else (t.atol, t.rtol, t.reason)

    acc: dict[tuple[str, str], _Accumulator] = {}
    samples = 0
    for batch in batches:
        samples += 1
        expected = reference(batch)
        for runtime, run in candidates.items():
            got = run(batch)
            for output, ref_value in expected.items():
                a = acc.setdefault((runtime, output), _Accumulator())
                if output not in got:
                    a.passed = False
                    a.max_abs = a.max_rel = float("inf")
                    continue
                a.add(got[output], ref_value, *tol(output)[:2])
    report = ParityReport(reference_name, atol, rtol, batch_sizes or [], samples)
    for (runtime, output), a in acc.items():
        output_atol, output_rtol, reason = tol(output)
        report.comparisons.append(
            OutputComparison(
                runtime,
                output,
                a.max_abs,
                a.sum_abs / max(a.count, 1),
                a.max_rel,
                output_atol,
                output_rtol,
                a.passed,
                reason,
            )
        )
    return report


def sample_batches(
    specs: Mapping[str, Any],
    *,
    samples: int,
    batch_sizes: Iterable[int],
    extra: Iterable[dict[str, np.ndarray]] = (),
    int_high: int = 10,
    vocabularies: Mapping[str, np.ndarray] | None = None,
) -> list[dict[str, np.ndarray]]:
    """`samples` random batches for each batch size, then (for string inputs, when `samples`)
    one batch of strings with no word in them, then the user's own inputs."""
    batches = [
        random_inputs(
            specs, batch=b, seed=1000 * b + i, int_high=int_high, vocabularies=vocabularies
        )
        for b in batch_sizes
        for i in range(samples)
    ]
    blank = no_token_batch(specs, int_high, vocabularies) if batches else None
    return batches + ([blank] if blank is not None else []) + [dict(e) for e in extra]


def keras_runner(traced: Any) -> Runner:
    """Run the live Keras model (its traced, variable-reading function: no freezing)."""
    import tensorflow as tf

    names = list(traced.input_specs)

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = traced.function(*[tf.constant(batch[n]) for n in names])
        return {k: np.asarray(out[k]) for k in traced.output_names}

    return run


def eager_runner(traced: Any) -> Runner:
    """Run the live Keras model eagerly, op by op: the same float32 math as `keras_runner`
    in another valid order (no Grappler rewrites, no fused kernels)."""
    import tensorflow as tf

    names = list(traced.input_specs)

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = traced.eager(*[tf.constant(batch[n]) for n in names])
        return {k: np.asarray(out[k]) for k in traced.output_names}

    return run


def ulp_runner(run: Runner, seed: int = 0) -> Runner:
    """`run` on its batch with every float input moved by one ulp (x * (1 +/- eps), random
    signs): how far rounding at the input alone moves the answer. Other inputs unchanged."""

    def perturbed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        moved = {}
        for name, value in batch.items():
            value = np.asarray(value)
            if value.dtype.kind == "f":
                sign = rng.choice(np.array([-1.0, 1.0]), size=value.shape)
                value = (value * (1 + np.finfo(value.dtype).eps * sign)).astype(value.dtype)
            moved[name] = value
        return run(moved)

    return perturbed


def float_spread(
    reference: Runner, other: Runner, batches: Iterable[dict[str, np.ndarray]]
) -> dict[str, tuple[float, float]]:
    """Per float output over `batches`: (largest finite |other - reference|, largest finite
    |reference|), the spread between two runs and the scale it is measured against."""
    found: dict[str, tuple[float, float]] = {}
    for batch in batches:
        expected, got = reference(batch), other(batch)
        for name, ref in expected.items():
            ref = np.asarray(ref, dtype=None)
            if ref.dtype.kind != "f" or name not in got:
                continue
            ref64 = ref.astype(np.float64)
            diff = np.abs(np.asarray(got[name], np.float64) - ref64)
            spread, scale = found.get(name, (0.0, 0.0))
            finite, magnitude = diff[np.isfinite(diff)], np.abs(ref64[np.isfinite(ref64)])
            found[name] = (
                max(spread, float(finite.max()) if finite.size else 0.0),
                max(scale, float(magnitude.max()) if magnitude.size else 0.0),
            )
    return found


def savedmodel_runner(export_dir: Path, signature: str = "serving_default") -> Runner:
    """Reload the SavedModel from disk into a TF Session and run a signature by its keys.

    This is how TF Serving runs a SavedModel (MetaGraph tag `serve`, feeds and fetches named
    by the SignatureDef); it is also 3x cheaper in time and memory than tf.saved_model.load.
    """
    import tensorflow as tf

    graph = tf.Graph()
    # Grappler's first-run rewrite of a frozen graph scales with its weight constants (4 s and
    # +0.7 GiB at 30M parameters): check the graph as written; the rewritten graph TF Serving
    # runs is what `python -m exporter parity` checks end to end, through the server.
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    session = tf.compat.v1.Session(graph=graph, config=config)
    # The TF1 loader: deprecated in Python, and exactly what TF Serving runs.
    with graph.as_default(), tf_internals.silence_deprecation():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(export_dir))
    signature_def = meta_graph.signature_def[signature]
    fetches = {key: info.name for key, info in signature_def.outputs.items()}
    feeds = {key: info.name for key, info in signature_def.inputs.items()}

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return session.run(fetches, {feeds[key]: value for key, value in batch.items()})

    run.close = session.close  # type: ignore[attr-defined]  # frees the Session's weights
    return run


def onnx_runner(source: Path | Any) -> Runner:
    """Run an ONNX file (or an already-loaded InferenceSession) on ONNX Runtime's CPU."""
    import onnx
    import onnxruntime as ort

    from exporter.onnx_format.tables import custom_op_library
    from serving.onnx_servable import ort_strings
    from serving.ort_extensions import session_options

    session = (
        ort.InferenceSession(
            str(source),
            session_options(custom_op_library(onnx.load(str(source), load_external_data=False))),
            providers=["CPUExecutionProvider"],
        )
        if isinstance(source, str | Path)
        else source
    )
    names = [o.name for o in session.get_outputs()]

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: ort_strings(v) for k, v in batch.items()}
        return dict(zip(names, session.run(names, feeds), strict=True))

    return run


# --- one runtime at a time (the export's own check) ---------------------------------------------
# A restored TF Session and an ONNX Runtime session each hold a full copy of the weights: run
# side by side on a 1B-parameter model that is two extra copies. So the reference (Keras) runs
# once per batch and its outputs are kept (outputs are small); each candidate is checked right
# after its artifact is written and then closed, and the per-runtime reports merge into one.
# Every output of every batch is still compared.

#: Past this many bytes of weights a forward pass costs a read of all of them: check one batch
#: per batch size instead of `parity_samples` (every output of each batch is still compared).
LARGE_MODEL_BYTES = 256 * 2**20


class StagedParity:
    """Compare candidates with one reference over fixed batches, one candidate at a time."""

    def __init__(
        self,
        reference_name: str,
        reference: Runner,
        batches: list[dict[str, np.ndarray]],
        *,
        atol: float,
        rtol: float,
        batch_sizes: list[int],
        tolerances: Mapping[str, Any] | None = None,
        prepare: Callable[[StagedParity], Mapping[str, Any]] | None = None,
    ) -> None:
        """`prepare`, if given, computes the tolerances at the first `check` (the model's own
        spread runs the reference, which waits until an artifact has passed its own checks)."""
        self._prepare = prepare
        self._reference_name = reference_name
        self._batches = batches
        self._expected: dict[int, dict[str, np.ndarray]] = {}
        self._reference = reference
        self._atol, self._rtol, self._batch_sizes = atol, rtol, batch_sizes
        self._tolerances = tolerances  # output -> exporter.verify.tolerances.Tolerance
        self._reports: list[ParityReport] = []
        self.errors: dict[str, str] = {}  # runtime -> why it could not answer
        self.skipped: dict[str, str] = {}  # runtime -> why it was not run

    @property
    def batches(self) -> list[dict[str, np.ndarray]]:
        return self._batches

    def expected(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The reference's outputs for one of `batches`, computed once."""
        return self._cached(batch)

    def _cached(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = id(batch)  # the same batch objects come back for every candidate
        if key not in self._expected:
            self._expected[key] = self._reference(batch)
        return self._expected[key]

    def check(
        self,
        name: str,
        make_runner: Callable[[], Runner],
        failures: tuple[type[Exception], ...] = (),
    ) -> ParityReport | None:
        """Build the candidate's runner, compare it on every batch, then close it (a TF
        Session's copy of the weights is freed before the next runtime loads its own).

        A `failures` exception (the runtime refused the artifact, or failed on it) is recorded
        in `errors`, which fails the merged report, instead of propagating.
        """
        if self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            self._tolerances = prepare(self)
        runner = None
        try:
            runner = make_runner()
            report = compare(
                self._reference_name,
                self._cached,
                {name: runner},
                self._batches,
                atol=self._atol,
                rtol=self._rtol,
                batch_sizes=self._batch_sizes,
                tolerances=self._tolerances,
            )
        except failures as exc:
            self.errors[name] = str(exc)
            return None
        finally:
            close = getattr(runner, "close", None)
            if close is not None:
                close()
        self._reports.append(report)
        return report

    def skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason

    def report(self) -> ParityReport:
        """All candidates' comparisons in one report."""
        merged = ParityReport(
            self._reference_name, self._atol, self._rtol, self._batch_sizes, len(self._batches)
        )
        for report in self._reports:
            merged.comparisons.extend(report.comparisons)
        merged.errors.update(self.errors)
        merged.skipped.update(self.skipped)
        return merged


def samples_for(weights_bytes: int, requested: int) -> int:
    """Random batches per batch size: `requested`, or 1 past LARGE_MODEL_BYTES of weights."""
    return min(requested, 1) if weights_bytes > LARGE_MODEL_BYTES else requested
