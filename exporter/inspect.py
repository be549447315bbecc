"""Inspect any SavedModel or ONNX file (ours or another tool's): is it frozen, what does it hold?

A SavedModel is *frozen* when no op can change a weight at serving time and the weights are
constants: either no variable is left at all, or the only ones are large tensors kept as
read-only variables by design (the exporter's layout past --max-frozen-bytes: top-level
reads only, no op but the saver's restore writes them). The headline sentence for that case
is the export summary's own (`exporter.formatting.read_only_story`), so both tell one story.
Anything else holding variables (a Keras `model.export()`, a TF1 graph) is not frozen.
Variables are counted once each: a TF2 SavedModel's checkpoint may save one weight under two
object paths (Keras 3 `model.export()` writes `variables/N` and `_all_variables/N`); only
those the concrete functions capture are the model's. An ONNX model has no variables, but an
initializer that is also a graph input can be overridden at run time, so it is not frozen.

One job at ~400 lines: reading an artifact back (SavedModel: variables, writers, scalars,
signatures, tables; ONNX: initializers, inputs, tables) into one `Inspection`, for any tool's
files, never loading an ONNX model's external data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2

from exporter.errors import UsageError
from exporter.formatting import format_bytes, plural, read_only_story, signature_rows
from exporter.freeze.frozen_graph import (
    STATE_UPDATE_OPS,
    STATE_UPDATE_PREFIXES,
    VARIABLE_OPS,
    find_ops,
)
from exporter.freeze.lift import MIN_LIFT_ELEMENTS
from exporter.freeze.tables import describe_tables

_FLOAT_TYPES = {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF}
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclass
class Inspection:
    """What an artifact holds; `frozen` and `story` are the headline."""

    path: str
    format: str
    frozen: bool
    story: str = ""  # one sentence: why it is frozen or not
    variable_ops: list[str] = field(default_factory=list)
    writers: list[str] = field(default_factory=list)  # ops that can write a variable at serving
    variables: list[dict[str, Any]] = field(default_factory=list)
    scalars: list[dict[str, Any]] = field(default_factory=list)
    signatures: dict[str, Any] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"{self.path} ({self.format}): {self.story}"]
        for key, sig in self.signatures.items():
            method = f" ({sig['method_name']})" if sig.get("method_name") else ""
            lines.append(f"  signature {key}{method}:")
            lines += [f"    {row}" for row in signature_rows(sig)]
        lines.append(
            f"  variable ops: {len(self.variable_ops)}"
            + (f", {len(self.writers)} of them can write a variable" if self.writers else "")
        )
        if self.variables:
            total = format_bytes(sum(v["bytes"] for v in self.variables))
            lines.append(f"  variables ({len(self.variables)}, {total}):")
            lines += [
                f"    {v['name']}  shape={v['shape']}  dtype={v['dtype']}  "
                f"{format_bytes(v['bytes'])}"
                + (f"  value={v['value']:.6g}" if isinstance(v.get("value"), float) else "")
                for v in self.variables
            ]
        if self.scalars:
            lines.append(f"  scalar constants ({len(self.scalars)}):")
            lines += [f"    {s['name']} = {s['value']:.6g}" for s in self.scalars]
        if self.tables:
            lines.append(f"  lookup tables ({len(self.tables)}):")
            lines += [
                f"    {t['table']}  {t['key_dtype']} -> {t['value_dtype']}  "
                f"size={t['size'] if t['size'] is not None else '?'}  "
                f"contents={t['contents'] or 'NOT INITIALISED'}"
                + (f"  init_op={t['initialised_by']}" if "initialised_by" in t else "")
                for t in self.tables
            ]
        return "\n".join(lines)


def _scalar_value(array: np.ndarray) -> float | None:
    return float(array.reshape(())) if array.size == 1 and array.dtype.kind == "f" else None


def _checkpoint_keys(reader: Any, meta: Any) -> list[tuple[str, str]]:
    """(name, checkpoint key) of each variable once: in a TF2 SavedModel the variables its
    functions capture (the object graph and the checkpoint share node ids), else every key."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    nodes = meta.object_graph_def.nodes
    variable_ids = [i for i, n in enumerate(nodes) if n.WhichOneof("kind") == "variable"]
    keys = sorted(k for k in reader.get_variable_to_shape_map() if k != _OBJECT_GRAPH_KEY)
    if not variable_ids or not reader.has_tensor(_OBJECT_GRAPH_KEY):
        return [(key, key) for key in keys]
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
    bound = {i for f in meta.object_graph_def.concrete_functions.values() for i in f.bound_inputs}
    chosen = [i for i in variable_ids if i in bound] or variable_ids
    return [
        (nodes[i].variable.name or a.checkpoint_key, a.checkpoint_key)
        for i in chosen
        if i < len(graph.nodes)
        for a in graph.nodes[i].attributes
        if a.name == "VARIABLE_VALUE"
    ]


