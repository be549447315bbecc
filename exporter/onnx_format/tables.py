"""What tf2onnx needs beyond the graph for lookup tables and string ops, and what ORT needs after.

- Table lookups become the standard ONNX-ML `LabelEncoder` with the vocabulary inside the file
  (string -> int64, IntegerLookup's int64 -> int64, ...). tf2onnx's own handler emits
  `CategoryMapper` for string -> int64, which onnx.reference (the spec's evaluator) does not
  implement, and needs tables it found by re-tracing the Python object; ours are the frozen
  tables, and `LabelEncoder` runs on ORT and on the reference evaluator alike.
- String ops ONNX lacks (regex replace, split, hashing) go to tf2onnx's `ai.onnx.contrib`
  handlers, which onnxruntime-extensions implements; an ORT session must then load that
  library, which `serving.ort_extensions.session_options` does and the report names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from tensorflow.core.framework import types_pb2
from tf2onnx import constants

from exporter.freeze.tables import FrozenTable
from serving.ort_extensions import CUSTOM_OPS_DOMAIN, CUSTOM_OPS_LIBRARY

# ONNX-ML LabelEncoder attribute suffix per key/value dtype.
_LABEL_KINDS = {"string": "strings", "int64": "int64s", "float32": "floats"}


@dataclass(frozen=True)
class TableHandlers:
    """tf2onnx `custom_op_handlers` for lookups over the frozen tables."""

    tables: dict[str, FrozenTable]

    def _table(self, node: Any) -> FrozenTable:
        table_node = node.inputs[0]
        while table_node.type == "Identity":
            table_node = table_node.inputs[0]
        table = self.tables.get(table_node.name)
        if table is None:
            raise ValueError(f"{node.name} reads table {table_node.name}, which was not frozen")
        return table

    def find(self, ctx: Any, node: Any, name: str, args: list[Any]) -> None:
        """LookupTableFindV2 -> LabelEncoder over the frozen table."""
        op, attrs = onnx_lookup(self._table(node), node.inputs[2].get_tensor_value(as_list=False))
        shape, dtype = ctx.get_shape(node.input[1]), ctx.get_dtype(node.output[0])
        outputs, key_input = node.output, node.input[1]
        self._drop_unused_after(ctx, node)
        ctx.make_node(
            op,
            [key_input],
            outputs=outputs,
            name=name,
            attr=attrs,
            domain=constants.AI_ONNX_ML_DOMAIN,
            shapes=[shape],
            dtypes=[dtype],
        )

    def _drop_unused_after(self, ctx: Any, node: Any) -> None:
        table_node = node.inputs[0]
        ctx.remove_node(node.name)
        if not ctx.find_output_consumers(table_node.output[0]):
            ctx.remove_node(table_node.name)

    def size(self, ctx: Any, node: Any, name: str, args: list[Any]) -> None:
        """LookupTableSizeV2 -> the frozen table's size, as a constant."""
        table = self._table(node)
        outputs = node.output
        self._drop_unused_after(ctx, node)
        const = ctx.make_const(name, np.array(table.keys.size, dtype=np.int64))
        ctx.replace_all_inputs(outputs[0], const.output[0])

    def handlers(self) -> dict[str, tuple[Any, list[Any]]]:
        """The `custom_op_handlers` argument of tf2onnx's converters."""
        if not self.tables:
            return {}
        return {"LookupTableFindV2": (self.find, []), "LookupTableSizeV2": (self.size, [])}


def _text(value: Any) -> Any:
    """Python values for ONNX attributes: bytes as str, element by element for arrays."""
    if isinstance(value, np.ndarray):
        return _text(value.tolist()) if value.ndim else _text(value.item())
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value.decode() if isinstance(value, bytes) else value


def onnx_lookup(table: FrozenTable, default: np.ndarray) -> tuple[str, dict[str, Any]]:
    """The ONNX-ML op and attributes that look keys up in `table` (vocabulary in the file)."""
    keys, values, default_value = _text(table.keys), _text(table.values), _text(default)
    key_kind, value_kind = _LABEL_KINDS.get(table.key_dtype), _LABEL_KINDS.get(table.value_dtype)
    if key_kind is None or value_kind is None:
        raise ValueError(
            f"table {table.node_name}: {table.key_dtype} -> {table.value_dtype} has no "
            "ONNX-ML LabelEncoder form (keys and values must be string, int64 or float32)"
        )
    return "LabelEncoder", {
        f"keys_{key_kind}": keys,
        f"values_{value_kind}": values,
        f"default_{value_kind[:-1]}": default_value,
    }


