"""Any SavedModel TF Serving serves, not only this package's frozen ones (issue 12): TF1
`Builder` exports whose tables are initialised from asset files by `main_op` or
`legacy_init_op`, a TF2 `tf.saved_model.save` export with resource variables and several
signatures, Keras 3 `model.export()` and tf_keras `model.save(save_format="tf")`; all written here
with real TF and served through the official stubs. MultiInference runs the TF2 export's classify
and regress signatures, whose `inputs` placeholders have different tensor names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.server import parse_args, start_server

v1 = tf.compat.v1
VOCAB = ("apple", "banana", "cherry")
X = np.array([[0.5, -1.0, 2.0], [3.0, 0.25, -0.75]], np.float32)


def _tf1_table_model(path: Path, init: str) -> None:
    """string -> index through a table read from an asset file, plus a restored variable."""
    vocab = path.parent / f"vocab_{init}.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        asset = tf.constant(str(vocab), name="vocab_path")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset)
        table = v1.lookup.StaticHashTable(
            v1.lookup.TextFileInitializer(
                asset,
                tf.string,
                v1.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                v1.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
        words = v1.placeholder(tf.string, [None], name="words")
        offset = v1.get_variable("offset", initializer=tf.constant(100, tf.int64))
        ids = tf.add(table.lookup(words), offset, name="ids")
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(path))
        signature = v1.saved_model.predict_signature_def({"words": words}, {"ids": ids})
        init_op = v1.tables_initializer(name=f"{init}_tables")
        builder.add_meta_graph_and_variables(
            sess,
            ["serve"],
            signature_def_map={"serving_default": signature},
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            **{init: init_op},
        )
        builder.save()
    vocab.unlink()  # served from the SavedModel's assets/ copy only


class _Tf2Module(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable(2.0)  # a resource variable

    def _x(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * self.scale}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        x = self._x(inputs)
        return {
            "scores": tf.concat([x, self.scale - x], axis=1),
            "classes": tf.tile(tf.constant([["low", "high"]]), [tf.shape(x)[0], 1]),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self._x(inputs) * self.scale}


def _keras3(path: Path) -> np.ndarray:
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
    model.export(str(path), verbose=False)
    return np.asarray(model(X))


def _tf_keras(path: Path) -> np.ndarray:
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    model.save(str(path), save_format="tf")
    return np.asarray(model(X))


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Every kind under its own model name (version 1), plus a models.config for all."""
    root = tmp_path_factory.mktemp("kinds")
    for init in ("main_op", "legacy_init_op"):
        (root / f"tf1_{init}").mkdir()
        _tf1_table_model(root / f"tf1_{init}" / "1", init)
    module = _Tf2Module()
    tf.saved_model.save(
        module,
        str(root / "tf2" / "1"),
        signatures={
            "serving_default": module.predict,
            "classify": module.classify,
            "regress": module.regress,
        },
    )
    expected = {
        "keras3": _keras3(root / "keras3" / "1"),
        "tf_keras": _tf_keras(root / "tf_keras" / "1"),
    }
    names = ("tf1_main_op", "tf1_legacy_init_op", "tf2", "keras3", "tf_keras")
    (root / "models.config").write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n'
            for n in names
        )
        + "}\n"
    )
    return root, expected


@pytest.fixture(scope="module")
def stub(kinds: tuple[Path, dict[str, np.ndarray]]) -> Iterator[object]:
    root, _ = kinds
    config = root / "models.config"
    running = start_server(parse_args(["--port=0", f"--model_config_file={config}"]))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    finally:
        running.stop(grace_s=0)


def _predict(
    stub: object, model: str, inputs: dict[str, np.ndarray]
) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return stub.Predict(request, timeout=60)


def _only_input(stub: object, model: str) -> tuple[str, str]:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    (alias,) = signature.inputs
    (output,) = signature.outputs
    return alias, output


@pytest.mark.parametrize("model", ["tf1_main_op", "tf1_legacy_init_op"])
def test_tf1_builder_tables_from_assets(stub: object, model: str) -> None:
    words = np.array([b"cherry", b"apple", b"durian"], dtype=object)
    response = _predict(stub, model, {"words": words})
    assert list(response.outputs["ids"].int64_val) == [102, 100, 99]


def test_tf2_resource_variables_and_signatures(stub: object) -> None:
    response = _predict(stub, "tf2", {"x": np.array([1.5, -2.0], np.float32)})
    assert list(response.outputs["y"].float_val) == [3.0, -4.0]


@pytest.mark.parametrize("model", ["keras3", "tf_keras"])
def test_keras_exports(stub: object, model: str, kinds: tuple[Path, dict[str, np.ndarray]]) -> None:
    alias, output = _only_input(stub, model)
    response = _predict(stub, model, {alias: X})
    got = tf.make_ndarray(response.outputs[output])
    np.testing.assert_allclose(got, kinds[1][model], rtol=1e-6, atol=1e-6)


def _examples(values: list[float]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for value in values:
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(value)
        request.input.example_list.examples.append(example)
    return request


def test_multi_inference_signatures_with_different_input_tensors(stub: object) -> None:
    """TF Serving 2.4+: each signature's own `inputs` tensor is fed the same examples."""
    request = _examples([0.5, 1.5])
    for signature, method in (("classify", "classify"), ("regress", "regress")):
        task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name = "tf2"
        task.model_spec.signature_name = signature
    response = stub.MultiInference(request, timeout=60)
    classify, regress = response.results
    assert classify.model_spec.signature_name == "classify"
    rows = [
        [(c.label, c.score) for c in row.classes]
        for row in classify.classification_result.classifications
    ]
    assert rows == [[("low", 0.5), ("high", 1.5)], [("low", 1.5), ("high", 0.5)]]
    assert [r.value for r in regress.regression_result.regressions] == [1.0, 3.0]
    assert regress.model_spec.version.value == 1
