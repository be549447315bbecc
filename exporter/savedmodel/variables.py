"""Large weights that stay read-only variables: the graph that holds them, its checkpoint.

TF Serving's TF1 loader (`tensorflow/cc/saved_model/loader.cc`) creates a Session from the
MetaGraph's GraphDef, then, when `variables/variables.index` exists, feeds the variables path
to `saver_def.filename_tensor_name` and runs `saver_def.restore_op_name` once; Python's
`tf.compat.v1.saved_model.loader.load` does the same. So the graph holds one `VarHandleOp` per
lifted weight (in place of the traced function's capture placeholder, so its reads are
unchanged), a `save/` scope with `RestoreV2` + `AssignVariableOp` (the only writers, run only by
the loader) and a `SaveV2` for `saver_def` completeness. The weights are never imported into a
`tf.Graph` nor held in a Session here.

The checkpoint is the standard V2 bundle TF Serving restores (`variables/variables.index` +
`variables.data-?????-of-?????`). Each shard is written by `SaveV2` straight from the live
variables (an eager read aliases the variable's buffer: no copy), then the shards are merged
into the final prefix, so progress can be reported shard by shard. The proof reads each tensor
back from the finished checkpoint, one at a time, and compares its bytes with the variable's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saver_pb2

from exporter.errors import ExportError
from exporter.freeze.frozen_graph import FrozenGraph, _all_nodes
from exporter.freeze.lift import READ_OPS, LiftedVariable

#: Ops that may hold a variable in the written graph: exactly one VarHandleOp per lifted weight.
_VARIABLE_CREATORS = frozenset({"VarHandleOp", "VariableV2", "Variable", "_VarHandlesOp"})

WeightsProgress = Callable[[str, int, int], None]  # stage label, bytes done, bytes total
#: (bytes done, bytes total) after each step of a long write.
BytesProgress = Callable[[int, int], None]

VARIABLES_DIR = "variables"
VARIABLES_PREFIX = "variables"  # TF Serving's kSavedModelVariablesFilename
SHARD_BYTES = 256 * 2**20  # one SaveV2 call per ~256 MiB: a progress step, no copy
_COMPARE_CHUNK = 16 * 2**20


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


def graph_with_variables(frozen: FrozenGraph) -> tuple[Any, saver_pb2.SaverDef]:
    """The frozen graph with a VarHandleOp per lifted weight and the saver's scope, refused
    (ExportError) unless every lifted weight is read-only in it."""
    scope = _scope(frozen.graph_def)
    saver_nodes, saver_def = _saver_graph(frozen.lifted, scope)
    handles = {n.name: n for n in saver_nodes.node if n.op == "VarHandleOp"}
    graph_def = tf.compat.v1.GraphDef()
    graph_def.versions.CopyFrom(frozen.graph_def.versions)
    graph_def.library.CopyFrom(frozen.graph_def.library)
    for node in frozen.graph_def.node:
        graph_def.node.add().CopyFrom(handles.get(node.name, node))
    graph_def.node.extend(n for n in saver_nodes.node if n.name not in handles)
    problems = check_read_only(graph_def, frozen.lifted, scope)
    if problems:
        raise ExportError(
            f"Lifted weights would not be read-only: {problems[0]}"
            f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}. Raise "
            "--max-frozen-bytes so these tensors are frozen, or make call() stateless."
        )
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


def _shards(lifted: list[LiftedVariable]) -> list[list[LiftedVariable]]:
    """Consecutive groups of about SHARD_BYTES (a larger tensor is a shard of its own)."""
    shards: list[list[LiftedVariable]] = [[]]
    size = 0
    for variable in lifted:
        if shards[-1] and size + variable.nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(variable)
        size += variable.nbytes
    return shards


def write_checkpoint(
    lifted: list[LiftedVariable], export_dir: Path, progress: BytesProgress | None = None
) -> str:
    """Write every lifted variable under `export_dir/variables/`; return the prefix."""
    prefix = export_dir / VARIABLES_DIR / VARIABLES_PREFIX
    scratch = export_dir / VARIABLES_DIR / "tmp-shards"
    shards = _shards(lifted)
    total = sum(v.nbytes for v in lifted)
    done = 0
    parts = []
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for i, shard in enumerate(shards):
            part = str(scratch / f"part-{i:05d}-of-{len(shards):05d}")
            tf.raw_ops.SaveV2(
                prefix=part,
                tensor_names=[v.key for v in shard],
                shape_and_slices=[""] * len(shard),
                tensors=[v.variable.read_value() for v in shard],
            )
            parts.append(part)
            done += sum(v.nbytes for v in shard)
            if progress:
                progress(done, total)
        tf.raw_ops.MergeV2Checkpoints(
            checkpoint_prefixes=parts, destination_prefix=str(prefix), delete_old_dirs=True
        )
    except tf.errors.OpError as exc:
        raise ExportError(
            f"Writing the variables checkpoint under {prefix.parent} failed: {exc.message}. "
            "Check free disk space and permissions of --out."
        ) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return str(prefix)


def same_bytes(left: np.ndarray, right: np.ndarray) -> bool:
    """Bitwise equality (NaN payloads, -0.0 included), compared in chunks: no full-size temp."""
    if left.dtype != right.dtype or left.shape != right.shape:
        return False
    a = np.ascontiguousarray(left).reshape(-1).view(np.uint8)
    b = np.ascontiguousarray(right).reshape(-1).view(np.uint8)
    return all(
        np.array_equal(a[i : i + _COMPARE_CHUNK], b[i : i + _COMPARE_CHUNK])
        for i in range(0, a.size, _COMPARE_CHUNK)
    )


def verify_checkpoint(
    prefix: str, lifted: list[LiftedVariable], progress: BytesProgress | None = None
) -> dict[str, bool]:
    """Checkpoint key -> True when the checkpoint holds exactly the variable's bytes.

    Tensors are read back one at a time, so the check costs one tensor of memory at most.
    Keys present in the checkpoint but not lifted count as a failure under their own name:
    the checkpoint must hold nothing else (no optimizer slots, no stray state).
    """
    reader = tf.train.load_checkpoint(prefix)
    stored = reader.get_variable_to_dtype_map()
    result = {}
    total = sum(v.nbytes for v in lifted)
    done = 0
    for variable in lifted:
        if variable.key not in stored:
            result[variable.key] = False
            continue
        result[variable.key] = same_bytes(reader.get_tensor(variable.key), variable.view())
        done += variable.nbytes
        if progress:
            progress(done, total)
    for extra in sorted(set(stored) - {v.key for v in lifted}):
        result[extra] = False
    return result


def write_variables(
    frozen: FrozenGraph,
    export_dir: Path,
    saver_def: saver_pb2.SaverDef,
    progress: WeightsProgress | None = None,
) -> dict[str, Any]:
    """Write the lifted weights' checkpoint under `export_dir/variables/` and read it back
    bit-exact; return the proof for the export report (ExportError when a byte differs)."""

    def step(label: str) -> BytesProgress | None:
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
    scope = saver_def.restore_op_name.split("/")[0]
    return {
        "path": f"{VARIABLES_DIR}/{Path(prefix).name}",
        "restore_op": saver_def.restore_op_name,
        "writers": f"only {scope}/restore_all's AssignVariableOps (run once, by the loader)",
        "bit_exact": exact,
    }