def needs_string_ops(graph_def: Any) -> bool:
    """True when the graph handles strings, so tf2onnx should map string ops to ai.onnx.contrib."""
    string_type = types_pb2.DT_STRING
    for node in graph_def.node:
        for key in ("T", "dtype", "Tin", "Tkey"):
            if key in node.attr and node.attr[key].type == string_type:
                return True
    return False


def extra_opsets(graph_def: Any) -> list[Any] | None:
    """tf2onnx `extra_opset`: the contrib domain when strings are handled, else None."""
    if needs_string_ops(graph_def):
        return [onnx.helper.make_opsetid(CUSTOM_OPS_DOMAIN, 1)]
    return None


def custom_op_library(model: onnx.ModelProto) -> str | None:
    """The custom-op library ORT must load to run `model`, or None for standard ONNX."""
    uses = any(node.domain == CUSTOM_OPS_DOMAIN for node in model.graph.node)
    return CUSTOM_OPS_LIBRARY if uses else None


def drop_unused_custom_domain(model: onnx.ModelProto) -> None:
    """Remove the contrib opset import when no node ended up in it (a plain ONNX file then)."""
    if custom_op_library(model) is None:
        kept = [o for o in model.opset_import if o.domain != CUSTOM_OPS_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)


#: Name suffix of the LabelEncoders `string_equal_as_label_encoder` makes: comparisons with one
#: constant, not vocabularies (`exporter.inspect` does not list them as tables).
EQUALS_CONSTANT = "/equals_constant"


def _string_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes holding strings: tensor name -> value."""
    found = {
        i.name: onnx.numpy_helper.to_array(i)
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.STRING
    }
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            if tensor.data_type == onnx.TensorProto.STRING:
                found[node.output[0]] = onnx.numpy_helper.to_array(tensor)
    return found


def string_equal_as_label_encoder(model: onnx.ModelProto) -> int:
    """`StringEqual(x, "c")` (tf2onnx's form of TF's string Equal) -> standard ONNX-ML.

    onnxruntime-extensions' StringEqual fails on an empty tensor ("shape2 must have less
    dimensions than shape1"), so a text model whose batch splits into no token at all (every
    string empty, blank or punctuation: TextVectorization masks its "" tokens with this Equal)
    could not answer. `LabelEncoder(x, {"c": 1}, default 0)` cast to bool is the same
    elementwise comparison, handles empty tensors and needs no custom-op library. Returns how
    many nodes were replaced.
    """
    constants = _string_constants(model)
    nodes, replaced = [], 0
    for node in model.graph.node:
        operands = list(node.input)
        const = next((n for n in operands if n in constants and constants[n].size == 1), None)
        if node.op_type != "StringEqual" or node.domain != CUSTOM_OPS_DOMAIN or const is None:
            nodes.append(node)
            continue
        (other,) = [n for n in operands if n != const] or [const]
        value = constants[const].reshape(-1)[0]
        mapped = node.name + EQUALS_CONSTANT
        nodes += [
            onnx.helper.make_node(
                "LabelEncoder",
                [other],
                [mapped],
                name=mapped,
                domain="ai.onnx.ml",
                keys_strings=[value if isinstance(value, bytes) else str(value).encode()],
                values_int64s=[1],
                default_int64=0,
            ),
            onnx.helper.make_node(
                "Cast", [mapped], list(node.output), name=node.name, to=onnx.TensorProto.BOOL
            ),
        ]
        replaced += 1
    if replaced:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        if not any(o.domain == "ai.onnx.ml" for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid("ai.onnx.ml", 2))
    return replaced


def pin_string_normalizer_locale(model: onnx.ModelProto) -> None:
    """Give tf2onnx's StringNormalizer (from TF StringLower/StringUpper) the "C" locale.

    TF's default `encoding=''` changes ASCII letters only, which is exactly the C locale;
    ORT's default locale (en_US.UTF-8) would also fold non-ASCII letters, and fails to load
    on hosts (most containers) where that locale is not installed.
    """
    for node in model.graph.node:
        if node.op_type == "StringNormalizer" and not any(
            a.name == "locale" for a in node.attribute
        ):
            node.attribute.append(onnx.helper.make_attribute("locale", "C"))


def complete_output_shapes(model: onnx.ModelProto) -> None:
    """Give graph outputs that tf2onnx left shapeless the shape ONNX infers for them.

    TF cannot infer through a lookup whose table handle came from a Placeholder, so tf2onnx
    may emit an output with a type but no shape, which onnx.checker's full check rejects.
    ONNX-ML's CategoryMapper/LabelEncoder do have shape inference.
    """
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for output in missing:
        found = shapes.get(output.name)
        if found is not None and found.type.tensor_type.HasField("shape"):
            output.type.tensor_type.shape.CopyFrom(found.type.tensor_type.shape)
