"""Inline function calls into their caller, so tf2onnx sees only ops it converts.

tf2onnx converts ops, not calls: a `StatefulPartitionedCall` / `PartitionedCall` left in the
frozen graph reaches ONNX as an unknown op. Grappler, which tf2onnx runs first, does not
inline calls marked `_noinline`, and Keras 3 marks some: its TensorFlow backend lowers a
grouped `Conv2D(groups=g)` through `tf.function(jit_compile=True)` (`_conv_xla`), so RegNet-,
ResNeXt- and ConvNeXt-style blocks keep one call per layer. `_noinline` and
`_XlaMustCompile` only say how TensorFlow should run the body, not what it computes, so
copying the body into the caller is exact; the parity gate checks the result anyway.

`inline_call` is a `graph_rewrite.REWRITES` entry: the call node keeps its name and becomes an
`IdentityN` of the body's results (consumers read `call:i`, or `call:output:i` inside a
function, unchanged), each argument becomes an `Identity` of the call's input, and the body's
nodes are copied under the call's name scope (so errors still name the Keras layer). Nested
calls in the copied body are inlined in turn by the rewrite pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import tensorflow as tf

from exporter import tf_internals

#: Ops that call the function named by their `f` attr (a direct call's op is the function).
CALL_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})


class CallSite(Protocol):
    """What `inline_call` needs from the rewrite pass's editor (`graph_rewrite._Editor`)."""

    in_function: bool
    library: Mapping[str, Any]  # function name -> FunctionDef
    names: set[str]  # node names taken in the node list being edited
    callers: dict[str, tuple[str, ...]]  # inlined node -> functions it was inlined from

    def add_node(self, node: Any, callers: tuple[str, ...]) -> None: ...

    def refuse(self, node: Any, reason: str) -> None: ...


class _NotInlinable(Exception):
    """A call whose body cannot be copied into its caller (the message says why)."""


def callee(node: Any, library: Mapping[str, Any]) -> str | None:
    """The library function `node` calls, or None if it is not a call."""
    if node.op in CALL_OPS:
        return node.attr["f"].func.name
    return node.op if node.op in library else None


def _output_offsets(node: Any, library: Mapping[str, Any]) -> dict[str, int]:
    """Output arg name -> index of its first tensor in the node's flat output list."""
    op_def = library[node.op].signature if node.op in library else tf_internals.op_def(node.op)
    if op_def is None:
        raise _NotInlinable(f"its body uses op {node.op}, which this TensorFlow does not know")
    offsets, index = {}, 0
    for arg in op_def.output_arg:
        offsets[arg.name] = index
        if arg.number_attr:
            index += node.attr[arg.number_attr].i
        elif arg.type_list_attr:
            index += len(node.attr[arg.type_list_attr].list.type)
        else:
            index += 1
    return offsets


def _prefix(call_name: str, taken: set[str]) -> str:
    """The call's own name scope, suffixed `_N` if the caller already uses it."""
    prefix, n = call_name, 0
    while any(name.startswith(prefix + "/") for name in taken):
        n += 1
        prefix = f"{call_name}_{n}"
    return prefix


