"""Convert a frozen graph to ONNX with tf2onnx, then gate it on onnx.checker and ORT.

The frozen GraphDef is converted directly (no second trace of the model), input and output
tensors are renamed to the SavedModel's signature keys, and the file is only published if
`onnx.checker.check_model(full_check=True)` accepts it and ONNX Runtime can load it:
tf2onnx can emit files that either would refuse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
from onnx import helper, numpy_helper

from exporter.errors import ExportError, UsageError
from exporter.freeze.frozen_graph import FrozenGraph
from exporter.freeze.tables import init_node_names
from exporter.onnx_format.external import BytesProgress, WeightSource, inline, stream_external
from exporter.onnx_format.graph_rewrite import (
    RewriteSummary,
    rewrite_for_onnx,
    unconvertible_message,
    unconvertible_ops,
    unfaithful_message,
    unfaithful_ops,
)
from exporter.onnx_format.tables import (
    TableHandlers,
    complete_output_shapes,
    custom_op_library,
    drop_unused_custom_domain,
    extra_opsets,
    pin_string_normalizer_locale,
    string_equal_as_label_encoder,
)
from serving.constants import PROTOBUF_LIMIT
from serving.ort_extensions import session_options

MAX_OPSET = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
DEFAULT_OPSET = 17
MODEL_FILE = "model.onnx"
EXTERNAL_DATA_HEADROOM = 64 * 2**20  # graph structure beside the weights
BATCH_DIM = "batch"
EXTERNAL_MIN_BYTES = 1024  # onnx.save_model's size_threshold: smaller tensors stay inline
# Variable constants with at least this many elements bypass tf2onnx (see _convert).
WEIGHT_PLACEHOLDER_MIN_SIZE = 1024


@dataclass(frozen=True)
class OnnxArtifact:
    """The published ONNX file and what became of each frozen scalar (and learned scale) in it.

    `initializers` holds the one-element initializers and those of the element counts the
    caller asked for (`write_onnx(proof_sizes=...)`), read from external data if need be."""

    filename: str
    opset: int
    external_data: bool
    initializers: dict[str, np.ndarray] = field(repr=False)
    session: ort.InferenceSession = field(repr=False, compare=False)  # the one that loaded it
    custom_op_library: str | None = None  # what ORT must load (onnxruntime_extensions)
    rewrites: dict[str, int] = field(default_factory=dict)  # op -> nodes rewritten

    def initializer_for(self, const_node: str) -> str | None:
        """The initializer tf2onnx made from a Const node, or None if it was folded away.

        tf2onnx drops the Identity that replaced `ReadVariableOp`, and names the initializer
        after either the Const itself or that read (`.../ReadVariableOp:0`).
        """
        names = (f"{const_node}:0", f"{const_node.removesuffix('/resource')}:0")
        return next((n for n in names if n in self.initializers), None)

    def holding(self, const_node: str, value: np.ndarray) -> tuple[str, bool] | None:
        """An initializer holding exactly `value`'s bytes: (name, True) when it is the one
        made from `const_node`, else (name, False) for one tf2onnx made from an equal constant
        (it shares identical constants and folds a Reshape of one into a new initializer)."""
        same = self.initializer_for(const_node)
        if same is not None and _same_bytes(self.initializers[same], value):
            return same, True
        for name, array in self.initializers.items():
            if _same_bytes(array, value):
                return name, False
        return None


def _same_bytes(array: np.ndarray, value: np.ndarray) -> bool:
    return (
        array.dtype == value.dtype
        and array.size == value.size
        and (array.tobytes() == np.ascontiguousarray(value).tobytes())
    )


def check_opset(opset: int | None) -> int:
    """The opset to use, or a UsageError naming the supported range."""
    if opset is None:
        return DEFAULT_OPSET
    if not 7 <= opset <= MAX_OPSET:
        raise UsageError(
            f"--opset={opset} is not supported: tf2onnx {tf2onnx.__version__} emits opsets "
            f"7..{MAX_OPSET}. Pass --opset {MAX_OPSET} or lower (default {DEFAULT_OPSET})."
        )
    return opset


def _weights_as_placeholders(frozen: FrozenGraph) -> tuple[Any, WeightSource, dict[str, int]]:
    """A copy of the graph whose weights are Placeholders, plus where to read each value.

    tf2onnx copies every constant many times while converting (about 30x the weights' size
    in peak memory, and most of its run time). Weights that came from variables are only
    ever fed to ops, never folded into shapes, so tf2onnx can convert them as graph inputs;
    `_restore_weights` turns those inputs back into initializers holding the exact values.
    Lifted weights (still variables) become Placeholders too, their reads Identities (or
    GatherV2 for a ResourceGather); their values are read from the live variables only when
    written.
    """
    weights: dict[str, Any] = {
        c.node_name: (lambda value=c.value: value)
        for c in frozen.consts
        if c.value.size >= WEIGHT_PLACEHOLDER_MIN_SIZE
    }
    sizes = {
        c.node_name: c.value.nbytes
        for c in frozen.consts
        if c.value.size >= WEIGHT_PLACEHOLDER_MIN_SIZE
    }
    specs = {c.node_name: (c.value.dtype, c.value.shape) for c in frozen.consts}
    for lifted in frozen.lifted:
        weights[lifted.node_name] = lifted.view
        sizes[lifted.node_name] = lifted.nbytes
        specs[lifted.node_name] = (np.dtype(lifted.dtype), lifted.shape)
    lifted_nodes = {v.node_name for v in frozen.lifted}
    graph_def = tf.compat.v1.GraphDef()
    graph_def.versions.CopyFrom(frozen.graph_def.versions)
    graph_def.library.CopyFrom(frozen.graph_def.library)
    for node in frozen.graph_def.node:
        if node.name in weights:
            dtype, shape = specs[node.name]
            placeholder = graph_def.node.add(name=node.name, op="Placeholder")
            placeholder.attr["dtype"].type = tf.as_dtype(dtype).as_datatype_enum
            placeholder.attr["shape"].shape.CopyFrom(tf.TensorShape(shape).as_proto())
        elif node.op == "ReadVariableOp" and node.input[0] in lifted_nodes:
            read = graph_def.node.add(name=node.name, op="Identity", input=node.input)
            read.attr["T"].CopyFrom(node.attr["dtype"])
        elif node.op == "ResourceGather" and node.input[0] in lifted_nodes:
            _gather(graph_def, node)
        else:
            graph_def.node.add().CopyFrom(node)
    return graph_def, weights, sizes


def _gather(graph_def: Any, node: Any) -> None:
    """ResourceGather(handle, ids) -> GatherV2(weights, ids, axis=0), as TF's own freeze does."""
    axis = graph_def.node.add(name=f"{node.name}/axis", op="Const")
    axis.attr["dtype"].CopyFrom(node.attr["Tindices"])
    axis.attr["value"].tensor.CopyFrom(
        tf.make_tensor_proto(0, dtype=tf.as_dtype(node.attr["Tindices"].type))
    )
    gather = graph_def.node.add(name=node.name, op="GatherV2", input=[*node.input[:2], axis.name])
    gather.attr["Tparams"].CopyFrom(node.attr["dtype"])
    gather.attr["Tindices"].CopyFrom(node.attr["Tindices"])
    gather.attr["Taxis"].CopyFrom(node.attr["Tindices"])


