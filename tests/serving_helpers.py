"""What the in-process serving tests share: model builders, atomic publish, and a server on
free 127.0.0.1 ports with stubs (test_server_core, test_batching, test_operator_faults,
test_reliability_swap)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.server import RunningServer, parse_args, start_server

v1 = tf.compat.v1
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
ONES = np.ones((2, 3), np.float32)


def build_frozen(path: Path, offset: float) -> Path:
    """y = x @ [1,2,3] + offset (x: float [-1,3]), plus tf.Example classify/regress signatures."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        y = tf.add(tf.matmul(x, tf.constant([[1.0], [2.0], [3.0]])), offset, name="y")
        serialized = v1.placeholder(tf.string, [None], name="examples")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([3], tf.float32)})
        ey = tf.matmul(parsed["x"], tf.constant([[1.0], [2.0], [3.0]])) + offset
        scores = tf.concat([ey, -ey], axis=1, name="scores")
        classes = tf.tile(tf.constant([[b"pos", b"neg"]]), [tf.shape(ey)[0], 1], name="classes")
        builder = v1.saved_model.Builder(str(path))
        sigs = v1.saved_model.signature_def_utils
        builder.add_meta_graph_and_variables(
            sess,
            ["serve"],
            signature_def_map={
                "serving_default": sigs.predict_signature_def({"x": x}, {"y": y}),
                "classify": sigs.classification_signature_def(serialized, classes, scores),
                "regress": sigs.regression_signature_def(serialized, ey),
            },
        )
        builder.save()
    return path


def build_keras(path: Path) -> Path:
    """A Keras 3 model exported with its own `model.export` (a non-frozen TF2 SavedModel)."""
    import keras

    model = keras.Sequential([keras.Input((3,), name="feat"), keras.layers.Dense(2, name="out")])
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def build_onnx(path: Path) -> Path:
    """A tiny graph converted by tf2onnx: y = x @ [1,2,3] + 0.5."""
    import tf2onnx

    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        tf.add(tf.matmul(x, tf.constant([[1.0], [2.0], [3.0]])), 0.5, name="y")
    model, _ = tf2onnx.convert.from_graph_def(
        graph.as_graph_def(), input_names=["x:0"], output_names=["y:0"], opset=13
    )
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(model.SerializeToString())
    return path


def publish(src: Path, base: Path, version: int) -> Path:
    """Atomic publish: copy beside the target as `.tmp-N`, then rename to `N`."""
    tmp = base / f".tmp-{version}"
    shutil.copytree(src, tmp)
    target = base / str(version)
    os.rename(tmp, target)
    return target


def tensor(array: np.ndarray) -> object:
    return tf.make_tensor_proto(array)


def predict_request(model: str, x: np.ndarray, **spec: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value  # type: ignore[assignment]
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tensor(x))
    return request


@dataclass
class Client:
    """Stubs on one in-process server."""

    server: RunningServer
    channel: grpc.Channel

    @property
    def predict(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    @property
    def models(self) -> model_service_pb2_grpc.ModelServiceStub:
        return model_service_pb2_grpc.ModelServiceStub(self.channel)

    def status(self, name: str) -> dict[int, tuple[int, int]]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        response = self.models.GetModelStatus(request, timeout=10)
        return {s.version: (s.state, s.status.error_code) for s in response.model_version_status}


@contextmanager
def running(*flags: str) -> Iterator[Client]:
    """An in-process server on a free port (REST off); stopped on exit."""
    server = start_server(parse_args(["--port=0", "--rest_api_port=0", *flags]))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield Client(server, channel)
    finally:
        channel.close()
        server.stop(grace_s=1.0)


def rpc_error(call: object, request: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)  # type: ignore[operator]
    return info.value.code(), info.value.details()
