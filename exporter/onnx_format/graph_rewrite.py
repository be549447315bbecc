"""Rewrite ops tf2onnx cannot convert into exact decompositions it can, before conversion.

The pass is a table (`REWRITES`: TF op -> function replacing the node in place, keeping its
name so consumers are untouched), applied to the frozen GraphDef and its function library.
Only the copy handed to tf2onnx is rewritten: the SavedModel keeps the original ops. Nothing
here is trusted: the ONNX model it yields goes through the same parity gate as any other.

Ops that still reach ONNX unconverted are named with the Keras layer that produced them and
the fix (`unconvertible_ops`), instead of onnx.checker's generic refusal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from exporter import tf_internals
from exporter.onnx_format.inline_calls import CALL_OPS, inline_call, prune_library


class _Editor:
    """What a rewrite may do to the node list it works on (the graph's or a function's)."""

    def __init__(self, nodes: Any, in_function: bool, library: Mapping[str, Any]) -> None:
        self.in_function = in_function
        self.library = library
        self.by_name = {n.name: n for n in nodes}
        self.names = set(self.by_name)
        self.added: list[Any] = []
        self.callers: dict[str, tuple[str, ...]] = {}  # inlined node -> its functions
        self.refused: dict[str, str] = {}  # call node -> why it was not inlined

    def add_node(self, node: Any, callers: tuple[str, ...] = ()) -> None:
        """Add a ready NodeDef (the rewrite pass then rewrites it too)."""
        self.added.append(node)
        self.by_name[node.name] = node
        self.names.add(node.name)
        if callers:
            self.callers[node.name] = callers

    def refuse(self, node: Any, reason: str) -> None:
        self.refused[node.name] = reason

    def ref(self, name: str, out_arg: str) -> str:
        """How a consumer names output 0 of `name` (functions name outputs by arg)."""
        return f"{name}:{out_arg}:0" if self.in_function else name

    def add(self, name: str, op: str, inputs: Iterable[str], attrs: dict[str, Any]) -> str:
        node = tf.compat.v1.NodeDef(name=name, op=op, input=list(inputs))
        for key, value in attrs.items():
            node.attr[key].CopyFrom(value)
        self.add_node(node)
        return name

    def const(self, name: str, value: np.ndarray, dtype: tf.DType) -> str:
        return self.add(
            name,
            "Const",
            [],
            {
                "dtype": tf.compat.v1.AttrValue(type=dtype.as_datatype_enum),
                "value": tf.compat.v1.AttrValue(tensor=tf.make_tensor_proto(value, dtype=dtype)),
            },
        )

    def const_value(self, ref: str) -> np.ndarray | None:
        """The value of the Const that `ref` reads, or None if it is not a Const."""
        node = self.by_name.get(ref.split(":")[0])
        if node is None or node.op != "Const":
            return None
        return tf.make_ndarray(node.attr["value"].tensor)


Rewrite = Callable[[Any, _Editor], bool]  # replaces the node in place; False = not applicable


def _erfc(node: Any, graph: _Editor) -> bool:
    """Erfc(x) -> 1 - Erf(x): exact in real arithmetic; Keras 3's exact GELU lowers to Erfc."""
    dtype = tf.as_dtype(node.attr["T"].type)
    erf = graph.add(f"{node.name}/rewrite_erf", "Erf", [node.input[0]], {"T": node.attr["T"]})
    one = graph.const(f"{node.name}/rewrite_one", np.array(1, dtype=dtype.as_numpy_dtype), dtype)
    attr_t = node.attr["T"]
    node.op = "Sub"
    node.ClearField("attr")
    node.attr["T"].CopyFrom(attr_t)
    del node.input[:]
    node.input.extend([graph.ref(one, "output"), graph.ref(erf, "y")])
    return True


#: The bytes TF's whitespace split treats as whitespace (absl::ascii_isspace).
_ASCII_WHITESPACE = "[ \\t\\n\\v\\f\\r]+"


