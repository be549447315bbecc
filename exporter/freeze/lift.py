"""Decide which large weights stay variables, and read them without copying.

A frozen graph is one protobuf, and so is TF Serving's `saved_model.pb`: past 2 GiB neither can
be written, and well before that every copy of a constant costs a copy of the weights. Past
`max_frozen_bytes`, the largest weight tensors are *lifted*: they stay read-only variables (the
SavedModel's `variables/` checkpoint, ONNX external data), while every scalar and every small
tensor is still frozen into a Const. Only a variable the traced graph reads with plain
`ReadVariableOp`s (or `ResourceGather`s, an embedding lookup) at top level is liftable: that read
is all a TF1 Session, a checkpoint restore and a tf2onnx graph input can stand in for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Default `max_frozen_bytes`. saved_model.pb (one protobuf) can never pass 2 GiB, and frozen
#: constants cost far more than variables well before that: at 30M parameters (117 MiB) the
#: fully frozen export took 44.7 s at 10x the weights in peak RSS, the lifted one 11.9 s at
#: 1.8x (docs/performance.md). 64 MiB keeps models up to ~15M parameters fully frozen.
DEFAULT_MAX_FROZEN_BYTES = 64 * 2**20
#: A tensor with fewer elements is always frozen (scalars and small vectors never leave).
MIN_LIFT_ELEMENTS = 1024
#: Once past the threshold, every liftable tensor of at least this size leaves: a frozen
#: constant costs copies in the freeze, the GraphDef import and tf2onnx's Grappler pass, so
#: keeping "just enough" megabyte-sized tensors frozen is slower and no more useful.
LARGE_TENSOR_BYTES = 2**20

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_bytes(text: str) -> int:
    """`"512MiB"`, `"1GiB"`, `"1048576"` -> bytes; ValueError with the accepted forms otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: use bytes (1073741824) or 512MiB / 1GiB")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class LiftedVariable:
    """A weight tensor that stays a read-only variable instead of a Const."""

    key: str  # checkpoint key, VarHandleOp shared_name
    node_name: str  # the capture placeholder its reads consume (VarHandleOp in the SavedModel)
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    variable: Any = field(repr=False, compare=False)

    def view(self) -> np.ndarray:
        """The variable's current value as a read-only array sharing its buffer (no copy).

        `Variable.numpy()` copies (a second full set of weights at 1B parameters); the eager
        read aliases the variable's buffer, and `np.asarray` of an eager tensor wraps it.
        """
        return np.asarray(self.variable.read_value())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.key,
            "graph_node": self.node_name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "bytes": self.nbytes,
        }


def _nbytes(variable: Any) -> int:
    return int(np.prod(variable.shape)) * variable.dtype.size


#: Ops that only read a variable and that a plain tensor input can replace (see onnx_export).
READ_OPS = frozenset({"ReadVariableOp", "ResourceGather"})


def _plain_read(op: Any) -> bool:
    """A read a graph input can stand in for (ResourceGather only along axis 0)."""
    return op.type == "ReadVariableOp" or (
        op.type == "ResourceGather" and op.get_attr("batch_dims") == 0
    )


def _only_read(placeholder_op: Any) -> bool:
    """True when every consumer of the captured handle is a top-level plain read."""
    consumers = placeholder_op.outputs[0].consumers()
    return bool(consumers) and all(_plain_read(op) for op in consumers)


def _unique_keys(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        keys.append(name if count == 0 else f"{name}_{count}")
    return keys


def plan_lift(
    function: Any, captures: dict[str, Any], max_frozen_bytes: int
) -> tuple[list[LiftedVariable], int]:
    """The variables to lift (largest first) and the bytes left frozen.

    Nothing is lifted when all weights fit under `max_frozen_bytes`: below the threshold the
    export is fully frozen, exactly as before. Otherwise every liftable tensor of
    LARGE_TENSOR_BYTES or more leaves, then smaller ones (largest first, never under
    MIN_LIFT_ELEMENTS) until the frozen rest fits; what cannot leave the caller checks.
    """
    total = sum(_nbytes(v) for v in captures.values())
    if total <= max_frozen_bytes:
        return [], total
    ops = {op.name: op for op in function.graph.get_operations()}
    candidates = sorted(
        (
            (name, variable)
            for name, variable in captures.items()
            if int(np.prod(variable.shape)) >= MIN_LIFT_ELEMENTS and _only_read(ops[name])
        ),
        key=lambda item: -_nbytes(item[1]),
    )
    chosen = []
    frozen = total
    for name, variable in candidates:
        if frozen <= max_frozen_bytes and _nbytes(variable) < LARGE_TENSOR_BYTES:
            break
        chosen.append((name, variable))
        frozen -= _nbytes(variable)
    keys = _unique_keys([v.name.split(":")[0] for _, v in chosen])
    lifted = [
        LiftedVariable(
            key=key,
            node_name=name,
            shape=tuple(int(d) for d in variable.shape),
            dtype=variable.dtype.name,
            nbytes=_nbytes(variable),
            variable=variable,
        )
        for key, (name, variable) in zip(keys, chosen, strict=True)
    ]
    return lifted, frozen
