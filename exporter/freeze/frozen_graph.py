"""Freeze a traced model: every variable becomes a graph constant, and prove it.

`convert_variables_to_constants_v2`'s machinery does the conversion; this module adds what
it does not: it refuses graphs that update state (the update would be silently dropped), checks
the graph *and its function library* for any variable op left, and maps each captured
variable to the `Const` node that now holds it, comparing the bytes. Past `max_frozen_bytes`
the large tensors chosen by `exporter.freeze.lift` are left as their capture placeholders (read-only
variables for the writers); the proof lists them and allows only their plain reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from exporter import tf_internals
from exporter.errors import FreezeError
from exporter.freeze.lift import DEFAULT_MAX_FROZEN_BYTES, READ_OPS, LiftedVariable, plan_lift
from exporter.freeze.tables import (
    INIT_OP_NAME,
    MUTABLE_TABLE_OPS,
    TABLE_WRITE_OPS,
    FrozenTable,
    drop_empty_table_initializers,
    freeze_tables,
    refuse_table_writes,
)
from exporter.model.trace import TracedModel, captured_variables
from serving.constants import PROTOBUF_LIMIT

#: Ops that read, hold or create a variable: none may remain in a frozen graph.
VARIABLE_OPS = frozenset(
    {
        "VarHandleOp",
        "ReadVariableOp",
        "VariableV2",
        "Variable",
        "VarIsInitializedOp",
        "ResourceGather",
        "ResourceGatherNd",
        "DestroyResourceOp",
        "_VarHandlesOp",
        "_ReadVariablesOp",
    }
)

#: Ops that write a variable: a model that runs them at inference cannot be frozen.
STATE_UPDATE_OPS = frozenset(
    {
        "AssignVariableOp",
        "AssignAddVariableOp",
        "AssignSubVariableOp",
        "Assign",
        "AssignAdd",
        "AssignSub",
        "ScatterUpdate",
        "ScatterAdd",
        "ScatterSub",
    }
)
STATE_UPDATE_PREFIXES = ("ResourceScatter", "ResourceApply", "ResourceSparseApply")

#: Ops that call back into Python: TF Serving and tf2onnx cannot run them.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


@dataclass(frozen=True)
class FrozenConst:
    """Where one captured variable's value now lives in the frozen graph."""

    variable_name: str
    node_name: str
    shape: tuple[int, ...]
    dtype: str
    value: np.ndarray = field(repr=False)
    bit_exact: bool
    variable: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class FrozenGraph:
    """A variable-free graph plus the names that bind it to the model's signature."""

    graph_def: Any  # tf.compat.v1.GraphDef with its function library
    input_specs: dict[str, tf.TensorSpec]  # alias -> spec (batch dim None)
    inputs: dict[str, str]  # alias -> tensor name ("features:0")
    outputs: dict[str, str]  # alias -> tensor name ("Identity:0")
    consts: list[FrozenConst]
    remaining_variable_ops: list[str]
    output_specs: dict[str, tf.TensorSpec] = field(default_factory=dict)  # alias -> spec
    # Large weights kept as read-only variables (past max_frozen_bytes); their capture
    # placeholders stay in graph_def, read only by top-level ReadVariableOps.
    lifted: list[LiftedVariable] = field(default_factory=list)

    @property
    def lifted_bytes(self) -> int:
        """Bytes of the weights that stay variables."""
        return sum(v.nbytes for v in self.lifted)

    tables: list[FrozenTable] = field(default_factory=list)

    @property
    def init_op(self) -> str | None:
        """The op that initialises the tables (the SavedModel's main_op), if any."""
        return INIT_OP_NAME if self.tables else None

    @property
    def weights_bytes(self) -> int:
        """Bytes of every constant that came from a variable."""
        return sum(c.value.nbytes for c in self.consts)

    @property
    def proven(self) -> bool:
        """True when no variable op is left and every constant matches its variable."""
        return not self.remaining_variable_ops and all(c.bit_exact for c in self.consts)

    def const_for(self, variable: Any) -> FrozenConst | None:
        """The constant that holds `variable` (a tf.Variable), if it was captured."""
        ref = variable.ref()
        return next((c for c in self.consts if c.variable.ref() == ref), None)

    def proof(self) -> dict[str, Any]:
        """JSON-friendly summary of the freeze proof, for the export report."""
        return {
            "proven": self.proven,
            "variable_ops_remaining": self.remaining_variable_ops,
            # Only weights past max_frozen_bytes; each is read, never written (see
            # exporter.savedmodel.variables for the write check and the checkpoint's bytes).
            "read_only_variables": [v.to_dict() for v in self.lifted],
            "graph_nodes": len(self.graph_def.node),
            "library_functions": len(self.graph_def.library.function),
            "constants": [
                {
                    "variable": c.variable_name,
                    "const_node": c.node_name,
                    "shape": list(c.shape),
                    "dtype": c.dtype,
                    "bit_exact": c.bit_exact,
                }
                for c in self.consts
            ],
            "tables": [t.proof() for t in self.tables],
        }


