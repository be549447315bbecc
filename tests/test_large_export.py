"""Past --max-frozen-bytes: large tensors stay read-only variables, scalars stay Consts.

The threshold is lowered to a few KiB so a small model takes the large-model path end to end:
the SavedModel is served by the embedded server (gRPC Predict) and a TF1 Session, the big
tensors are read back from `variables/` bit for bit, and the ONNX weights stream into
`model.onnx.data` at aligned offsets that onnx.checker and ONNX Runtime accept.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from exporter import ExportOptions, export_model
from exporter.cli import main as cli_main
from exporter.freeze.frozen_graph import VARIABLE_OPS
from exporter.model.layers import Offset, Scale
from exporter.onnx_format.external import ALIGNMENT
from exporter.progress import ExportProgress
from exporter.verify.parity import savedmodel_runner
from serving.launch import start_server_process
from tests.conftest import REPO_ROOT

THRESHOLD = 32 * 1024  # bytes frozen at most: lifting the three big tensors below fits it
BIG = {"wide/kernel": (48, 256), "emb/embeddings": (300, 32), "lookup/table": (300, 32)}
STARTUP_TIMEOUT_S = 120.0


@keras.saving.register_keras_serializable(package="frozen_scalars_tests")
class Lookup(keras.layers.Layer):
    """`tf.gather` on the variable itself: a ResourceGather, as tf_keras' Embedding reads."""

    def build(self, input_shape: Any) -> None:
        self.table = self.add_weight(shape=(300, 32), name="table", initializer="normal")

    def call(self, ids: Any) -> Any:
        return tf.gather(self.table.value, ids)


def _model() -> keras.Model:
    """Embedding, a gather and a Dense big enough to be lifted, two trained scalars."""
    keras.utils.set_random_seed(7)
    ids = keras.Input((2,), dtype="int32", name="ids")
    features = keras.Input((16,), name="features")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(300, 32, name="emb")(ids))
    looked_up = keras.layers.Flatten()(Lookup(name="lookup")(ids))
    hidden = keras.layers.Concatenate()([embedded, looked_up, features])
    hidden = keras.layers.Dense(256, activation="relu", name="wide")(
        keras.layers.Dense(48, name="narrow")(hidden)
    )
    hidden = Offset(0.25, name="offset")(Scale(1.5, name="scale")(hidden))
    model = keras.Model([ids, features], keras.layers.Dense(2, name="y")(hidden))
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.fit(
        {"ids": rng.integers(0, 300, (64, 2)), "features": rng.normal(size=(64, 16))},
        rng.normal(size=(64, 2)),
        epochs=1,
        verbose=0,
    )
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Any, str]:
    out = tmp_path_factory.mktemp("large")
    model = _model()
    stream = io.StringIO()
    progress = ExportProgress(stream, min_bytes=0)
    report = export_model(
        model,
        out,
        "lifted",
        ExportOptions(
            max_frozen_bytes=THRESHOLD, progress=progress.stage, weights_progress=progress.weights
        ),
    )
    return model, report, stream.getvalue()


def _batch(n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {
        "ids": rng.integers(0, 300, (n, 2)).astype(np.int32),
        "features": rng.normal(size=(n, 16)).astype(np.float32),
    }


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: np.asarray(v) for v in model.weights}


def test_big_tensors_are_read_only_variables_with_exact_bytes(exported: tuple) -> None:
    model, report, _ = exported
    proof = report.freeze_proof
    assert proof["proven"] and report.passed
    kept = {v["name"]: v for v in proof["read_only_variables"]}
    assert set(kept) == set(BIG)
    for name, shape in BIG.items():
        assert kept[name]["shape"] == list(shape)
        assert kept[name]["bytes"] == int(np.prod(shape)) * 4
        assert kept[name]["checkpoint_bit_exact"] is True
    # The checkpoint holds exactly those tensors (no optimizer slots), with the trained bytes.
    reader = tf.train.load_checkpoint(str(report.savedmodel_dir / "variables" / "variables"))
    assert set(reader.get_variable_to_shape_map()) == set(BIG)
    trained = _weights(model)
    for name in BIG:
        assert reader.get_tensor(name).tobytes() == trained[name].tobytes()


