"""Write a frozen graph as a TF Serving SavedModel: tag `serve`, signature `serving_default`.

One writer for every export: the MetaGraphDef TF Serving loads into a Session is assembled
directly from the frozen GraphDef (nothing is re-imported into a `tf.Graph`, so a model's
weights are not copied again): its signature maps the model's input/output names to graph
tensors, `saved_model_main_op` initialises the lookup tables, each vocabulary file is copied
into `assets/` with an `AssetFileDef` (the loader feeds its path to the table initialiser),
and default-valued attrs are stripped as the TF1 Builder does. `variables/` is empty when
everything was frozen; past `max_frozen_bytes` it holds the read-only large weights, restored
by the MetaGraph's `saver_def` (`savedmodel/variables.py`). Scalars and small tensors are
Consts either way.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from exporter import tf_internals
from exporter.freeze.frozen_graph import FrozenGraph
from exporter.freeze.tables import FrozenTable, input_vocabularies
from exporter.savedmodel.variables import (
    VARIABLES_DIR,
    WeightsProgress,
    graph_with_variables,
    write_variables,
)
from exporter.verify.sample_inputs import random_inputs
from serving.constants import DEFAULT_SIGNATURE, SERVING_TAG, WARMUP_FILE

ASSETS_DIR = "assets"
MAIN_OP_KEY = "saved_model_main_op"  # tf.saved_model's constants.MAIN_OP_KEY, loader.cc's


def _tensor_info(name: str, spec: tf.TensorSpec) -> meta_graph_pb2.TensorInfo:
    return meta_graph_pb2.TensorInfo(
        name=name, dtype=spec.dtype.as_datatype_enum, tensor_shape=spec.shape.as_proto()
    )


def copy_assets(tables: list[FrozenTable], export_dir: Path) -> list[meta_graph_pb2.AssetFileDef]:
    """Copy every table's vocabulary file into `assets/`; one AssetFileDef per table.

    Names are the files' basenames; two different files with one basename get `NAME_1`, ...,
    as the TF1 Builder names them (builder_impl.get_asset_filename_to_add).
    """
    copied: dict[str, str] = {}  # asset name -> source path
    defs = []
    for table in tables:
        if table.asset_path is None:
            continue
        source = table.asset_path
        name, n = Path(source).name, 0
        while name in copied and not (
            copied[name] == source or filecmp.cmp(copied[name], source, shallow=False)
        ):
            n += 1
            name = f"{Path(source).name}_{n}"
        if name not in copied:
            (export_dir / ASSETS_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, export_dir / ASSETS_DIR / name)
            copied[name] = source
        asset = meta_graph_pb2.AssetFileDef(filename=name)
        asset.tensor_info.name = f"{table.node_name}/asset_path:0"
        defs.append(asset)
    return defs


def meta_graph_def(
    frozen: FrozenGraph,
    graph_def: Any,
    saver_def: Any = None,
    assets: list[meta_graph_pb2.AssetFileDef] = (),  # type: ignore[assignment]
) -> meta_graph_pb2.MetaGraphDef:
    """The `serve` MetaGraphDef TF Serving loads: graph, signature, main_op, assets, saver."""
    meta = meta_graph_pb2.MetaGraphDef()
    meta.meta_info_def.tags.append(SERVING_TAG)
    meta.meta_info_def.tensorflow_version = tf.__version__
    meta.meta_info_def.tensorflow_git_version = tf.__git_version__
    meta.meta_info_def.stripped_op_list.CopyFrom(tf_internals.stripped_op_list(graph_def))
    meta.graph_def.CopyFrom(graph_def)
    # As the TF1 Builder's strip_default_attrs: an older TF Serving rejects attrs it does not
    # know (e.g. VarHandleOp's debug_name), and default-valued ones need not be written.
    tf_internals.strip_default_attrs(meta)
    if saver_def is not None:
        meta.saver_def.CopyFrom(saver_def)
    if frozen.init_op:  # the lookup tables' initialiser, run by the loader after restore
        meta.collection_def[MAIN_OP_KEY].node_list.value.append(frozen.init_op)
    meta.asset_file_def.extend(assets)
    signature = meta.signature_def[DEFAULT_SIGNATURE]
    signature.method_name = tf.compat.v1.saved_model.signature_constants.PREDICT_METHOD_NAME
    for key, tensor in frozen.inputs.items():
        signature.inputs[key].CopyFrom(_tensor_info(tensor, frozen.input_specs[key]))
    for key, tensor in frozen.outputs.items():
        signature.outputs[key].CopyFrom(_tensor_info(tensor, frozen.output_specs[key]))
    return meta


def _write_warmup(
    frozen: FrozenGraph, export_dir: Path, model_name: str, count: int, int_high: int
) -> None:
    """TFRecord of PredictionLog records, as TF Serving reads from assets.extra/ at load."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = export_dir / WARMUP_FILE
    vocabularies = input_vocabularies(frozen.graph_def, frozen.inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=DEFAULT_SIGNATURE)
            )
            for key, array in random_inputs(
                frozen.input_specs, batch=1, seed=i, int_high=int_high, vocabularies=vocabularies
            ).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(array)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def write_savedmodel(
    frozen: FrozenGraph,
    export_dir: Path,
    *,
    model_name: str,
    warmup_requests: int = 0,
    int_high: int = 10,
    progress: WeightsProgress | None = None,
) -> dict[str, Any]:
    """Write `frozen` as a SavedModel into the empty or absent directory `export_dir`.

    Publishing (atomic rename to the version directory) is the caller's job, so that a
    SavedModel and its ONNX twin are only published once both are valid. Warmup records
    draw integer inputs from [0, int_high) so they stay inside embedding vocabularies.
    Returns the read-only variables' proof ({} when fully frozen).
    """
    graph_def, saver_def = frozen.graph_def, None
    if frozen.lifted:
        graph_def, saver_def = graph_with_variables(frozen)
    (export_dir / VARIABLES_DIR).mkdir(parents=True, exist_ok=True)
    assets = copy_assets(frozen.tables, export_dir)
    saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    saved_model.meta_graphs.add().CopyFrom(meta_graph_def(frozen, graph_def, saver_def, assets))
    # Deterministic: map fields (signatures, attrs) in key order, so the same model gives the same
    # bytes and the report's digest can say "identical to version N".
    (export_dir / "saved_model.pb").write_bytes(saved_model.SerializeToString(deterministic=True))
    proof = write_variables(frozen, export_dir, saver_def, progress) if frozen.lifted else {}
    if warmup_requests:
        _write_warmup(frozen, export_dir, model_name, warmup_requests, int_high)
    return proof
