"""Freeze lookup tables: a captured table handle becomes a `HashTableV2` the graph initialises.

A traced Keras model reads its `StringLookup`/`IntegerLookup`/`TextVectorization` vocabulary
through a captured table handle, which freezing leaves as a dangling resource `Placeholder`.
Here each such handle becomes a `HashTableV2` node plus an `InitializeTableV2` fed from
constants (or `InitializeTableFromTextFileV2` reading the vocabulary from the SavedModel's
`assets/`, when the table came from a file), all grouped under one `NoOp` that the SavedModel
declares as its `main_op`: the op TF Serving's loader (`GetInitOp`/`RunInitOp` in
tensorflow/cc/saved_model/loader.cc) runs once after restore, feeding asset paths. Mutable
tables are refused, like variable updates: their contents are state, not a constant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from exporter import tf_internals
from exporter.errors import FreezeError
from exporter.model.tables import CapturedTable

#: The NoOp that initialises every frozen table; the SavedModel's `main_op`.
INIT_OP_NAME = "frozen_tables_init"

#: Ops that create a table whose contents can change while serving.
MUTABLE_TABLE_OPS = frozenset(
    {"MutableHashTableV2", "MutableHashTableOfTensorsV2", "MutableDenseHashTableV2"}
)
#: Ops that write into a table at inference: the write would be lost in any frozen artifact.
TABLE_WRITE_OPS = frozenset({"LookupTableInsertV2", "LookupTableRemoveV2", "LookupTableImportV2"})


@dataclass(frozen=True)
class FrozenTable:
    """One table of the frozen graph: its node, dtypes, contents and where they live."""

    node_name: str  # the HashTableV2 node (shared_name is the same string)
    layer: str
    key_dtype: str
    value_dtype: str
    keys: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    source: str  # "constants" or "assets/<file>"
    asset_path: str | None = None  # the file copied into assets/ (source "assets/...")
    text_file: dict[str, Any] | None = field(default=None, repr=False)  # its parse parameters

    def proof(self) -> dict[str, Any]:
        """JSON-friendly summary for the freeze proof."""
        return {
            "table": self.node_name,
            "layer": self.layer,
            "key_dtype": self.key_dtype,
            "value_dtype": self.value_dtype,
            "size": int(self.keys.size),
            "contents": self.source,
            "initialised_by": INIT_OP_NAME,
        }


def refuse_table_writes(ops_found: list[str]) -> None:
    """Raise FreezeError if the inference graph creates a mutable table or writes a table."""
    if ops_found:
        raise FreezeError(
            f"The inference graph holds a mutable lookup table ({ops_found[0]}): its contents are "
            "state that a frozen artifact cannot keep. Use a static table "
            "(tf.lookup.StaticHashTable, or StringLookup/IntegerLookup with a fixed vocabulary)."
        )


def _lookup_dtypes(graph_def: Any, placeholder: str) -> tuple[tf.DType, tf.DType] | None:
    """(key, value) dtypes from the first LookupTableFindV2 that reads `placeholder`."""
    for node in graph_def.node:
        if node.op == "LookupTableFindV2" and node.input[0].split(":")[0] == placeholder:
            return tf.as_dtype(node.attr["Tin"].type), tf.as_dtype(node.attr["Tout"].type)
    return None


def _const(graph_def: Any, name: str, value: np.ndarray, dtype: tf.DType) -> None:
    node = graph_def.node.add(name=name, op="Const")
    node.attr["dtype"].type = dtype.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=dtype))


def _add_initializer(graph_def: Any, table: FrozenTable, key: tf.DType, value: tf.DType) -> str:
    """Add the init op of one table (from constants or from its asset file); return its name."""
    init = graph_def.node.add(name=f"{table.node_name}/init")
    init.input.append(table.node_name)
    if table.asset_path is None:
        _const(graph_def, f"{table.node_name}/keys", table.keys, key)
        _const(graph_def, f"{table.node_name}/values", table.values, value)
        init.op = "InitializeTableV2"
        init.input.extend([f"{table.node_name}/keys", f"{table.node_name}/values"])
        init.attr["Tkey"].type = key.as_datatype_enum
        init.attr["Tval"].type = value.as_datatype_enum
        return init.name
    initializer = table.text_file or {}
    _const(graph_def, f"{table.node_name}/asset_path", np.array(table.asset_path), tf.string)
    init.op = "InitializeTableFromTextFileV2"
    init.input.append(f"{table.node_name}/asset_path")
    init.attr["key_index"].i = initializer["key_index"]
    init.attr["value_index"].i = initializer["value_index"]
    init.attr["vocab_size"].i = initializer["vocab_size"]
    init.attr["delimiter"].s = initializer["delimiter"].encode()
    init.attr["offset"].i = initializer["offset"]
    return init.name


def _text_file_params(captured: CapturedTable) -> dict[str, Any]:
    params = tf_internals.text_file_initializer(captured.table) or {}
    return {k: v for k, v in params.items() if k != "filename"}


def freeze_tables(
    graph_def: Any, captured: dict[str, CapturedTable], placeholders: Iterable[str]
) -> list[FrozenTable]:
    """Turn each table placeholder of `graph_def` into an initialised `HashTableV2`, in place.

    `placeholders` are the resource Placeholders left by freezing; any that is not a table
    the model owns is refused (nothing could initialise it). Returns the frozen tables.
    """
    nodes = {n.name: n for n in graph_def.node}
    tables, init_ops = [], []
    for name in placeholders:
        owner = captured.get(name)
        dtypes = _lookup_dtypes(graph_def, name)
        if owner is None or dtypes is None:
            raise FreezeError(
                f"The frozen graph still reads the resource {name!r}, which is neither a variable "
                "nor a lookup table held by a layer: nothing could initialise it at serving time. "
                "Keep tables and other resources as attributes of the model's layers."
            )
        if owner.mutable:
            refuse_table_writes([f"{name} ({type(owner.table).__name__} of layer {owner.layer})"])
        key_dtype, value_dtype = dtypes
        keys, values = (t.numpy() for t in owner.table.export())
        order = np.argsort(keys, kind="stable")  # export order is hash order: make it stable
        vocabulary_file = owner.vocabulary_file
        table = FrozenTable(
            node_name=name,
            layer=owner.layer,
            key_dtype=key_dtype.name,
            value_dtype=value_dtype.name,
            keys=keys[order],
            values=values[order],
            source=f"assets/{Path(vocabulary_file).name}" if vocabulary_file else "constants",
            asset_path=vocabulary_file,
            text_file=_text_file_params(owner) if vocabulary_file else None,
        )
        node = nodes[name]
        node.op = "HashTableV2"
        node.ClearField("attr")
        node.attr["shared_name"].s = name.encode()
        node.attr["key_dtype"].type = key_dtype.as_datatype_enum
        node.attr["value_dtype"].type = value_dtype.as_datatype_enum
        init_ops.append(_add_initializer(graph_def, table, key_dtype, value_dtype))
        tables.append(table)
    if tables:
        group = graph_def.node.add(name=INIT_OP_NAME, op="NoOp")
        group.input.extend(f"^{op}" for op in init_ops)
    return tables


def init_node_names(graph_def: Any) -> set[str]:
    """Nodes that only initialise tables: dropped before ONNX conversion (ONNX has no init)."""
    names = {INIT_OP_NAME}
    for node in graph_def.node:
        if node.op in ("InitializeTableV2", "InitializeTableFromTextFileV2"):
            names.add(node.name)
            names.update(i.split(":")[0] for i in node.input[1:])
    return names


def _producer(nodes: dict[str, Any], ref: str) -> Any:
    return nodes.get(ref.lstrip("^").split(":")[0])


def input_vocabularies(graph_def: Any, inputs: dict[str, str]) -> dict[str, np.ndarray]:
    """Input name -> the keys of the table its values are looked up in (constant tables only).

    Follows each lookup's key operand up its first inputs (casts, reshapes, lowercasing,
    splitting) to a signature input, so random parity inputs can hit the vocabulary. Works on
    the frozen graph and on a written SavedModel's graph alike.
    """
    nodes = {n.name: n for n in graph_def.node}
    keys_of = {}
    for node in graph_def.node:
        if node.op == "InitializeTableV2":
            keys_of[node.input[0].split(":")[0]] = tf.make_ndarray(
                _producer(nodes, node.input[1]).attr["value"].tensor
            )
    by_placeholder = {t.split(":")[0]: name for name, t in inputs.items()}
    found: dict[str, np.ndarray] = {}
    for node in graph_def.node:
        if node.op != "LookupTableFindV2":
            continue
        table = _producer(nodes, node.input[0])
        while table is not None and table.op == "Identity":
            table = _producer(nodes, table.input[0])
        source = _producer(nodes, node.input[1])
        for _ in range(64):  # a bounded walk: preprocessing chains are short
            if source is None or source.name in by_placeholder or not source.input:
                break
            source = _producer(nodes, source.input[0])
        if table is not None and table.name in keys_of and source is not None:
            name = by_placeholder.get(source.name)
            if name is not None:
                found[name] = keys_of[table.name]
    return found


_TABLE_OPS = frozenset({"HashTableV2", "HashTable"}) | MUTABLE_TABLE_OPS
_INIT_OP_KEYS = ("saved_model_main_op", "legacy_init_op")


def _init_op_name(meta_graph: Any) -> str | None:
    """The op TF Serving runs at load (loader.cc GetInitOp: signature, main_op, legacy_init_op)."""
    signature = meta_graph.signature_def.get("__saved_model_init_op")
    if signature is not None and "__saved_model_init_op" in signature.outputs:
        return signature.outputs["__saved_model_init_op"].name.split(":")[0]
    for key in _INIT_OP_KEYS:
        if key in meta_graph.collection_def:
            values = meta_graph.collection_def[key].node_list.value
            if values:
                return values[0].split(":")[0]
    return None


def _ancestors(nodes: dict[str, Any], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        name = stack.pop().lstrip("^").split(":")[0]
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        stack.extend(nodes[name].input)
    return seen


def _asset_file_defs(meta_graph: Any) -> list[Any]:
    """AssetFileDefs where loader.cc GetAssetFileDefs looks: the field, else the TF1 collection."""
    from tensorflow.core.protobuf import meta_graph_pb2

    if meta_graph.asset_file_def:
        return list(meta_graph.asset_file_def)
    found = []
    for value in meta_graph.collection_def["saved_model_assets"].any_list.value:
        asset = meta_graph_pb2.AssetFileDef()
        value.Unpack(asset)
        found.append(asset)
    return found


def describe_tables(meta_graph: Any) -> list[dict[str, Any]]:
    """Every lookup table of a SavedModel meta graph: dtypes, size, contents, initialiser."""
    nodes = {n.name: n for n in meta_graph.graph_def.node}
    init_op = _init_op_name(meta_graph)
    run_at_load = _ancestors(nodes, init_op) if init_op else set()
    assets = {a.tensor_info.name.split(":")[0]: a.filename for a in _asset_file_defs(meta_graph)}
    tables = []
    for node in meta_graph.graph_def.node:
        if node.op not in _TABLE_OPS:
            continue
        entry: dict[str, Any] = {
            "table": node.name,
            "op": node.op,
            "key_dtype": tf.as_dtype(node.attr["key_dtype"].type).name,
            "value_dtype": tf.as_dtype(node.attr["value_dtype"].type).name,
            "size": None,
            "contents": None,
            "initialised_by": None,
        }
        for init in meta_graph.graph_def.node:
            if not init.input or init.input[0].split(":")[0] != node.name:
                continue
            if init.op == "InitializeTableV2":
                keys = nodes[init.input[1].split(":")[0]]
                entry["size"] = int(np.prod(tf.make_ndarray(keys.attr["value"].tensor).shape))
                entry["contents"] = "constants"
            elif init.op == "InitializeTableFromTextFileV2":
                path = init.input[1].split(":")[0]
                entry["contents"] = f"assets/{assets.get(path, '?')}"
            else:
                continue
            entry["initialised_by"] = init_op if init.name in run_at_load else None
        tables.append(entry)
    return tables


def drop_empty_table_initializers(graph: Any) -> None:
    """Remove the `None` entries tracing leaves in the function graph's table_initializer
    collection (the tables were initialised eagerly); freezing exports the graph's
    collections and would warn about each one. Our tables get their own init op instead."""
    entries = graph.get_collection_ref(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS)
    entries[:] = [op for op in entries if op is not None]
