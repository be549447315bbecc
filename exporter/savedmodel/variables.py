"""Write a SavedModel whose large weights stay read-only variables, as TF Serving restores them.

TF Serving's TF1 loader (`tensorflow/cc/saved_model/loader.cc`) creates a Session from the
MetaGraph's GraphDef, then, when `variables/variables.index` exists, feeds the variables path
to `saver_def.filename_tensor_name` and runs `saver_def.restore_op_name` once; Python's
`tf.compat.v1.saved_model.loader.load` does the same. So the graph holds one `VarHandleOp` per
lifted weight (in place of the traced function's capture placeholder, so its reads are
unchanged), a `save/` scope with `RestoreV2` + `AssignVariableOp` (the only writers, run only by
the loader) and a `SaveV2` for `saver_def` completeness. The MetaGraph is assembled directly:
the weights are never imported into a `tf.Graph` nor held in a Session here; the checkpoint is
streamed from the live variables (`exporter.savedmodel.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2, saver_pb2
from tensorflow.python.framework import meta_graph

from exporter.errors import ExportError
from exporter.freeze.frozen_graph import FrozenGraph, _all_nodes
from exporter.freeze.lift import READ_OPS, LiftedVariable
from exporter.savedmodel.checkpoint import verify_checkpoint, write_checkpoint
from serving.constants import DEFAULT_SIGNATURE, SERVING_TAG

#: Ops that may hold a variable in the written graph: exactly one VarHandleOp per lifted weight.
_VARIABLE_CREATORS = frozenset({"VarHandleOp", "VariableV2", "Variable", "_VarHandlesOp"})

WeightsProgress = Callable[[str, int, int], None]  # stage label, bytes done, bytes total


def _scope(graph_def: Any) -> str:
    """`save`, or `save_N` when the model already uses that name."""
    names = {node.name.split("/")[0] for node in graph_def.node}
    scope, n = "save", 0
    while scope in names:
        n += 1
        scope = f"save_{n}"
    return scope


def _saver_graph(lifted: list[LiftedVariable], scope: str) -> tuple[Any, saver_pb2.SaverDef]:
    """VarHandleOps named as the capture placeholders, plus the save/restore ops over them."""
    graph = tf.Graph()
    with graph.as_default():
        handles = [
            tf.raw_ops.VarHandleOp(
                dtype=tf.as_dtype(v.dtype), shape=v.shape, shared_name=v.key, name=v.node_name
            )
            for v in lifted
        ]
        with tf.name_scope(scope):
            filename = tf.constant("model", name="Const")
            names = tf.constant([v.key for v in lifted], name="tensor_names")
            slices = tf.constant([""] * len(lifted), name="shape_and_slices")
            reads = [
                tf.raw_ops.ReadVariableOp(resource=h, dtype=tf.as_dtype(v.dtype))
                for h, v in zip(handles, lifted, strict=True)
            ]
            save = tf.raw_ops.SaveV2(
                prefix=filename, tensor_names=names, shape_and_slices=slices, tensors=reads
            )
            with tf.control_dependencies([save]):
                saved = tf.identity(filename, name="control_dependency")
            restored = tf.raw_ops.RestoreV2(
                prefix=filename,
                tensor_names=names,
                shape_and_slices=slices,
                dtypes=[tf.as_dtype(v.dtype) for v in lifted],
            )
            assigns = [
                tf.raw_ops.AssignVariableOp(resource=h, value=value)
                for h, value in zip(handles, restored, strict=True)
            ]
            restore_all = tf.group(*assigns, name="restore_all")
    saver_def = saver_pb2.SaverDef(
        filename_tensor_name=filename.name,
        save_tensor_name=saved.name,
        restore_op_name=restore_all.name,
        max_to_keep=5,
        keep_checkpoint_every_n_hours=10000.0,
        version=saver_pb2.SaverDef.V2,
    )
    return graph.as_graph_def(), saver_def


def _graph_def(frozen: FrozenGraph, scope: str) -> tuple[Any, saver_pb2.SaverDef]:
    saver_nodes, saver_def = _saver_graph(frozen.lifted, scope)
    handles = {n.name: n for n in saver_nodes.node if n.op == "VarHandleOp"}
    graph_def = tf.compat.v1.GraphDef()
    graph_def.versions.CopyFrom(frozen.graph_def.versions)
    graph_def.library.CopyFrom(frozen.graph_def.library)
    for node in frozen.graph_def.node:
        graph_def.node.add().CopyFrom(handles.get(node.name, node))
    graph_def.node.extend(n for n in saver_nodes.node if n.name not in handles)
    return graph_def, saver_def


def check_read_only(graph_def: Any, lifted: list[LiftedVariable], scope: str) -> list[str]:
    """Why a lifted weight could be written, or which other variable exists ([] = read-only).

    Allowed: ReadVariableOps / ResourceGathers at top level, and one AssignVariableOp per
    weight in the saver scope fed by its RestoreV2 (what the loader runs once). Any other
    consumer of a handle, any other variable (an optimizer slot, a step counter), or any of
    them inside the function library, is a violation.
    """
    handles = {v.node_name for v in lifted}
    problems = []
    for where, node in _all_nodes(graph_def):
        if node.op in _VARIABLE_CREATORS and (where != "graph" or node.name not in handles):
            problems.append(f"{where}: {node.name} ({node.op}) is a variable that was not lifted")
        if where != "graph" or not any(i.split(":")[0] in handles for i in node.input):
            continue
        restoring = (
            node.op == "AssignVariableOp"
            and node.name.startswith(f"{scope}/")
            and node.input[1].split(":")[0] == f"{scope}/RestoreV2"
        )
        if node.op not in READ_OPS and not restoring:
            problems.append(f"{node.name} ({node.op}) can write or alias a read-only weight")
    return problems


def _tensor_info(name: str, spec: tf.TensorSpec) -> meta_graph_pb2.TensorInfo:
    return meta_graph_pb2.TensorInfo(
        name=name, dtype=spec.dtype.as_datatype_enum, tensor_shape=spec.shape.as_proto()
    )


def _meta_graph(frozen: FrozenGraph, graph_def: Any, saver_def: Any) -> Any:
    meta = meta_graph_pb2.MetaGraphDef()
    meta.meta_info_def.tags.append(SERVING_TAG)
    meta.meta_info_def.tensorflow_version = tf.__version__
    meta.meta_info_def.tensorflow_git_version = tf.__git_version__
    meta.meta_info_def.stripped_op_list.CopyFrom(meta_graph.stripped_op_list_for_graph(graph_def))
    meta.graph_def.CopyFrom(graph_def)
    # As the TF1 Builder's strip_default_attrs: an older TF Serving rejects attrs it does not
    # know (e.g. VarHandleOp's debug_name), and default-valued ones need not be written.
    meta_graph.strip_graph_default_valued_attrs(meta)
    meta.saver_def.CopyFrom(saver_def)
    if frozen.init_op:  # the lookup tables' initialiser, run by the loader after restore
        meta.collection_def["saved_model_main_op"].node_list.value.append(frozen.init_op)
    signature = meta.signature_def[DEFAULT_SIGNATURE]
    signature.method_name = tf.compat.v1.saved_model.signature_constants.PREDICT_METHOD_NAME
    for key, tensor in frozen.inputs.items():
        signature.inputs[key].CopyFrom(_tensor_info(tensor, frozen.input_specs[key]))
    for key, tensor in frozen.outputs.items():
        signature.outputs[key].CopyFrom(_tensor_info(tensor, frozen.output_specs[key]))
    return meta


def write_savedmodel_with_variables(
    frozen: FrozenGraph, export_dir: Path, progress: WeightsProgress | None = None
) -> dict[str, Any]:
    """Write saved_model.pb + variables/, prove the weights read-only and bit-exact.

    Returns the proof for the export report; raises ExportError when any part fails.
    """
    scope = _scope(frozen.graph_def)
    graph_def, saver_def = _graph_def(frozen, scope)
    problems = check_read_only(graph_def, frozen.lifted, scope)
    if problems:
        raise ExportError(
            f"Lifted weights would not be read-only: {problems[0]}"
            f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}. Raise "
            "--max-frozen-bytes so these tensors are frozen, or make call() stateless."
        )
    saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    saved_model.meta_graphs.add().CopyFrom(_meta_graph(frozen, graph_def, saver_def))
    export_dir.mkdir(parents=True, exist_ok=True)
    (export_dir / "saved_model.pb").write_bytes(saved_model.SerializeToString())

    def step(label: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(label, done, total)) if progress else None

    prefix = write_checkpoint(frozen.lifted, export_dir, step("savedmodel: variables written"))
    exact = verify_checkpoint(prefix, frozen.lifted, step("savedmodel: variables verified"))
    wrong = sorted(key for key, ok in exact.items() if not ok)
    if wrong:
        raise ExportError(
            f"The variables checkpoint does not hold the trained bytes of {wrong[:3]}: the "
            "written SavedModel would serve other weights. Re-run the export; if it repeats, "
            "check the disk under --out."
        )
    return {
        "path": f"variables/{Path(prefix).name}",
        "restore_op": saver_def.restore_op_name,
        "writers": f"only {scope}/restore_all's AssignVariableOps (run once, by the loader)",
        "bit_exact": exact,
    }
