"""Inspect any SavedModel or ONNX file (ours or another tool's): is it frozen, what does it hold?

A SavedModel is frozen when no meta graph (nor its function library) holds a variable op and
`variables/` holds no values; its scalars are then scalar float `Const` nodes. An ONNX model
has no variables, but an initializer that is also a graph input can be overridden at run
time, so it does not count as frozen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from exporter.errors import UsageError
from exporter.freeze.frozen_graph import VARIABLE_OPS, find_ops
from exporter.freeze.tables import describe_tables

_FLOAT_TYPES = {1, 2, 19}  # DT_FLOAT, DT_DOUBLE, DT_HALF


@dataclass
class Inspection:
    """What an artifact holds; `frozen` is the headline."""

    path: str
    format: str
    frozen: bool
    variable_ops: list[str] = field(default_factory=list)
    variables: list[dict[str, Any]] = field(default_factory=list)
    scalars: list[dict[str, Any]] = field(default_factory=list)
    signatures: dict[str, Any] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [
            f"{self.path} ({self.format}): {'frozen' if self.frozen else 'not frozen'}",
            f"  signatures: {', '.join(self.signatures) or '-'}",
            f"  variable ops: {len(self.variable_ops)}",
        ]
        if self.variables:
            lines.append(f"  variables ({len(self.variables)}):")
            lines += [
                f"    {v['name']}  shape={v['shape']}  dtype={v['dtype']}"
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


def _checkpoint_variables(export_dir: Path) -> list[dict[str, Any]]:
    import tensorflow as tf

    prefix = export_dir / "variables" / "variables"
    if not Path(f"{prefix}.index").exists():
        return []
    reader = tf.train.load_checkpoint(str(prefix))
    variables = []
    dtypes = reader.get_variable_to_dtype_map()
    for name, shape in sorted(reader.get_variable_to_shape_map().items()):
        if name == "_CHECKPOINTABLE_OBJECT_GRAPH":
            continue
        entry: dict[str, Any] = {"name": name, "shape": list(shape), "dtype": dtypes[name].name}
        if int(np.prod(shape)) == 1:  # read values of scalars only: never the large weights
            scalar = _scalar_value(np.asarray(reader.get_tensor(name)))
            if scalar is not None:
                entry["value"] = scalar
        variables.append(entry)
    return variables


def inspect_savedmodel(export_dir: Path) -> Inspection:
    """Frozen-ness, variables and scalar constants of a SavedModel directory."""
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
    variable_ops, scalars, signatures, tables = [], [], {}, []
    for meta in saved_model.meta_graphs:
        variable_ops += find_ops(meta.graph_def, VARIABLE_OPS)
        tables += describe_tables(meta)
        for node in meta.graph_def.node:
            if node.op == "Const" and node.attr["dtype"].type in _FLOAT_TYPES:
                value = _scalar_value(tf.make_ndarray(node.attr["value"].tensor))
                if value is not None:
                    scalars.append({"name": node.name, "value": value})
        for key, sig in meta.signature_def.items():
            signatures[key] = {
                "inputs": sorted(sig.inputs),
                "outputs": sorted(sig.outputs),
                "method_name": sig.method_name,
            }
    variables = _checkpoint_variables(export_dir)
    return Inspection(
        path=str(export_dir),
        format="savedmodel",
        frozen=not variable_ops and not variables,
        variable_ops=variable_ops,
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


def inspect_onnx(path: Path) -> Inspection:
    """Inputs, outputs and scalar initializers of an ONNX file."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
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
    return Inspection(
        path=str(path),
        format="onnx",
        frozen=not overridable,
        variable_ops=[f"graph input {n} is an initializer (overridable)" for n in overridable],
        scalars=scalars,
        signatures={
            "graph": {
                "inputs": [i.name for i in model.graph.input if i.name not in initializer_names],
                "outputs": [o.name for o in model.graph.output],
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
