"""Trace a Keras model into one `tf.function` whose signature comes from the model.

The traced function takes one keyword argument per model input (named after the input,
batch dimension dynamic) and returns a dict keyed by the model's output names: the same
names end up as SavedModel signature keys and ONNX tensor names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from exporter import tf_internals
from exporter.errors import TraceError
from exporter.model.tables import CapturedTable, captured_tables

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.\-/]")


@dataclass(frozen=True)
class TracedModel:
    """A concrete function plus the names that define its public signature."""

    function: Any  # tf ConcreteFunction; inputs positional in `input_specs` order
    input_specs: dict[str, tf.TensorSpec]
    output_names: list[str]
    structured_output_keys: list[str]  # flat order of `function.outputs`
    tables: dict[str, CapturedTable] = field(default_factory=dict)  # capture op -> table
    layer_names: tuple[str, ...] = ()  # every layer, to name the one that made a graph op
    #: The Python function `function` traces (same positional inputs): run eagerly, it gives
    #: the model's float32 answer op by op, without Grappler (`exporter.verify.parity`).
    eager: Any = None

    def signature_dict(self) -> dict[str, Any]:
        """JSON-friendly view of the signature, for reports."""
        return {
            "inputs": {n: _spec_dict(s) for n, s in self.input_specs.items()},
            "outputs": {
                n: _spec_dict(self.function.structured_outputs[n]) for n in self.output_names
            },
        }


def tf_variable_of(obj: Any) -> tf.Variable | None:
    """The tf.Variable of a tf_keras weight or a Keras 3 Variable (its `.value`), else None."""
    if isinstance(obj, tf.Variable):
        return obj
    if not type(obj).__module__.startswith("keras"):
        return None
    inner = getattr(obj, "value", None)
    return inner if isinstance(inner, tf.Variable) else None


def captured_variables(function: Any) -> dict[str, tf.Variable]:
    """Capture placeholder op name -> the tf.Variable behind it, for a concrete function."""
    by_handle = {id(v.handle): v for v in function.variables}
    return {
        internal.op.name: by_handle[id(external)]
        for external, internal in function.graph.captures
        if id(external) in by_handle
    }


def _spec_dict(t: Any) -> dict[str, Any]:
    shape = t.shape
    dims = None if shape.rank is None else [d for d in shape.as_list()]
    return {"dtype": t.dtype.name, "shape": dims}


def _sanitize(name: str) -> str:
    name = name.split(":")[0]
    return _SAFE_NAME.sub("_", name) or "input"


def _dynamic_batch(shape: Sequence[int | None]) -> list[int | None]:
    dims = list(shape)
    if dims:
        dims[0] = None
    return dims


def _is_legacy(model: Any) -> bool:
    # The MRO, not the class's own module: user subclasses live in their own modules.
    return any(cls.__module__.startswith("tf_keras") for cls in type(model).__mro__)


def _keras3_input_structure(model: Any) -> Any:
    """Input structure (nested specs) as Keras' own exporter infers it."""
    struct = tf_internals.keras_inputs_struct(model)
    if struct is not None:
        return struct
    try:
        signature = tf_internals.keras_input_signature(model)
    except ValueError as exc:
        raise TraceError(
            f"Cannot infer an input signature from model {model.name!r}: {exc} "
            "Call the model once on real data, or pass input_signature={name: tf.TensorSpec}."
        ) from exc
    # Functional models take one positional argument holding the whole structure.
    return signature[0] if len(signature) == 1 else list(signature)


def _legacy_input_structure(model: Any) -> Any:
    # KerasTensors refuse truth tests (`or` raises TypeError): compare with None.
    inputs = getattr(model, "_nested_inputs", None)
    if inputs is None:
        inputs = model.inputs
    if inputs is None and model.save_spec() is not None:
        # Subclassed models: the specs recorded when the model was first called.
        args, _kwargs = model.save_spec(dynamic_batch=True)
        inputs = args[0] if len(args) == 1 else list(args)
    if inputs is None:
        raise TraceError(
            f"tf_keras model {model.name!r} has no inputs yet. Build it with an "
            "input_shape or pass input_signature={name: tf.TensorSpec}."
        )
    return inputs