def _checkpoint_variables(export_dir: Path, meta: Any) -> list[dict[str, Any]]:
    import tensorflow as tf

    prefix = export_dir / "variables" / "variables"
    if not Path(f"{prefix}.index").exists():
        return []
    reader = tf.train.load_checkpoint(str(prefix))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    variables = []
    for name, key in _checkpoint_keys(reader, meta):
        shape, dtype = shapes[key], dtypes[key]
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(shape),
            "dtype": dtype.name,
            "bytes": int(np.prod(shape)) * dtype.size,
        }
        if int(np.prod(shape)) == 1:  # read values of scalars only: never the large weights
            scalar = _scalar_value(np.asarray(reader.get_tensor(key)))
            if scalar is not None:
                entry["value"] = scalar
        variables.append(entry)
    return variables


def _called(node: Any) -> list[str]:
    """Functions a node calls (PartitionedCall's `f`, While's `body`, ...)."""
    return [a.func.name for a in node.attr.values() if a.HasField("func")]


def _runs(graph_def: Any, roots: list[str]) -> tuple[set[str], set[str]]:
    """(top-level nodes, library functions) that running `roots` can execute."""
    by_name = {n.name: n for n in graph_def.node}
    library = {f.signature.name: f for f in graph_def.library.function}
    nodes: set[str] = set()
    functions: set[str] = set()
    stack = [r.lstrip("^").split(":")[0] for r in roots]
    calls: list[str] = []
    while stack:
        name = stack.pop()
        if name in nodes or name not in by_name:
            continue
        nodes.add(name)
        stack.extend(i.lstrip("^").split(":")[0] for i in by_name[name].input)
        calls.extend(_called(by_name[name]))
    while calls:
        name = calls.pop()
        if name not in functions and name in library:
            functions.add(name)
            calls.extend(f for n in library[name].node_def for f in _called(n))
    return nodes, functions


def _writers(meta: Any) -> list[str]:
    """Ops a signature can run that write a variable (the loader's restore is not one)."""
    roots = [t.name for sig in meta.signature_def.values() for t in sig.outputs.values()]
    nodes, functions = _runs(meta.graph_def, roots)
    found = []
    for where, name in (
        entry.rsplit(" (", 1)[0].split(": ", 1)
        for entry in find_ops(meta.graph_def, STATE_UPDATE_OPS, STATE_UPDATE_PREFIXES)
    ):
        if (where == "graph" and name in nodes) or where.removeprefix("function ") in functions:
            found.append(f"{where}: {name}")
    return found


def _serving_first(item: tuple[str, Any]) -> tuple[bool, str]:
    return item[0] != "serving_default", item[0]


def _tensor_specs(infos: Any) -> dict[str, dict[str, Any]]:
    import tensorflow as tf

    return {
        name: {
            "dtype": tf.dtypes.as_dtype(info.dtype).name if info.dtype else None,
            "shape": None
            if info.tensor_shape.unknown_rank
            else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim],
        }
        for name, info in sorted(infos.items())
    }


def _story(variables: list[dict[str, Any]], variable_ops: list[str], writers: list[str]) -> str:
    if not variables and not variable_ops:
        return "frozen: no variables, every weight is a constant"
    in_library = [op for op in variable_ops if not op.startswith("graph: ")]
    kept_by_design = (
        variables
        and not writers
        and not in_library
        and all(int(np.prod(v["shape"])) >= MIN_LIFT_ELEMENTS for v in variables)
    )
    if kept_by_design:
        return "frozen: " + read_only_story([(v["name"], v["bytes"]) for v in variables])
    count = len(variables) or len(variable_ops)
    scalars = sum(1 for v in variables if int(np.prod(v["shape"])) == 1)
    why = (
        f"{len(writers)} ops can write them at serving time (first: {writers[0]})"
        if writers
        else "they are read from variables/ at serving time, not constants"
    )
    return f"not frozen: {plural(count, 'variable')} ({plural(scalars, 'scalar')}); {why}"