def test_scalars_and_small_tensors_are_consts_and_nothing_writes_the_variables(
    exported: tuple,
) -> None:
    model, report, _ = exported
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((report.savedmodel_dir / "saved_model.pb").read_bytes())
    (meta,) = proto.meta_graphs
    nodes = {n.name: n for n in meta.graph_def.node}
    handles = {n.name for n in nodes.values() if n.op == "VarHandleOp"}
    assert {nodes[h].attr["shared_name"].s.decode() for h in handles} == set(BIG)
    reads = {"ReadVariableOp", "ResourceGather"}
    assert any(n.op == "ResourceGather" and n.input[0] in handles for n in nodes.values())
    writers = [n for n in nodes.values() if n.op not in reads and set(n.input) & handles]
    assert writers and all(
        n.op == "AssignVariableOp" and n.input[1].startswith("save/RestoreV2") for n in writers
    )
    assert meta.saver_def.restore_op_name == "save/restore_all"
    library_ops = {n.op for f in meta.graph_def.library.function for n in f.node_def}
    assert not library_ops & VARIABLE_OPS
    trained = _weights(model)
    for scalar in ("scale/scale", "offset/offset"):
        row = next(s for s in report.scalars if s["name"] == scalar)
        const = nodes[row["savedmodel_const"]]
        assert const.op == "Const"
        assert tf.make_ndarray(const.attr["value"].tensor).tobytes() == trained[scalar].tobytes()
    # Small tensors (the narrow kernel, every bias) are Consts too.
    consts = {c["variable"] for c in report.freeze_proof["constants"]}
    assert {"narrow/kernel", "narrow/bias", "wide/bias", "y/kernel", "y/bias"} <= consts


def test_tf_session_serves_it_like_keras(exported: tuple) -> None:
    model, report, _ = exported
    run = savedmodel_runner(report.savedmodel_dir)  # TF1 loader + restore op, as TF Serving
    batch = _batch()
    expected = np.asarray(model(batch, training=False))
    np.testing.assert_allclose(run(batch)["y"], expected, rtol=1e-5, atol=1e-6)


def test_onnx_weights_stream_into_aligned_external_data(exported: tuple) -> None:
    import onnxruntime as ort

    model, report, _ = exported
    assert report.onnx["external_data"] is True
    proto = onnx.load(str(report.onnx_path), load_external_data=False)
    external = [i for i in proto.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    assert {tuple(i.dims) for i in external} >= set(BIG.values())
    for init in external:
        entry = {e.key: e.value for e in init.external_data}
        assert entry["location"] == "model.onnx.data" and int(entry["offset"]) % ALIGNMENT == 0
    onnx.checker.check_model(str(report.onnx_path), full_check=True)
    session = ort.InferenceSession(str(report.onnx_path), providers=["CPUExecutionProvider"])
    batch = _batch()
    np.testing.assert_allclose(
        session.run(["y"], batch)[0], np.asarray(model(batch, training=False)), rtol=1e-5, atol=1e-5
    )


def test_progress_reports_weights_written(exported: tuple) -> None:
    _, _, log = exported
    assert "savedmodel: variables written" in log and "onnx: weights written" in log
    assert "(100%" in log


@pytest.fixture(scope="module")
def served(exported: tuple) -> Iterator[str]:
    """`python -m serving` over the lifted SavedModel; yields its gRPC target."""
    from serving.client import ServingClient

    _, report, _ = exported
    server = start_server_process(
        ["--model_name=lifted", f"--model_base_path={report.savedmodel_dir.parent}"],
        rest=False,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        with ServingClient(server.grpc_target, timeout=30.0) as client:
            client.wait_until_available("lifted", timeout=STARTUP_TIMEOUT_S)
        yield server.grpc_target
    finally:
        server.stop()


def test_embedded_server_serves_it_over_grpc(exported: tuple, served: str) -> None:
    from serving.client import ServingClient

    model, _, _ = exported
    batch = _batch(3)
    with ServingClient(served, timeout=30.0) as client:
        got = client.predict(batch, "lifted")
    np.testing.assert_allclose(
        got["y"], np.asarray(model(batch, training=False)), rtol=1e-5, atol=1e-6
    )


def test_cli_flag_reads_sizes_and_refuses_nonsense(capsys: pytest.CaptureFixture) -> None:
    from exporter.cli import _parser

    base = ["export", "--model", "m.keras", "--name", "n", "--out", "o"]
    assert _parser().parse_args([*base, "--max-frozen-bytes", "32KiB"]).max_frozen_bytes == 32768
    assert _parser().parse_args([*base, "--max-frozen-bytes", "1GiB"]).max_frozen_bytes == 2**30
    assert _parser().parse_args([*base, "--max-frozen-bytes", "4096"]).max_frozen_bytes == 4096
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*base, "--max-frozen-bytes", "lots"])
    assert exit_info.value.code == 2  # argparse's usage error
    assert "is not a size" in capsys.readouterr().err
