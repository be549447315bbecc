"""SavedModel warmup (`saved_model_warmup_util.cc`): replay the version's logged requests once
at load time; any failure fails the load, as in TF Serving."""

from __future__ import annotations

import logging
import os
import time

import grpc
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from serving import inference, metrics, tf_internals
from serving.constants import MAX_WARMUP_RECORDS, WARMUP_FILE
from serving.errors import ServingError, code_from_number, invalid_argument
from serving.servable import Servable

log = logging.getLogger(__name__)


def _replay(servable: Servable, record: prediction_log_pb2.PredictionLog) -> None:
    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        inference.predict(servable, record.predict_log.request)
    elif kind == "classify_log":
        inference.classify(servable, record.classify_log.request)
    elif kind == "regress_log":
        inference.regress(servable, record.regress_log.request)
    elif kind == "multi_inference_log":
        inference.multi_inference(servable, record.multi_inference_log.request)
    else:
        number = (
            prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name[kind].number if kind else 0
        )
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}"
        )


def run_warmup(servable: Servable, iterations: int = 1) -> int:
    """Replays `assets.extra/tf_serving_warmup_requests`; returns the number of records read."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        log.info("No warmup data file found at %s", path)
        return 0
    start = time.monotonic()
    count = 0
    status = "OK"
    with (
        tf_internals.silence_deprecation()
    ):  # the TF1 reader yields raw records, no eager tensors needed
        records = tf.compat.v1.io.tf_record_iterator(path)
    try:
        for raw in records:
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise invalid_argument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
            try:
                record = prediction_log_pb2.PredictionLog.FromString(raw)
            except DecodeError:
                raise invalid_argument(
                    f"Failed to parse warmup record: {raw!r} from {path}"
                ) from None
            for _ in range(iterations):
                _replay(servable, record)
    except tf.errors.OpError as e:
        status = code_from_number(e.error_code).name
        raise ServingError(
            code_from_number(e.error_code),
            f"{e.message}. Please verify your warmup data is in TFRecord format.",
        ) from e
    except ServingError as e:
        status = e.code.name
        raise
    finally:
        metrics.record_warmup(servable.path, status, time.monotonic() - start, count)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        count,
        int((time.monotonic() - start) * 1e6),
    )
    return count