def inspect_savedmodel(export_dir: Path) -> Inspection:
    """Frozen-ness, variables, signatures and scalar constants of a SavedModel directory."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    pb = export_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(pb.read_bytes())
    except OSError as exc:
        raise UsageError(f"Cannot read {pb}: {exc.strerror}. Check its permissions.") from exc
    except (DecodeError, ValueError) as exc:
        raise UsageError(
            f"{pb} is corrupt or truncated (not a SavedModel protobuf: {exc}). "
            "Export or copy the model again."
        ) from exc
    if not saved_model.meta_graphs:
        raise UsageError(
            f"{pb} holds no MetaGraph: it is empty, truncated or not a SavedModel. "
            "Export or copy the model again."
        )
    variable_ops, writers, scalars, signatures, tables = [], [], [], {}, []
    for meta in saved_model.meta_graphs:
        variable_ops += find_ops(meta.graph_def, VARIABLE_OPS)
        writers += _writers(meta)
        tables += describe_tables(meta)
        for node in meta.graph_def.node:
            if node.op == "Const" and node.attr["dtype"].type in _FLOAT_TYPES:
                value = _scalar_value(tf.make_ndarray(node.attr["value"].tensor))
                if value is not None:
                    scalars.append({"name": node.name, "value": value})
        for key, sig in sorted(meta.signature_def.items(), key=_serving_first):
            signatures[key] = {
                "inputs": _tensor_specs(sig.inputs),
                "outputs": _tensor_specs(sig.outputs),
                "method_name": sig.method_name,
            }
    variables = _checkpoint_variables(export_dir, saved_model.meta_graphs[0])
    story = _story(variables, variable_ops, writers)
    return Inspection(
        path=str(export_dir),
        format="savedmodel",
        frozen=story.startswith("frozen"),
        story=story,
        variable_ops=variable_ops,
        writers=writers,
        variables=variables,
        scalars=scalars,
        signatures=signatures,
        tables=tables,
    )


_ONNX_LOOKUPS = {"CategoryMapper": "cats_strings", "LabelEncoder": None}


def _onnx_tables(model: Any) -> list[dict[str, Any]]:
    """ONNX-ML lookups (CategoryMapper, LabelEncoder): their vocabulary is in the file."""
    import onnx

    from exporter.onnx_format.tables import EQUALS_CONSTANT

    tables = []
    for node in model.graph.node:
        if node.domain != "ai.onnx.ml" or node.op_type not in _ONNX_LOOKUPS:
            continue
        if any(o.endswith(EQUALS_CONSTANT) for o in node.output):  # `x == "c"`, not a table
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        keys = next(
            (
                k
                for k in ("cats_strings", "keys_strings", "keys_int64s", "keys_floats")
                if k in attrs
            ),
            None,
        )
        kinds = {"strings": "string", "int64s": "int64", "floats": "float32"}
        values = next((k for k in attrs if k.startswith(("values_", "cats_int64s"))), None)
        tables.append(
            {
                "table": node.name,
                "op": node.op_type,
                "key_dtype": kinds.get(keys.split("_")[-1]) if keys else None,
                "value_dtype": "int64"
                if values == "cats_int64s"
                else kinds.get(values.split("_")[-1])
                if values
                else None,
                "size": len(attrs[keys]) if keys else None,
                "contents": "node attributes (in the file)",
            }
        )
    return tables


def _onnx_specs(values: Any) -> dict[str, dict[str, Any]]:
    """Graph inputs/outputs as {name: {dtype, shape}} (symbolic or missing dims: None)."""
    import onnx

    specs = {}
    for value in values:
        tensor = value.type.tensor_type
        dtype = (
            str(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
            if tensor.elem_type
            else None
        )
        if dtype == "object":
            dtype = "string"
        shape = (
            [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if tensor.HasField("shape")
            else None
        )
        specs[value.name] = {"dtype": dtype, "shape": shape}
    return specs


def inspect_onnx(path: Path) -> Inspection:
    """Inputs, outputs and scalar initializers of an ONNX file.

    External data (`model.onnx.data`, a model past 2 GiB) is not loaded: only the one-element
    initializers inspect reports are read from it, each by its own offset."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path))  # by path: works past 2 GiB (external data)
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}. Check its permissions.") from exc
    except (DecodeError, ValueError, onnx.checker.ValidationError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(
            f"{path} is corrupt, truncated or not an ONNX model ({reason}). "
            "Export or copy it again."
        ) from exc
    initializer_names = {i.name for i in model.graph.initializer}
    overridable = [i.name for i in model.graph.input if i.name in initializer_names]
    scalars = []
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) == 1:
            value = _scalar_value(numpy_helper.to_array(init, base_dir=str(path.parent)))
            if value is not None:
                scalars.append({"name": init.name, "value": value})
    inputs = [i for i in model.graph.input if i.name not in initializer_names]
    return Inspection(
        path=str(path),
        format="onnx",
        frozen=not overridable,
        story=(
            f"not frozen: {len(overridable)} initializers are also graph inputs, so a caller "
            f"can override them (first: {overridable[0]})"
            if overridable
            else "frozen: every weight is an initializer no caller can override"
        ),
        variable_ops=[f"graph input {n} is an initializer (overridable)" for n in overridable],
        scalars=scalars,
        signatures={
            "graph": {
                "inputs": _onnx_specs(inputs),
                "outputs": _onnx_specs(model.graph.output),
                "opset": [f"{o.domain or 'ai.onnx'}:{o.version}" for o in model.opset_import],
            }
        },
        tables=_onnx_tables(model),
    )


def inspect_artifact(path: str | Path) -> Inspection:
    """Dispatch on what `path` is: a SavedModel directory or an `.onnx` file."""
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return inspect_savedmodel(path)
    if path.is_file() and path.suffix == ".onnx":
        return inspect_onnx(path)
    if path.is_dir() and (path / "model.onnx").is_file():
        return inspect_onnx(path / "model.onnx")
    raise UsageError(
        f"{path} is neither a SavedModel directory (with saved_model.pb) nor an .onnx file."
    )
