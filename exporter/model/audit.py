"""Audit the scalars a Keras model's inference really uses, before they are frozen.

A scalar that the inference function captures but the model does not track (a variable
closed over by a `Lambda`, a raw `tf.Variable` attribute of a Keras 3 model) is never
seen by the optimizer, so `fit` never trains it, yet exporting bakes its value in as a
constant. That is silent in Keras; here it is an error finding that names the variable.
A variable the compiled loss closes over without the model tracking it (recipe 2's outside
loss weight) never trains either; inference does not read it, so that is a warning.

Definitions used throughout:
- *scalar*: a variable with exactly one element (rank 0, or every dimension 1, such as
  `add_weight(shape=(1,))`): freezing treats those alike, and users write both.
- *tracked*: listed by the model (`model.weights` / `model.variables`).
- *trainable*: in `model.trainable_weights`, i.e. the optimizer updates it. An untracked
  variable is reported non-trainable whatever its own `trainable` flag says.
- *used by inference*: captured by the traced inference function (`exporter.model.trace`).
- *learned scale*: a per-channel vector inference reads only as a factor of a per-example
  tensor (ConvNeXt's `LayerScale.gamma`, a LayerNormalization's gamma; the rule, and why
  BatchNormalization's gamma is not one, in `exporter.model.learned_scales`). Each gets a
  scalar's judgments (`ScaleVectorFinding`); its findings are grouped by kind.

Works with Keras 3 models (whose `keras.Variable` wraps a `tf.Variable` in `.value`) and
tf_keras models (whose weights are `tf.Variable`s). Findings are data; `AuditError` is
raised only when the input is not a model, or holds a weight that is no variable at all.

One job at ~480 lines: finding the variables inference and the loss read, and judging each
one (scalar, learned scale or other tensor), meet in one `_Var` record per variable; the report
types live in `exporter.model.audit_report`, the learned-scale rule in
`exporter.model.learned_scales`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from exporter import tf_internals
from exporter.errors import AuditError
from exporter.model.audit_report import (
    STATUSES,
    AuditReport,
    Finding,
    NonScalarSummary,
    ScalarFinding,
    ScaleVectorFinding,
)
from exporter.model.initial_values import InitialValue, initial_value_of
from exporter.model.learned_scales import (
    learned_scale_variables,
    scale_groups,
    scale_vector_findings,
)
from exporter.model.loading import is_keras_model
from exporter.model.trace import TracedModel, tf_variable_of, trace_model

_CONSTANT_INITIALIZERS = {"zeros": 0.0, "ones": 1.0}
_FIX = (
    "Fix: create it inside a layer with `self.add_weight(name=..., shape=(), "
    "initializer=keras.initializers.Constant(v))`, or use `exporter.model.layers.Offset` / "
    "`exporter.model.layers.Scale` instead of a Lambda or attribute holding a variable."
)


@dataclass
class _Var:
    variable: tf.Variable
    name: str
    tracked: bool
    trainable: bool
    used: bool = False
    initial: InitialValue | None = None
    owner: str = ""


def audit_model(
    model: Any,
    *,
    traced: TracedModel | None = None,
    initial_values: Mapping[str, Any] | None = None,
) -> AuditReport:
    """Classify every variable of `model` and every variable its inference captures.

    A trainable weight that still holds its initial value is flagged `unchanged`. That value
    is the one recorded when the variable was created, for models loaded or built inside
    `exporter.record_initial_values()` (the CLI always does; any initializer, random ones
    included). Without a recording, constant initializers of `exporter.model.layers` layers
    and of generic layers' `*_initializer` configs (and LayerScale's `init_values`) stand in.
    `initial_values` maps a variable
    name (full path, tf name, or last path component) to its initial value (a number, or an
    array for a larger weight) and overrides both.
    """
    if not is_keras_model(model):
        raise AuditError(
            f"audit_model needs a Keras model (keras.Model or tf_keras Model), got "
            f"{type(model).__name__}. Load or build the model first."
        )
    traced = traced if traced is not None else trace_model(model)
    variables = _collect(model, traced)
    _attach_initial_values(model, variables, initial_values or {})
    scale_refs = learned_scale_variables(traced.function)
    groups = scale_groups(model, scale_refs)

    scalars: list[ScalarFinding] = []
    scales: list[ScaleVectorFinding] = []
    summary = NonScalarSummary()
    findings: list[Finding] = []
    for var in variables:
        value = _view(var.variable)
        finite = _is_finite(value)
        at_init = var.initial is not None and var.initial.matches(value)
        if value.size == 1:
            scalar = _scalar_finding(var, value, finite, at_init)
            scalars.append(scalar)
            findings.extend(_variable_findings(var, value, finite, scalar))
            findings.extend(_scalar_findings(var, scalar))
            continue
        summary.count += 1
        summary.total_params += int(value.size)
        if var.used:
            summary.used_by_inference += 1
        else:
            summary.not_used_by_inference += 1
        if not finite:
            summary.non_finite.append(var.name)
        if not var.tracked:
            summary.untracked.append(var.name)
        ref = var.variable.ref()
        if ref in scale_refs:
            scales.append(_scale_finding(var, value, finite, at_init, groups.get(ref, "")))
        elif var.trainable and at_init:
            summary.unchanged.append(var.name)
        findings.extend(_variable_findings(var, value, finite, None))
    findings.extend(_unchanged_tensors_finding(summary.unchanged))
    findings.extend(scale_vector_findings(scales))
    return AuditReport(
        model_name=str(getattr(model, "name", type(model).__name__)),
        scalars=scalars,
        non_scalar_summary=summary,
        findings=findings,
        learned_scales=scales,
    )


def _collect(model: Any, traced: TracedModel) -> list[_Var]:
    """Model weights (tracked) first, then captured variables the model does not track."""
    trainable = {_tf_variable(w).ref() for w in model.trainable_weights}
    by_ref: dict[Any, _Var] = {}
    names: set[str] = set()

    def add(tf_var: tf.Variable, name: str, **flags: Any) -> None:
        unique, n = name, 1
        while unique in names:  # tf_keras names unnamed variables "Variable" each time
            unique, n = f"{name}_{n}", n + 1
        names.add(unique)
        by_ref[tf_var.ref()] = _Var(tf_var, unique, **flags)

    for w in model.weights:
        tf_var = _tf_variable(w)
        if tf_var.ref() not in by_ref:
            add(tf_var, _weight_name(w), tracked=True, trainable=tf_var.ref() in trainable)
    # Tracked but not a weight (e.g. Keras 3 seed-generator state): listed only if captured.
    other_tracked = {_tf_variable(v).ref(): v for v in getattr(model, "variables", [])}
    owners = _untracked_owners(model)
    for captured in traced.function.variables:
        ref = captured.ref()
        if ref in by_ref:
            by_ref[ref].used = True
        elif ref in other_tracked:
            add(
                captured,
                _weight_name(other_tracked[ref]),
                tracked=True,
                trainable=ref in trainable,
                used=True,
            )
        else:
            add(
                captured,
                _strip(captured.name),
                tracked=False,
                trainable=False,
                used=True,
                owner=owners.get(ref, ""),
            )
    for ref, (loss_var, owner) in _loss_variables(model).items():
        if ref not in by_ref and ref not in other_tracked:
            add(loss_var, _strip(loss_var.name), tracked=False, trainable=False, owner=owner)
    return list(by_ref.values())


def _tf_variable(w: Any) -> tf.Variable:
    if isinstance(w, tf.Variable):
        return w
    inner = getattr(w, "value", None)  # Keras 3: keras.Variable wraps a tf.Variable
    if isinstance(inner, tf.Variable):
        return inner
    raise AuditError(f"Weight {w!r} is neither a tf.Variable nor a Keras 3 Variable.")


def _weight_name(w: Any) -> str:
    return str(getattr(w, "path", None) or _strip(w.name))


def _strip(name: str) -> str:
    return name.split(":")[0]


def _layers(model: Any) -> Iterator[Any]:
    """The model and all nested layers, parents before children."""
    yield from tf_internals.flatten_layers(model)


def _untracked_owners(model: Any) -> dict[Any, str]:
    """Where untracked variables hide: Lambda closures/globals and plain attributes."""
    owners: dict[Any, str] = {}
    for layer in _layers(model):
        kind = type(layer).__name__
        if kind == "Lambda":
            for tf_var in _referenced_variables(getattr(layer, "function", None)):
                owners[tf_var.ref()] = f"closed over by Lambda layer {layer.name!r}"
        for attr, obj in vars(layer).items():
            if isinstance(obj, tf.Variable):
                owners.setdefault(
                    obj.ref(), f"held as raw attribute `{attr}` of {kind} {layer.name!r}"
                )
    return owners


def _loss_variables(model: Any) -> dict[Any, tuple[tf.Variable, str]]:
    """Variables the compiled loss closes over (recipe 2's outside loss weight)."""
    losses = getattr(model, "loss", None)
    if isinstance(losses, Mapping):
        losses = list(losses.values())
    found: dict[Any, tuple[tf.Variable, str]] = {}
    for loss in losses if isinstance(losses, list | tuple) else [losses]:
        function = getattr(loss, "fn", loss)  # Keras' LossFunctionWrapper keeps `fn`
        label = getattr(function, "__name__", type(function).__name__)
        for tf_var in _referenced_variables(function):
            found.setdefault(tf_var.ref(), (tf_var, f"closed over by the compiled loss {label!r}"))
    return found


def _referenced_variables(function: Any) -> list[tf.Variable]:
    """Variables a plain Python function reaches through its closure or its globals."""
    code = getattr(function, "__code__", None)
    if code is None:
        return []
    cells = [c.cell_contents for c in (function.__closure__ or ())]
    names = [function.__globals__.get(n) for n in code.co_names]
    return [v for v in map(tf_variable_of, (*cells, *names)) if v is not None]


def _attach_initial_values(model: Any, variables: list[_Var], overrides: Mapping[str, Any]) -> None:
    """Each variable's initial value: the user's override, else the one recorded at its
    creation, else a constant its layer declares (our layers) or configures."""
    by_ref = {v.variable.ref(): v for v in variables}
    for layer in _layers(model):  # children overwrite parents: innermost owner wins
        known = _layer_initial_values(layer)
        if not known:
            continue
        for w in layer.weights:
            var = by_ref.get(_tf_variable(w).ref())
            short = _strip(w.name).rsplit("/", 1)[-1]
            if var is not None and short in known:
                dtype = var.variable.dtype.as_numpy_dtype
                var.initial = InitialValue.of(np.full(var.variable.shape, known[short], dtype))
    for var in variables:
        var.initial = initial_value_of(var.variable) or var.initial
        short = var.name.rsplit("/", 1)[-1]
        for key in (var.name, var.variable.name, _strip(var.variable.name), short):
            if key in overrides:
                dtype = var.variable.dtype.as_numpy_dtype
                value = np.broadcast_to(np.asarray(overrides[key], dtype), var.variable.shape)
                var.initial = InitialValue.of(value)
                break


def _layer_initial_values(layer: Any) -> dict[str, float]:
    """Initial constants a layer declares: our layers say so; others via their config."""
    declared = getattr(layer, "initial_weight_values", None)
    if callable(declared):
        return dict(declared())
    try:
        config = layer.get_config()
    except (NotImplementedError, TypeError):
        return {}
    values: dict[str, float] = {}
    for key, spec in config.items():
        if key.endswith("_initializer") and isinstance(spec, Mapping):
            constant = _constant_of(spec)
            if constant is not None:
                values[key.removesuffix("_initializer")] = constant
    # Keras' LayerScale (keras and tf_keras ConvNeXt) configures its one weight as init_values.
    init = config.get("init_values")
    if len(layer.weights) == 1 and isinstance(init, int | float) and not isinstance(init, bool):
        values[_strip(layer.weights[0].name).rsplit("/", 1)[-1]] = float(init)
    return values


def _constant_of(spec: Mapping[str, Any]) -> float | None:
    """The fill value of a serialized Constant/Zeros/Ones initializer, else None."""
    class_name = str(spec.get("class_name", "")).lower()
    if class_name in _CONSTANT_INITIALIZERS:
        return _CONSTANT_INITIALIZERS[class_name]
    value = (spec.get("config") or {}).get("value")
    if class_name == "constant" and isinstance(value, int | float):
        return float(value)
    return None


def _view(variable: Any) -> np.ndarray:
    """The variable's value without a copy (`.numpy()` copies: a second set of weights)."""
    read = getattr(variable, "read_value", None)
    return np.asarray(read() if read is not None else variable)


_FINITE_CHUNK = 1 << 22  # elements per isfinite() pass: bounded temporaries on huge tensors


def _is_finite(value: np.ndarray) -> bool:
    if np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.complexfloating):
        flat = value.reshape(-1)
        return all(
            bool(np.isfinite(flat[i : i + _FINITE_CHUNK]).all())
            for i in range(0, flat.size, _FINITE_CHUNK)
        )
    return True