def _restore_weights(
    model: onnx.ModelProto,
    weights: WeightSource,
    sizes: dict[str, int],
    export_dir: Path | None,
    progress: BytesProgress | None,
) -> None:
    """Turn the weight inputs of `model` back into initializers with the exact values.

    With `export_dir`, the values are streamed to its external-data file (with tf2onnx's own
    initializers of 1 KiB or more, as onnx.save_model's external data would); else inline.
    """
    names = {f"{node}:0": node for node in weights}
    kept = [i for i in model.graph.input if i.name not in names]
    restored = {i.name: weights[names[i.name]] for i in model.graph.input if i.name in names}
    del model.graph.input[:]
    model.graph.input.extend(kept)
    if export_dir is None:
        model.graph.initializer.extend(inline(restored))
        return
    restored_sizes = {name: sizes[names[name]] for name in restored}
    own = [i for i in model.graph.initializer if _external(i)]
    for init in own:
        restored[init.name] = lambda init=init: numpy_helper.to_array(init)
        restored_sizes[init.name] = _nbytes(init)
    external = stream_external(restored, restored_sizes, export_dir, progress)
    inline_rest = [i for i in model.graph.initializer if not _external(i)]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*inline_rest, *external])


def _nbytes(init: onnx.TensorProto) -> int:
    itemsize = helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return int(np.prod(init.dims)) * itemsize


def _external(init: onnx.TensorProto) -> bool:
    """Numeric tensors of EXTERNAL_MIN_BYTES or more go to the external-data file."""
    return init.data_type != onnx.TensorProto.STRING and _nbytes(init) >= EXTERNAL_MIN_BYTES


def _for_tf2onnx(graph_def: Any) -> tuple[Any, RewriteSummary]:
    """The graph tf2onnx converts: table init ops dropped, `REWRITES` applied (calls inlined)."""
    dropped = init_node_names(graph_def)
    converted = tf.compat.v1.GraphDef()
    converted.versions.CopyFrom(graph_def.versions)
    converted.library.CopyFrom(graph_def.library)
    converted.node.extend(n for n in graph_def.node if n.name not in dropped)
    return converted, rewrite_for_onnx(converted)