class _Body:
    """The copied body of one call: renamed nodes and the caller-side name of each tensor."""

    def __init__(self, call: Any, fdef: Any, site: CallSite) -> None:
        signature = fdef.signature
        for arg in signature.input_arg:
            if arg.number_attr or arg.type_list_attr or arg.type_attr or not arg.type:
                raise _NotInlinable(f"argument {arg.name!r} has no fixed type")
        data = [i for i in call.input if not i.startswith("^")]
        if len(data) != len(signature.input_arg):
            raise _NotInlinable(
                f"it passes {len(data)} inputs to {len(signature.input_arg)} arguments"
            )
        self.in_function = site.in_function
        self.prefix = _prefix(call.name, site.names)
        body_names = {n.name for n in fdef.node_def}
        self.offsets = (
            {}
            if site.in_function
            else {n.name: _output_offsets(n, site.library) for n in fdef.node_def}
        )
        controls = [i for i in call.input if i.startswith("^")]
        self.args: dict[str, str] = {}
        self.nodes: list[Any] = []
        for arg, source in zip(signature.input_arg, data, strict=True):
            name = arg.name
            while name in body_names:
                name += "_arg"
            node = tf.compat.v1.NodeDef(
                name=f"{self.prefix}/{name}", op="Identity", input=[source, *controls]
            )
            node.attr["T"].type = arg.type
            self.args[arg.name] = node.name
            self.nodes.append(node)
        for original in fdef.node_def:
            node = tf.compat.v1.NodeDef()
            node.CopyFrom(original)
            node.name = f"{self.prefix}/{original.name}"
            del node.input[:]
            node.input.extend(self.ref(r) for r in original.input)
            self.nodes.append(node)

    def ref(self, name: str) -> str:
        """A body-side tensor name (`node:out_arg:i`, `arg`, `^node`) as the caller spells it."""
        if name.startswith("^"):
            target = name[1:]
            return "^" + self.args.get(target, f"{self.prefix}/{target}")
        parts = name.split(":")
        if len(parts) == 1:  # a function argument
            return f"{self.args[name]}:output:0" if self.in_function else self.args[name]
        if len(parts) != 3:
            raise _NotInlinable(f"its body names a tensor {name!r} TensorFlow would not")
        node, out_arg, i = parts
        if self.in_function:
            return f"{self.prefix}/{node}:{out_arg}:{i}"
        if out_arg not in self.offsets.get(node, {}):
            raise _NotInlinable(f"its body reads {name!r}, which no node of it produces")
        index = self.offsets[node][out_arg] + int(i)
        return f"{self.prefix}/{node}" + (f":{index}" if index else "")


def inline_call(node: Any, site: CallSite) -> bool:
    """Replace the call `node` by its function's body; False (and why) if it cannot be."""
    name = callee(node, site.library)
    callers = site.callers.get(node.name, ())
    try:
        if name not in site.library:
            raise _NotInlinable(f"its function {name!r} is not in the graph's library")
        if name in callers:
            raise _NotInlinable(f"its function {name!r} calls itself")
        fdef = site.library[name]
        body = _Body(node, fdef, site)
        results = [body.ref(fdef.ret[arg.name]) for arg in fdef.signature.output_arg]
    except _NotInlinable as exc:
        site.refuse(node, str(exc))
        return False
    for copied in body.nodes:
        site.add_node(copied, (*callers, name))
    node.op = "IdentityN"
    node.ClearField("attr")
    node.attr["T"].list.type.extend(arg.type for arg in fdef.signature.output_arg)
    del node.input[:]
    node.input.extend(results)
    return True


def _called(nodes: Iterable[Any], library: Mapping[str, Any]) -> set[str]:
    """Functions `nodes` reference: calls, and func / list(func) attrs (loops, conditionals)."""
    found = set()
    for node in nodes:
        if node.op in library:
            found.add(node.op)
        for value in node.attr.values():
            if value.HasField("func"):
                found.add(value.func.name)
            found.update(f.name for f in value.list.func)
    return found


def prune_library(graph_def: Any) -> int:
    """Drop the functions nothing in `graph_def` reaches any more; return how many."""
    library = {f.signature.name: f for f in graph_def.library.function}
    reached: set[str] = set()
    frontier = _called(graph_def.node, library)
    while frontier:
        name = frontier.pop()
        if name in reached or name not in library:
            continue
        reached.add(name)
        frontier |= _called(library[name].node_def, library)
    kept = [f for f in graph_def.library.function if f.signature.name in reached]
    dropped = len(graph_def.library.function) - len(kept)
    if dropped:
        del graph_def.library.function[:]
        graph_def.library.function.extend(kept)
        kept_gradients = [g for g in graph_def.library.gradient if g.function_name in reached]
        del graph_def.library.gradient[:]
        graph_def.library.gradient.extend(kept_gradients)
    return dropped