def _scalar_finding(var: _Var, value: np.ndarray, finite: bool, at_init: bool) -> ScalarFinding:
    item = value.reshape(()).item()
    status = _status(var, finite, at_init)
    return ScalarFinding(
        name=var.name,
        value=item,
        shape=tuple(int(d) for d in value.shape),
        dtype=var.variable.dtype.name,
        tracked=var.tracked,
        trainable=var.trainable,
        used_by_inference=var.used,
        finite=finite,
        unchanged_since_init=at_init if var.initial is not None else None,
        initial_value=var.initial.scalar if var.initial is not None else None,
        status=status,
        variable=var.variable,
    )


def _scale_finding(
    var: _Var, value: np.ndarray, finite: bool, at_init: bool, group: str
) -> ScaleVectorFinding:
    return ScaleVectorFinding(
        name=var.name,
        group=group or var.name.rsplit("/", 1)[-1],
        shape=tuple(int(d) for d in value.shape),
        dtype=var.variable.dtype.name,
        min=value.min().item(),
        max=value.max().item(),
        tracked=var.tracked,
        trainable=var.trainable,
        used_by_inference=var.used,
        finite=finite,
        unchanged_since_init=at_init if var.initial is not None else None,
        initial_value=var.initial.fill if var.initial is not None else None,
        status=_status(var, finite, at_init),
        variable=var.variable,
    )