def _whitespace_split(node: Any, graph: _Editor) -> bool:
    """StringSplitV2(x, sep="") -> StringSplit(RegexReplace(x, ascii whitespace+, " "), " ").

    TF splits on runs of ASCII whitespace and drops empty tokens; tf2onnx maps an empty
    separator to onnxruntime-extensions' StringSplit, which then splits characters. Collapsing
    every whitespace run to one space and splitting on it with skip_empty is the same split.
    """
    sep = graph.const_value(node.input[1])
    if sep is None or sep.item() != b"" or node.attr["maxsplit"].i not in (0, -1):
        return False
    collapsed = graph.add(
        f"{node.name}/rewrite_collapse",
        "StaticRegexReplace",
        [node.input[0]],
        {
            "pattern": tf.compat.v1.AttrValue(s=_ASCII_WHITESPACE.encode()),
            "rewrite": tf.compat.v1.AttrValue(s=b" "),
            "replace_global": tf.compat.v1.AttrValue(b=True),
        },
    )
    space = graph.const(f"{node.name}/rewrite_space", np.array(b" "), tf.string)
    node.op = "StringSplit"
    node.ClearField("attr")
    node.attr["skip_empty"].b = True
    del node.input[:]
    node.input.extend([graph.ref(collapsed, "output"), graph.ref(space, "output")])
    return True


#: TF op -> its exact decomposition into ops tf2onnx converts faithfully. A node whose op is
#: a library function (a direct call) is inlined like the call ops.
REWRITES: dict[str, Rewrite] = {
    "Erfc": _erfc,
    "StringSplitV2": _whitespace_split,
    **{op: inline_call for op in CALL_OPS},
}

#: Ops tf2onnx cannot convert, with the fix a user can apply.
KNOWN_FIXES = {
    "StringNGrams": "compute n-grams outside the model or use output_mode='int' without ngrams",
    "UnicodeDecodeWithOffsets": "decode text before the model",
    "PyFunc": "replace tf.py_function with TF ops",
}


#: Ops tf2onnx maps to a custom op that computes something else: converting them is refused.
UNFAITHFUL = {
    "StringToHashBucketFast": (
        "onnxruntime-extensions' StringToHashBucketFast does not compute TF's FarmHash buckets",
        "use num_oov_indices=1 instead of hashed OOV buckets (or drop the Hashing layer)",
    ),
}


#: Report key for calls whose op is the function itself (TF1 `Defun` style).
DIRECT_CALL = "function call"


@dataclass(frozen=True)
class RewriteSummary:
    """How many nodes each rewrite replaced (for the export report), and calls left as calls."""

    counts: dict[str, int]
    not_inlined: dict[str, str] = field(default_factory=dict)  # call node -> why

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts)


def _output_args(op: str, library: Mapping[str, Any]) -> list[str]:
    op_def = library[op].signature if op in library else tf_internals.op_def(op)
    return [arg.name for arg in op_def.output_arg] if op_def is not None else []


def _rename_output_refs(
    nodes: list[Any], ret: Any, changed: dict[str, tuple[str, str]], library: Mapping[str, Any]
) -> None:
    """Inside a function, consumers name an output by its op's arg (`Erfc:y:0`, `Sub:z:0`):
    re-spell the references to every node whose op a rewrite changed, and the function's ret."""
    renames: dict[tuple[str, str, str], str] = {}
    for name, (old, new) in changed.items():
        old_args, new_args = _output_args(old, library), _output_args(new, library)
        if old_args == new_args:
            continue
        if new_args == ["output"]:  # IdentityN: one list output, in the old outputs' order
            pairs = [((a, "0"), f"output:{k}") for k, a in enumerate(old_args)]
        else:
            pairs = [((a, "0"), f"{b}:0") for a, b in zip(old_args, new_args, strict=False)]
        renames.update({(name, *key): value for key, value in pairs})
    if not renames:
        return

    def fix(ref: str) -> str:
        parts = tuple(ref.split(":"))
        return f"{parts[0]}:{renames[parts]}" if parts in renames else ref

    for node in nodes:
        fixed = [fix(r) for r in node.input]
        del node.input[:]
        node.input.extend(fixed)
    for key in list(ret):
        ret[key] = fix(ret[key])


