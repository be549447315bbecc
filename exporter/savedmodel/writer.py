"""Write a frozen graph as a TF Serving SavedModel: tag `serve`, signature `serving_default`.

The graph is written through the TF1 SavedModel builder, which is exactly what TF Serving
loads into a Session: a MetaGraphDef whose signature maps the model's input/output names to
graph tensors, and an empty `variables/` because nothing is left to restore. Past
`max_frozen_bytes` the large weights stay read-only variables in `variables/`
(`exporter.savedmodel.variables`); scalars and small tensors are Consts either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from exporter.freeze.frozen_graph import FrozenGraph
from exporter.freeze.tables import input_vocabularies, refuse_asset_tables, table_assets
from exporter.savedmodel.variables import WeightsProgress, write_savedmodel_with_variables
from exporter.verify.sample_inputs import random_inputs
from serving.constants import DEFAULT_SIGNATURE, SERVING_TAG, WARMUP_FILE


def _build(frozen: FrozenGraph, export_dir: Path) -> None:
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph_def, name="")
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
            inputs={k: info(graph.get_tensor_by_name(t)) for k, t in frozen.inputs.items()},
            outputs={k: info(graph.get_tensor_by_name(t)) for k, t in frozen.outputs.items()},
            method_name=tf.compat.v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        )
        assets = table_assets(graph, frozen.tables)
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                session,
                [SERVING_TAG],
                signature_def_map={DEFAULT_SIGNATURE: signature},
                strip_default_attrs=True,
                # Run once at load by TF Serving (loader.cc GetInitOp: the main_op collection).
                main_op=frozen.init_op and graph.get_operation_by_name(frozen.init_op),
                assets_collection=assets,
            )
            builder.save()


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
    proof = {}
    if frozen.lifted:
        refuse_asset_tables(frozen.tables)
        proof = write_savedmodel_with_variables(frozen, export_dir, progress)
    else:
        _build(frozen, export_dir)
    if warmup_requests:
        _write_warmup(frozen, export_dir, model_name, warmup_requests, int_high)
    return proof