def _input_layer_name(node: Any) -> str | None:
    """The InputLayer's name (`keras.Input(name=...)`), not the anonymous tensor's."""
    history = getattr(node, "_keras_history", None)
    operation = getattr(history, "operation", None) or getattr(history, "layer", None)
    return getattr(operation, "name", None) or getattr(node, "name", None)


def input_signature_from_model(model: Any) -> tuple[dict[str, tf.TensorSpec], Any]:
    """Named `TensorSpec`s for every model input, plus the structure `model()` expects.

    The structure is returned as a tree of input names (a str, list or dict), so the
    traced function can rebuild exactly what the model's `call` wants.
    """
    structure = (
        _legacy_input_structure(model) if _is_legacy(model) else _keras3_input_structure(model)
    )
    specs: dict[str, tf.TensorSpec] = {}

    def visit(node: Any, key_hint: str | None) -> Any:
        if isinstance(node, Mapping):
            return {k: visit(v, str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [visit(v, None) for v in node]
        raw_name = key_hint or _input_layer_name(node) or f"input_{len(specs)}"
        name = _sanitize(raw_name)
        if name in specs:
            name = f"{name}_{len(specs)}"
        dtype = tf.as_dtype(getattr(node, "dtype", None) or "float32")
        shape = getattr(node, "shape", None)
        specs[name] = tf.TensorSpec(_dynamic_batch(list(shape)), dtype, name=name)
        return name

    tree = visit(structure, None)
    return specs, tree


def _rebuild(tree: Any, tensors: Mapping[str, tf.Tensor]) -> Any:
    if isinstance(tree, Mapping):
        return {k: _rebuild(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rebuild(v, tensors) for v in tree]
    return tensors[tree]


def _name_outputs(model: Any, result: Any) -> dict[str, tf.Tensor]:
    if isinstance(result, Mapping):
        return {_sanitize(str(k)): v for k, v in result.items()}
    flat = tf.nest.flatten(result)
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(flat):
        names = ["output_0"] if len(flat) == 1 else [f"output_{i}" for i in range(len(flat))]
    return {_sanitize(n): t for n, t in zip(names, flat, strict=True)}


def trace_model(
    model: Any,
    input_signature: Mapping[str, tf.TensorSpec] | None = None,
) -> TracedModel:
    """Trace `model` (inference mode) into a concrete function with named I/O.

    `input_signature` overrides the inferred one: a mapping of input name to spec, passed
    to the model as a dict when it has several entries and as a single tensor otherwise.
    """
    if input_signature is not None:
        specs = {
            name: tf.TensorSpec(spec.shape, spec.dtype, name=name)
            for name, spec in input_signature.items()
        }
        tree: Any = next(iter(specs)) if len(specs) == 1 else {n: n for n in specs}
    else:
        specs, tree = input_signature_from_model(model)

    names = list(specs)

    def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        structured = _rebuild(tree, dict(zip(names, args, strict=True)))
        return _name_outputs(model, model(structured, training=False))

    fn = tf.function(serve, input_signature=list(specs.values()), autograph=True)
    try:
        concrete = fn.get_concrete_function()
    except (TypeError, ValueError) as exc:
        raise TraceError(
            f"Tracing model {getattr(model, 'name', model)!r} with inputs "
            f"{ {n: (s.shape.as_list(), s.dtype.name) for n, s in specs.items()} } failed: "
            f"{exc}. Pass input_signature= matching what the model's call() expects."
        ) from exc
    outputs = concrete.structured_outputs
    flat_keys = sorted(outputs)  # tf.nest flattens dicts in sorted-key order
    return TracedModel(
        function=concrete,
        input_specs=specs,
        output_names=list(outputs),
        structured_output_keys=flat_keys,
        tables=captured_tables(model, concrete),
        layer_names=tuple(
            layer.name for layer in tf_internals.flatten_layers(model, include_self=False)
        ),
        eager=serve,
    )
