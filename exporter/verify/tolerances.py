"""Default parity tolerances from each output's dtype and the model's compute dtype.

Like Polygraphy's and optimum's checks, one fixed pair cannot fit every precision: a float16
kernel in ONNX Runtime legitimately differs from TF's by a few float16 ulps, while a float32
model that drifts by that much has a real bug. The defaults scale with the machine epsilon of
the least precise float dtype the output went through (the output's own, or the compute dtype
of a `mixed_float16`/`mixed_bfloat16` policy); integer, bool and string outputs must match
exactly. An explicit --atol/--rtol always wins, and every row of the parity table says which
tolerance applied and why.

float32 is 1e-4 abs + 1e-3 rel, not Polygraphy's 1e-5/1e-5, because a deep float32 net is
not reproducible to 1e-5 even by TensorFlow itself. Measured on `tests/applications.py`'s
keras.applications models (random weights, calibrated BatchNormalization, the gate's N(0, 1)
inputs), against the reference the gate uses (the traced `tf.function`, bit-identical to
`model.predict`):
- MobileNetV3Small (logits up to ~10): TF's SavedModel 5.8e-5 abs, ONNX Runtime 5.0e-5 abs;
  Keras run eagerly differs from its own `tf.function` by the same 5.8e-5 (eager is
  bit-identical to the SavedModel run without Grappler: the spread is Grappler's/oneDNN's
  fused kernels against unfused ones, not the freeze). A logit of 2e-4 needs atol 1.1e-5 at
  rtol 1e-3.
- EfficientNetB0 (logits 100-450): up to 0.12 abs, 6.8e-4 rel (ORT), 2.9e-4 (SavedModel).
- Against the same models run in float64, every float32 runtime, the reference included, is
  off by up to 4e-4 rel: the two sides of the comparison are each that far from exact, so a
  tighter gate would measure rounding, not bugs.
Precedent: keras2onnx's keras.applications tests (rtol 1e-3, atol 1e-5), optimum's ResNet
ATOL_FOR_VALIDATION 1e-3, torch.onnx.verification's rtol 1e-3. A shallow model keeps its small
errors (the report shows them), but a deviation under 1e-3 relative is no longer a failure: a
tanh-approximated GELU in place of the exact one (4.7e-4 at 2.7) passes one layer, so a user
who needs that strictness passes `--atol 1e-5 --rtol 1e-5`. Conversion bugs the gate exists
for (a wrong constant, a dropped op, a wrong layout, an unapplied scalar) differ by orders more.
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