def _all_nodes(graph_def: Any) -> list[tuple[str, Any]]:
    """(location, NodeDef) for the graph and every function in its library."""
    nodes = [("graph", n) for n in graph_def.node]
    for fn in graph_def.library.function:
        nodes.extend((f"function {fn.signature.name}", n) for n in fn.node_def)
    return nodes


def find_ops(graph_def: Any, op_types: frozenset[str], prefixes: tuple[str, ...] = ()) -> list[str]:
    """`"location: node (op)"` for every node whose op is in `op_types` or starts with a prefix."""
    return [
        f"{where}: {node.name} ({node.op})"
        for where, node in _all_nodes(graph_def)
        if node.op in op_types or (prefixes and node.op.startswith(prefixes))
    ]


def _refuse_unfreezable(graph_def: Any) -> None:
    refuse_table_writes(find_ops(graph_def, MUTABLE_TABLE_OPS | TABLE_WRITE_OPS))
    updates = find_ops(graph_def, STATE_UPDATE_OPS, STATE_UPDATE_PREFIXES)
    if updates:
        raise FreezeError(
            f"The inference graph updates a variable ({updates[0]}"
            f"{f' and {len(updates) - 1} more' if len(updates) > 1 else ''}). A frozen graph "
            "cannot hold state, and tf2onnx would silently drop the update. Make call() "
            "stateless at inference (training=False) or keep the state outside the model."
        )
    python_ops = find_ops(graph_def, PYTHON_OPS)
    if python_ops:
        raise FreezeError(
            f"The inference graph calls back into Python ({python_ops[0]}): TF Serving "
            "and ONNX cannot run it. Replace tf.py_function/tf.numpy_function with TF ops."
        )


def _frozen_graph_def(function: Any, keep: frozenset[str] = frozenset()) -> Any:
    """`convert_variables_to_constants_v2`'s GraphDef, without re-importing it as a function.

    The public wrapper builds a new ConcreteFunction from the converted GraphDef; we only
    need the GraphDef, and skipping that import cuts the freeze of 35 MiB of weights from
    0.75 s / +320 MiB to 0.15 s / +70 MiB. Captures named in `keep` (lifted weights) are left
    as their placeholders: their values are never copied.
    """
    return tf_internals.variables_to_constants(function, sorted(keep) or None)


#: A frozen graph is one GraphDef protobuf (so is TF Serving's saved_model.pb): 2 GiB at most.
GRAPHDEF_LIMIT = PROTOBUF_LIMIT  # a module name of its own: tests lower it
GRAPHDEF_HEADROOM = 64 * 2**20  # node defs, function library, signature


def _remaining_variable_ops(graph_def: Any, lifted_nodes: set[str]) -> list[str]:
    """Variable ops left, except the top-level reads of lifted weights (those are the plan)."""
    return [
        f"{where}: {node.name} ({node.op})"
        for where, node in _all_nodes(graph_def)
        if node.op in VARIABLE_OPS
        and not (where == "graph" and node.op in READ_OPS and node.input[0] in lifted_nodes)
    ]