def _status(var: _Var, finite: bool, unchanged: bool | None) -> str:
    applies = {
        "non-finite": not finite,
        "untracked": not var.tracked,
        "unchanged": var.trainable and bool(unchanged),
        "not-used": not var.used,
        "non-trainable": not var.trainable,
    }
    return next((s for s in STATUSES if applies.get(s, True)), "ok")


def _variable_findings(
    var: _Var, value: np.ndarray, finite: bool, scalar: ScalarFinding | None
) -> list[Finding]:
    """The checks every variable gets, scalar or not: non-finite values and untracked capture."""
    out: list[Finding] = []
    name = var.name
    if not finite:
        message = (
            f"{name!r} is {scalar.value}: training diverged or the weights are corrupt. "
            "Exporting would bake it into every prediction; retrain or reload the weights."
            if scalar is not None
            else f"{name!r} (shape {list(value.shape)}) holds NaN or Inf values: "
            "training diverged or the weights file is corrupt; retrain or reload."
        )
        out.append(Finding("error", name, "non_finite", message))
    if not var.tracked:
        out.append(
            Finding("error", name, "untracked_captured", _untracked_message(var, scalar))
            if var.used
            else Finding("warning", name, "untracked_loss_variable", _loss_message(var))
        )
    return out


def _scalar_findings(var: _Var, scalar: ScalarFinding) -> list[Finding]:
    """The scalar-only checks: trainable but never moved, or a weight inference never reads."""
    out: list[Finding] = []
    name = var.name
    if var.trainable and scalar.unchanged_since_init:
        out.append(
            Finding(
                "warning",
                name,
                "unchanged_since_init",
                f"{name!r} is trainable but still equals its initial value "
                f"{scalar.initial_value:g}: it has not trained (not fitted yet, zero gradient, "
                "or a learning rate too small to move it).",
            )
        )
    if var.tracked and not var.used:
        out.append(
            Finding(
                "info",
                name,
                "not_used_by_inference",
                f"{name!r} is a model weight the inference function never reads (a loss-only "
                "scalar such as LossWeighting's log variance): it is not part of the export.",
            )
        )
    return out


