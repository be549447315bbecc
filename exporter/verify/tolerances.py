"""Default parity tolerances from each output's dtype and the model's compute dtype.

Like Polygraphy's and optimum's checks, one fixed pair cannot fit every precision: a float16
kernel in ONNX Runtime legitimately differs from TF's by a few float16 ulps, while a float32
model that drifts by that much has a real bug. The defaults scale with the machine epsilon of
the least precise float dtype the output went through (the output's own, or the compute dtype
of a `mixed_float16`/`mixed_bfloat16` policy); integer, bool and string outputs must match
exactly. An explicit --atol/--rtol always wins, and every row of the parity table says which
tolerance applied and why.

Why float32 is 1e-4 abs + 1e-3 rel, widened to the model's own spread, and not Polygraphy's
1e-5/1e-5: a deep float32 net is not reproducible to 1e-5 even by TensorFlow itself. Measured
(2026-12-04) on `tests/applications.py`'s keras.applications models (random weights, the
gate's N(0, 1) inputs) against the reference the gate uses, the traced `tf.function`
(bit-identical to `model.predict`):
- Keras run eagerly differs from its own `tf.function` about as much as the exported artifacts
  do (eager is bit-identical to the SavedModel run without Grappler, and
  TF_ENABLE_ONEDNN_OPTS=0 changes nothing: the spread is Grappler's rewritten graph against
  op-by-op kernels, not the freeze or the conversion). With BatchNormalization calibrated on 16
  images: MobileNetV3Small eager 8.4e-5 abs, ORT 1.4e-3 on logits up to ~50; EfficientNetB1
  eager 1.7, ORT 1.3 on logits of ~2000. Against the same weights run in float64 every float32
  runtime, the reference included, is off by 4e-4 to 5e-3 relative.
- How far apart the two runs are is the model's conditioning, so it varies by orders:
  calibrated on 256 images, EfficientNetB1's gap is 9.7e-5 on logits of 4.7.
No fixed atol fits both, so the gate measures the model's own spread first (`exporter.export`,
on the parity batches): Keras eagerly vs its tf.function, and the tf.function with every float
input moved by one ulp (eager and tf.function can agree bit for bit while ORT does not:
ResNet50V2, eager 0, ulp 1.5e-4, ORT 2.6e-4 at a logit of 0.015). Without an explicit --atol,
a float output's atol is raised to SPREAD_FACTOR times the larger where that is above the
dtype default, up to NOISE_SHARE of the output's magnitude; the row's reason says so. An
eager/tf.function gap that needs more means the float32 answer is noise (EfficientNetB1
calibrated on 16 images: 90 on logits of 2000) and is refused: no tolerance then tells a bug
from rounding.
The fixed floor, 1e-4 + 1e-3 rel, covers what both measures may miss (DenseNet121: eager =
tf.function bit for bit, ORT 4e-5); precedent: keras2onnx's keras.applications tests (rtol
1e-3), optimum's ResNet ATOL_FOR_VALIDATION 1e-3, torch.onnx.verification's rtol 1e-3. What
it gives up: a deviation under 1e-3 relative of a shallow model no longer fails (a
tanh-approximated GELU in place of the exact one, 4.7e-4 at 2.7, passes one layer): pass
`--atol 1e-5 --rtol 1e-5` for that strictness. The bugs the gate exists for (a wrong
constant, a dropped op, a wrong layout, an unapplied trained scalar) differ by orders more
(`tests/test_tables_rewrite.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tensorflow.core.framework import types_pb2

from exporter import tf_internals

#: (atol, rtol) per float dtype. float32: deep nets' rounding spread (module docstring);
#: float64 keeps Polygraphy's 1e-5/1e-5 (its rounding is 2^29 times finer).
#: float16 (eps 9.8e-4) and bfloat16 (eps 7.8e-3) allow about five ulps absolute near 1.0
#: and ten (float16) / six (bfloat16) relative: the spread that accumulation order and fused
#: kernels cause between two runtimes (a mixed_float16 MLP measures ~1e-3 abs on ORT).
FLOAT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-5, 1e-5),
    "float32": (1e-4, 1e-3),
    "float16": (5e-3, 1e-2),
    "bfloat16": (4e-2, 5e-2),
}
_PRECISION_ORDER = ("float64", "float32", "float16", "bfloat16")  # increasingly coarse


@dataclass(frozen=True)
class Tolerance:
    """The tolerance one output is checked with, and why."""

    atol: float
    rtol: float
    reason: str


def compute_dtypes(model: Any) -> set[str]:
    """Float compute dtypes of the model's layers (Keras 3 and tf_keras both expose them)."""
    layers = tf_internals.flatten_layers(model)
    dtypes = {getattr(layer, "compute_dtype", None) for layer in layers}
    return {d for d in dtypes if d in FLOAT_TOLERANCES}


def _coarsest(dtypes: Iterable[str]) -> str | None:
    ranked = [d for d in _PRECISION_ORDER if d in set(dtypes)]
    return ranked[-1] if ranked else None