def freeze(
    traced: TracedModel,
    *,
    allow_oversized: bool = False,
    max_frozen_bytes: int = DEFAULT_MAX_FROZEN_BYTES,
) -> FrozenGraph:
    """Turn every variable of `traced` into a constant; raise FreezeError if unprovable.

    Past `max_frozen_bytes` of weights, the largest tensors stay read-only variables
    (`FrozenGraph.lifted`): scalars and small tensors are always Consts. Whatever is left
    frozen must fit protobuf's 2 GiB (a GraphDef TensorFlow can hold in memory but never
    serialize or import); that is refused in milliseconds unless the caller only wants ONNX
    (`allow_oversized`).
    """
    source = traced.function
    captures = captured_variables(source)
    lifted, total = plan_lift(source, captures, max_frozen_bytes)
    if not allow_oversized and total > GRAPHDEF_LIMIT - GRAPHDEF_HEADROOM:
        raise FreezeError(
            f"The model's weights total {total / 2**30:.2f} GiB"
            + (" after lifting every liftable tensor" if lifted else "")
            + ": frozen into constants they would make a GraphDef (and a saved_model.pb) past "
            "protobuf's 2 GiB limit, which neither TensorFlow nor TF Serving can load. Lower "
            "--max-frozen-bytes so large tensors stay variables; tensors read inside control "
            "flow or a nested function cannot stay variables: pass --formats onnx to export "
            "ONNX alone."
        )
    _refuse_unfreezable(source.graph.as_graph_def())
    lifted_nodes = {v.node_name for v in lifted}
    drop_empty_table_initializers(source.graph)
    try:
        graph_def = _frozen_graph_def(source, frozenset(lifted_nodes))
    except (ValueError, TypeError, tf.errors.OpError) as exc:
        raise FreezeError(
            f"convert_variables_to_constants_v2 failed: {exc}. The graph holds an op that "
            "cannot be frozen (e.g. a lookup table or a stateful op)."
        ) from exc
    nodes = {n.name: n for n in graph_def.node}

    consts = []
    for node_name, variable in captures.items():
        if node_name in lifted_nodes:
            continue
        node = nodes.get(node_name)
        if node is None or node.op != "Const":
            raise FreezeError(
                f"Variable {variable.name!r} was captured as {node_name!r} but no Const of "
                "that name is in the frozen graph: the freeze cannot be proven."
            )
        value = tf.make_ndarray(node.attr["value"].tensor)
        expected = variable.numpy()
        consts.append(
            FrozenConst(
                variable_name=variable.name.split(":")[0],
                node_name=node_name,
                shape=tuple(expected.shape),
                dtype=expected.dtype.name,
                value=value,
                bit_exact=value.dtype == expected.dtype
                and value.shape == expected.shape
                and value.tobytes() == expected.tobytes(),
                variable=variable,
            )
        )
    # Captured table handles are left as resource Placeholders: make them initialised tables.
    resources = [
        t.op.name
        for t in source.inputs
        if t.dtype == tf.resource
        and nodes[t.op.name].op == "Placeholder"
        and t.op.name not in lifted_nodes
    ]
    tables = freeze_tables(graph_def, traced.tables, resources)
    # Inputs still fed at run time: the data placeholders (captures became Consts or tables).
    data_inputs = [
        t
        for t in source.inputs
        if nodes[t.op.name].op == "Placeholder" and t.op.name not in lifted_nodes
    ]
    inputs = {
        name: tensor.name for name, tensor in zip(traced.input_specs, data_inputs, strict=True)
    }
    outputs = {
        name: tensor.name
        for name, tensor in zip(traced.structured_output_keys, source.outputs, strict=True)
    }
    result = FrozenGraph(
        graph_def=graph_def,
        input_specs=dict(traced.input_specs),
        inputs=inputs,
        outputs={name: outputs[name] for name in traced.output_names},
        consts=consts,
        remaining_variable_ops=_remaining_variable_ops(graph_def, lifted_nodes),
        output_specs={
            name: tf.TensorSpec(tensor.shape, tensor.dtype, name=name)
            for name, tensor in zip(traced.structured_output_keys, source.outputs, strict=True)
        },
        lifted=lifted,
        tables=tables,
    )
    if not result.proven:
        bad = [c.variable_name for c in consts if not c.bit_exact]
        raise FreezeError(
            "Freeze proof failed: "
            + (
                f"variable ops remain ({result.remaining_variable_ops[:3]}); "
                if result.remaining_variable_ops
                else ""
            )
            + (f"constants differ from their variables: {bad}" if bad else "")
        )
    return result