def _rewrite_nodes(
    nodes: Any, library: Mapping[str, Any], summary: RewriteSummary, ret: Any = None
) -> list[Any]:
    """Rewrite `nodes` (a function body when `ret` is its ret map) and every node a rewrite
    adds (an inlined body may hold an Erfc, or another call)."""
    graph = _Editor(nodes, ret is not None, library)
    pending = list(nodes)
    changed: dict[str, tuple[str, str]] = {}
    while pending:
        node = pending.pop()
        op = node.op
        rewrite = REWRITES.get(op) or (inline_call if op in library else None)
        added = len(graph.added)
        if rewrite is not None and rewrite(node, graph):
            key = op if op in REWRITES else DIRECT_CALL
            summary.counts[key] = summary.counts.get(key, 0) + 1
            changed[node.name] = (changed.get(node.name, (op,))[0], node.op)
            pending.extend(graph.added[added:])
    if ret is not None:
        _rename_output_refs([*nodes, *graph.added], ret, changed, library)
    summary.not_inlined.update(graph.refused)
    return graph.added


def rewrite_for_onnx(graph_def: Any) -> RewriteSummary:
    """Apply `REWRITES` to `graph_def` (a copy tf2onnx will convert) and its functions, in place.

    Calls in the graph are inlined first; functions nothing calls any more are then dropped,
    and what is left of the library (loop and branch bodies) is rewritten the same way.
    """
    summary = RewriteSummary({})
    library = {f.signature.name: f for f in graph_def.library.function}
    graph_def.node.extend(_rewrite_nodes(graph_def.node, library, summary))
    prune_library(graph_def)
    library = {f.signature.name: f for f in graph_def.library.function}
    for function in graph_def.library.function:
        added = _rewrite_nodes(function.node_def, library, summary, function.ret)
        function.node_def.extend(added)
    return summary


_UNIQUIFIED = re.compile(r"_\d+$")


def layer_for(node_name: str, layer_names: Iterable[str]) -> str | None:
    """The Keras layer whose name scope holds `node_name` (TF may suffix scopes with `_N`)."""
    names = set(layer_names)
    for part in reversed(node_name.split("/")[:-1]):
        for candidate in (part, _UNIQUIFIED.sub("", part)):
            if candidate in names:
                return candidate
    return None


def unfaithful_ops(graph_def: Any) -> list[tuple[str, str]]:
    """(op type, node name) of every node whose ONNX form would not match TF (`UNFAITHFUL`)."""
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return [(n.op, n.name) for n in nodes if n.op in UNFAITHFUL]


def unfaithful_message(found: list[tuple[str, str]], layer_names: Iterable[str]) -> str:
    """One line: which layer's op has no faithful ONNX form, why, and what to do."""
    op, node = found[0]
    why, fix = UNFAITHFUL[op]
    layer = layer_for(node, list(layer_names)) or node
    return (
        f"No faithful ONNX form for {op} in layer {layer!r}: {why}. Fix: {fix}, or pass "
        "--formats savedmodel to ship the SavedModel alone."
    )


def unconvertible_ops(model: Any) -> list[tuple[str, str]]:
    """(op type, node name) of every ONNX node left in the TF op set (tf2onnx gave up on it)."""
    import onnx

    left = []
    for node in model.graph.node:
        domain = node.domain or ""
        if domain in ("", "ai.onnx", "ai.onnx.ml") and not onnx.defs.has(node.op_type, domain):
            left.append((node.op_type, node.name))
    return left


def unconvertible_message(
    left: list[tuple[str, str]],
    layer_names: Iterable[str],
    not_inlined: Mapping[str, str] | None = None,
) -> str:
    """One line naming each unconvertible op, the layer that produced it, and the fix.

    A call the rewrite pass could not inline (`not_inlined`: node -> why) says why.
    """
    names = list(layer_names)
    not_inlined = not_inlined or {}
    parts = []
    for op, node in dict(left).items():
        layer = layer_for(node, names)
        fix = KNOWN_FIXES.get(op, "replace it with ops tf2onnx converts")
        if node in not_inlined:
            fix = f"its function cannot be inlined: {not_inlined[node]}; {fix}"
        parts.append(f"{op} (layer {layer or node!r}: {fix})")
    return (
        f"tf2onnx cannot convert {', '.join(parts)}. Fix the layer, or pass --formats savedmodel "
        "to ship the SavedModel alone."
    )