def default_tolerance(output_dtype: str, model_dtypes: set[str]) -> Tolerance:
    """The tolerance for one output of `output_dtype` in a model computing in `model_dtypes`."""
    if output_dtype not in FLOAT_TOLERANCES:
        return Tolerance(0.0, 0.0, f"{output_dtype} output: exact")
    coarsest = _coarsest({output_dtype, *model_dtypes}) or output_dtype
    atol, rtol = FLOAT_TOLERANCES[coarsest]
    if coarsest == output_dtype:
        reason = f"{output_dtype} output"
    else:
        reason = f"{output_dtype} output computed in {coarsest} (dtype policy)"
    return Tolerance(atol, rtol, reason)


def resolve_tolerances(
    output_dtypes: Mapping[str, str],
    model_dtypes: set[str],
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, Tolerance]:
    """Per-output tolerances: the dtype defaults, with an explicit atol/rtol taking precedence."""
    resolved = {}
    for name, dtype in output_dtypes.items():
        default = default_tolerance(dtype, model_dtypes)
        given = [flag for flag, value in (("--atol", atol), ("--rtol", rtol)) if value is not None]
        resolved[name] = Tolerance(
            default.atol if atol is None else atol,
            default.rtol if rtol is None else rtol,
            f"{' and '.join(given)} given" + (f"; else {default.reason}" if len(given) == 1 else "")
            if given
            else default.reason,
        )
    return resolved


#: A float output's default atol widens to this many times the model's own spread: the
#: largest move of its answer between Keras eager and its tf.function, or when its float
#: inputs move by one ulp. Other runtimes' own kernels were measured at up to 17x the eager
#: spread (ONNX Runtime, MobileNetV3Small), which shares TF's kernels and differs in fusion only.
SPREAD_FACTOR = 20
#: The widened atol stays under this share of an output's largest magnitude; a model whose
#: eager/tf.function spread would need more is refused: its float32 answer is noise.
NOISE_SHARE = 0.1


def widen_to_spread(
    tolerances: Mapping[str, Tolerance],
    spread: Mapping[str, tuple[float, float]],
    eager: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Tolerance]:
    """Default float tolerances with atol raised to SPREAD_FACTOR x the model's own spread
    (per output, (largest move, largest magnitude): `spread` from inputs moved by one ulp,
    `eager` from Keras eager vs its tf.function) where that is larger, capped at NOISE_SHARE
    of the output's magnitude; exact ones unchanged.

    Call only without an explicit --atol (the user's wins). Raises ParityError when the eager
    spread alone needs more than the cap: the same model computes two answers that far apart,
    so no tolerance can tell a conversion bug from rounding. (An input ulp may legitimately
    flip a threshold, so that spread is only capped.)"""
    from exporter.errors import ParityError

    eager = eager or {}
    widened = dict(tolerances)
    for name, t in tolerances.items():
        (moved, scale), (apart, _) = spread.get(name, (0.0, 0.0)), eager.get(name, (0.0, 0.0))
        amount = max(moved, apart)
        if (t.atol, t.rtol) == (0.0, 0.0) or SPREAD_FACTOR * amount <= t.atol:
            continue
        cap = NOISE_SHARE * scale
        if SPREAD_FACTOR * apart > cap:
            raise ParityError(
                f"Output {name!r} is not reproducible: the Keras model run eagerly "
                f"and its own tf.function differ by {apart:.3g} on values up to {scale:.3g}, "
                "so parity cannot tell a conversion bug from rounding (on its random N(0, 1) "
                "inputs, and --inputs if given); nothing was published. Pass --atol to accept "
                "that spread, or check that the model is meant to be this sensitive."
            )
        atol = max(t.atol, min(SPREAD_FACTOR * amount, cap))
        widened[name] = Tolerance(
            atol,
            t.rtol,
            f"{t.reason}; atol {SPREAD_FACTOR}x the model's own spread ({amount:.1e}: "
            "Keras eager vs tf.function, inputs moved by one ulp)"
            + (
                f", capped at {NOISE_SHARE:.0%} of its magnitude"
                if atol < SPREAD_FACTOR * amount
                else ""
            ),
        )
    return widened


_REDUCED_PRECISION = {types_pb2.DT_HALF: "float16", types_pb2.DT_BFLOAT16: "bfloat16"}
_DTYPE_ATTRS = ("T", "dtype", "DstT", "SrcT", "Tparams", "out_type")


def graph_float_dtypes(graph_def: Any) -> set[str]:
    """Reduced-precision float dtypes any op of `graph_def` computes in: the dtype policy as a
    SavedModel still shows it (a mixed_float16 model has float16 ops behind float32 outputs)."""
    found = set()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    for node in nodes:
        for key in _DTYPE_ATTRS:
            if key in node.attr and node.attr[key].type in _REDUCED_PRECISION:
                found.add(_REDUCED_PRECISION[node.attr[key].type])
    return found


def signature_tolerances(
    signature_def: Any, graph_def: Any, atol: float | None = None, rtol: float | None = None
) -> dict[str, Tolerance]:
    """`resolve_tolerances` for a written SavedModel's signature outputs (no Keras model)."""
    import tensorflow as tf

    dtypes = {k: tf.as_dtype(v.dtype).name for k, v in signature_def.outputs.items()}
    return resolve_tolerances(dtypes, graph_float_dtypes(graph_def), atol, rtol)