def _convert(
    frozen: FrozenGraph,
    opset: int,
    external_dir: Path | None,
    progress: BytesProgress | None,
    layer_names: tuple[str, ...],
) -> tuple[onnx.ModelProto, dict[str, int]]:
    renames = {t: k for k, t in {**frozen.inputs, **frozen.outputs}.items()}
    graph_def, weights, sizes = _weights_as_placeholders(frozen)
    graph_def, summary = _for_tf2onnx(graph_def)
    unfaithful = unfaithful_ops(graph_def)
    if unfaithful:
        raise ExportError(unfaithful_message(unfaithful, layer_names))
    handlers = TableHandlers({t.node_name: t for t in frozen.tables}).handlers()
    # tf2onnx logs every node at INFO; keep our progress output readable.
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            input_names=[*frozen.inputs.values(), *(f"{n}:0" for n in weights)],
            output_names=list(frozen.outputs.values()),
            opset=opset,
            tensors_to_rename=renames,
            custom_op_handlers=handlers or None,
            extra_opset=extra_opsets(graph_def),
        )
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ExportError(f"tf2onnx could not convert the frozen graph: {exc}") from exc
    del graph_def
    left = unconvertible_ops(model)
    if left:
        raise ExportError(unconvertible_message(left, layer_names, summary.not_inlined))
    string_equal_as_label_encoder(model)
    drop_unused_custom_domain(model)
    pin_string_normalizer_locale(model)
    _restore_weights(model, weights, sizes, external_dir, progress)
    complete_output_shapes(model)
    for value_info in [*model.graph.input, *model.graph.output]:
        dims = value_info.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    return model, summary.to_dict()


def _validate(model: onnx.ModelProto, frozen: FrozenGraph, path: Path) -> ort.InferenceSession:
    """Gate on names, onnx.checker and an ORT load; return the session that proved it."""
    inputs = [i.name for i in model.graph.input]
    if sorted(inputs) != sorted(frozen.inputs):
        raise ExportError(
            f"ONNX graph inputs {inputs} differ from the data inputs {list(frozen.inputs)}: "
            "a variable leaked into the graph as an input."
        )
    outputs = sorted(o.name for o in model.graph.output)
    if outputs != sorted(frozen.outputs):
        raise ExportError(f"ONNX graph outputs {outputs} differ from {sorted(frozen.outputs)}.")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the converted model: {exc}") from exc
    try:
        return ort.InferenceSession(
            str(path),
            session_options(custom_op_library(model)),
            providers=["CPUExecutionProvider"],
        )
    except (RuntimeError, ValueError) as exc:
        unsupported = sorted(
            {n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")}
        )
        hint = f" Unconverted ops: {unsupported}." if unsupported else ""
        raise ExportError(f"ONNX Runtime cannot load the converted model: {exc}.{hint}") from exc


def write_onnx(
    frozen: FrozenGraph,
    export_dir: Path,
    *,
    opset: int | None = None,
    progress: BytesProgress | None = None,
    layer_names: tuple[str, ...] = (),
    proof_sizes: frozenset[int] = frozenset(),
) -> OnnxArtifact:
    """Convert and validate `frozen`, writing `export_dir/model.onnx` (+ external data).

    Weights go to `model.onnx.data` when any stayed a variable (past max_frozen_bytes) or
    they pass protobuf's 2 GiB; they are streamed there, never held in the proto.
    Publishing the directory atomically is the caller's job (see `exporter.publish`).
    `layer_names` let an unconvertible op be reported with the Keras layer that made it;
    initializers of `proof_sizes` elements are read back for the report's proof.
    """
    opset = check_opset(opset)
    # ModelProto.ByteSize() itself fails past 2 GiB: decide from the weights we restore.
    external = bool(frozen.lifted) or (
        frozen.weights_bytes > PROTOBUF_LIMIT - EXTERNAL_DATA_HEADROOM
    )
    export_dir.mkdir(parents=True, exist_ok=True)
    model, rewrites = _convert(
        frozen, opset, export_dir if external else None, progress, layer_names
    )
    path = export_dir / MODEL_FILE
    onnx.save_model(model, str(path))
    session = _validate(model, frozen, path)
    initializers = {
        init.name: numpy_helper.to_array(init, base_dir=str(export_dir))
        for init in model.graph.initializer
        if np.prod(init.dims) <= 1 or int(np.prod(init.dims)) in proof_sizes
    }
    return OnnxArtifact(
        MODEL_FILE, opset, external, initializers, session, custom_op_library(model), rewrites
    )
