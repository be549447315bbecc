"""Find the learned scale vectors a model carries, from how its inference graph reads them.

A *learned scale* is a weight with more than one element and at most one dimension past 1 (a
per-channel vector: `(C,)`, `(1, 1, C)`) that the traced inference graph reads only to multiply
something that varies per example: every read of it (`ReadVariableOp`, then only Identity /
Cast / Reshape / ExpandDims / Squeeze) ends in an elementwise `Mul` whose other operand depends
on a model input. That covers ConvNeXt's `LayerScale.gamma` (`x * gamma`, initialised to 1e-6),
the gamma of LayerNormalization, GroupNormalization and RMSNormalization (a factor of the
per-example 1/σ), and a user's own `add_weight(shape=(C,))` used as `x * w`. The audit judges each
one like a scalar (`exporter.model.audit`); the findings about them are grouped by kind here.

Not learned scales, by the same rule: kernels (read by MatMul / Conv2D), biases and offsets (Add,
BiasAdd), a weight read inside a nested function call, and BatchNormalization's gamma. At
inference that gamma only multiplies rsqrt(moving_variance + ε), another weight (tf_keras: it is
an input of FusedBatchNormV3), so it is one factor of a constant per-channel multiplier that
tf2onnx folds: there is no tensor of its own to prove in the ONNX file. It stays in the
non-scalar summary, as every other weight does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from exporter import tf_internals
from exporter.model.audit_report import Finding, ScaleVectorFinding
from exporter.model.trace import captured_variables, tf_variable_of

#: Ops a read may pass through on its way to the multiply: they change no value.
PASS_THROUGH = frozenset({"Identity", "Cast", "Reshape", "ExpandDims", "Squeeze"})
_SUFFIX = re.compile(r"(_\d+)?(:\d+)?$")


def is_vector_shape(shape: Iterable[int]) -> bool:
    """More than one element, along exactly one axis: `(C,)`, `(1, 1, C)`."""
    dims = [int(d) for d in shape]
    return sum(d > 1 for d in dims) == 1


def learned_scale_variables(function: Any) -> set[Any]:
    """`ref()`s of the variables `function` (a traced ConcreteFunction) reads only as a
    per-channel factor of a per-example tensor (see the module docstring)."""
    captures = captured_variables(function)
    per_example = _per_example_ops(function)
    found = set()
    for node_name, variable in captures.items():
        if not is_vector_shape(variable.shape):
            continue
        handle = function.graph.get_operation_by_name(node_name).outputs[0]
        reads = handle.consumers()
        if reads and all(
            op.type == "ReadVariableOp" and _only_scales(op.outputs[0], per_example) for op in reads
        ):
            found.add(variable.ref())
    return found


def _per_example_ops(function: Any) -> set[str]:
    """Names of the ops whose value depends on a model input (forward closure from the data
    placeholders: every input but the captures, variables, tables and constants alike)."""
    captured = {internal.op.name for _, internal in function.graph.captures}
    frontier = [t.op for t in function.inputs if t.op.name not in captured]
    seen = {op.name for op in frontier}
    while frontier:
        op = frontier.pop()
        for output in op.outputs:
            for consumer in output.consumers():
                if consumer.name not in seen:
                    seen.add(consumer.name)
                    frontier.append(consumer)
    return seen


def _only_scales(tensor: Any, per_example: set[str]) -> bool:
    """True when every use of `tensor` (through PASS_THROUGH ops) is one operand of a Mul
    whose other operand varies per example."""
    consumers = tensor.consumers()
    if not consumers:
        return False
    for op in consumers:
        if op.type in PASS_THROUGH:
            if not _only_scales(op.outputs[0], per_example):
                return False
        elif op.type == "Mul":
            others = [t for t in op.inputs if t is not tensor]
            if len(others) != 1 or others[0].op.name not in per_example:
                return False
        else:
            return False
    return True


def scale_groups(model: Any, refs: set[Any]) -> dict[Any, str]:
    """`Layer.attribute` for each learned scale (`LayerScale.gamma`): the innermost layer that
    owns it, and the attribute that holds it (else the weight's name without its `_N`)."""
    groups: dict[Any, str] = {}
    for layer in tf_internals.flatten_layers(model):  # children overwrite parents
        attributes: dict[Any, str] = {}
        for attr, obj in vars(layer).items():
            variable = tf_variable_of(obj)
            if variable is not None:
                attributes.setdefault(variable.ref(), attr)
        for weight in getattr(layer, "weights", []):
            variable = tf_variable_of(weight)
            if variable is None or variable.ref() not in refs:
                continue
            short = str(getattr(weight, "name", "")).rsplit("/", 1)[-1]
            attr = attributes.get(variable.ref()) or _SUFFIX.sub("", short) or short
            groups[variable.ref()] = f"{type(layer).__name__}.{attr}"
    return groups


def scale_vector_findings(scales: list[ScaleVectorFinding]) -> list[Finding]:
    """One warning for the learned scales still at their initial values while trainable, and
    one for those frozen there (a backbone frozen before it trained): by kind, not by name."""
    untrained = [s for s in scales if s.tracked and s.used_by_inference and s.unchanged_since_init]
    trainable = [s for s in untrained if s.trainable]
    frozen = [s for s in untrained if not s.trainable]
    out = []
    if trainable:
        out.append(
            Finding(
                "warning",
                _subject(trainable),
                "unchanged_since_init",
                f"{_kinds(trainable)} trainable but still hold exactly their initial values: "
                "they have not trained (not fitted yet, zero gradient, or a learning rate too "
                "small to move them).",
            )
        )
    if frozen:
        out.append(
            Finding(
                "warning",
                _subject(frozen),
                "frozen_at_init",
                f"{_kinds(frozen)} not trainable (their layer or model is frozen) and still hold "
                "exactly their initial values: nobody trained them, and the export ships those "
                "values (a backbone frozen before training, e.g. built with weights=None). Load "
                "trained weights before freezing it, or train it.",
            )
        )
    return out


def _subject(scales: list[ScaleVectorFinding]) -> str:
    return scales[0].name if len(scales) == 1 else f"{len(scales)} learned scales"


def _kinds(scales: list[ScaleVectorFinding]) -> str:
    """`18 learned scale vectors (LayerScale.gamma x18, initial value 1e-06) are`."""
    by_group: dict[str, list[ScaleVectorFinding]] = {}
    for s in scales:
        by_group.setdefault(s.group, []).append(s)
    parts = []
    for group, members in by_group.items():
        values = {m.initial_value for m in members}
        value = (
            f", initial value {values.pop():g}" if len(values) == 1 and None not in values else ""
        )
        parts.append(f"{group} x{len(members)}{value}")
    one = len(scales) == 1
    noun = "learned scale vector" if one else "learned scale vectors"
    return f"{len(scales)} {noun} ({'; '.join(parts)}) {'is' if one else 'are'}"