def _unchanged_tensors_finding(names: list[str]) -> list[Finding]:
    """One warning for all trainable tensors (not scalars) still at their initial values."""
    if not names:
        return []
    shown = ", ".join(repr(n) for n in names[:5])
    if len(names) > 5:
        shown += f" and {len(names) - 5} more"
    return [
        Finding(
            "warning",
            names[0] if len(names) == 1 else f"{len(names)} weights",
            "unchanged_since_init",
            f"Trainable weights still holding exactly their initial values ({len(names)}: "
            f"{shown}): they have not trained (not fitted yet, zero gradient, or a learning "
            "rate too small to move them).",
        )
    ]


def _untracked_message(var: _Var, scalar: ScalarFinding | None) -> str:
    where = f" ({var.owner})" if var.owner else ""
    declared = " although it was created with trainable=True" if var.variable.trainable else ""
    value = ""
    if scalar is not None:
        value = f" Its value is {scalar.value:g}"
        if scalar.unchanged_since_init:
            value += f", still its initial value {scalar.initial_value:g}"
        value += ", and export would freeze exactly that."
    return (
        f"Variable {var.name!r}{where} is captured by the inference function but is not "
        f"one of the model's weights: the optimizer never sees it, so it never trains"
        f"{declared}.{value} {_FIX}"
    )


def _loss_message(var: _Var) -> str:
    return (
        f"Variable {var.name!r} ({var.owner}) weights the training loss but is not one of "
        "the model's weights: the optimizer never sees it, so it never trained (and a bare "
        "multiplicative loss weight that did train would be driven to zero). Inference does "
        "not read it, so the export is unaffected. Fix: `exporter.model.layers.LossWeighting` "
        "(Σ exp(-s_i)·L_i + s_i): `model.compile(loss=LossWeighting(n).attach(model, "
        "losses))`."
    )
