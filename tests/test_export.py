"""Export end to end: frozen proof, constant values, parity, atomic publish, tool acceptance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from exporter import AuditError, ExportError, ExportOptions, FreezeError, export_model
from exporter.freeze.frozen_graph import VARIABLE_OPS
from exporter.inspect import inspect_artifact
from tests import models
from tests.conftest import REPO_ROOT

# (factory, training epochs): every seed-derived model of the exporter's test set.
EXPORT_SET = {
    "reference": models.reference_model,
    "multi_io": models.multi_io_model,
    "cond": models.cond_model,
    "subclassed": models.subclassed_model,
    "embedding": models.embedding_model,
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Any]]:
    """Each model trained a little and exported once: name -> (model, report)."""
    out = tmp_path_factory.mktemp("export")
    results = {}
    for name, factory in EXPORT_SET.items():
        model = factory()
        models.train(model, epochs=2)
        results[name] = (model, export_model(model, out, name, ExportOptions(warmup_requests=3)))
    return results


def _saved_model(export_dir: Path) -> Any:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    return proto


def _all_nodes(graph_def: Any) -> list[Any]:
    return list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]


@pytest.mark.parametrize("name", list(EXPORT_SET))
def test_savedmodel_holds_no_variable_ops(exported: dict, name: str) -> None:
    _, report = exported[name]
    (meta,) = _saved_model(report.savedmodel_dir).meta_graphs
    ops = {n.op for n in _all_nodes(meta.graph_def)}
    assert not ops & VARIABLE_OPS, f"variable ops left: {ops & VARIABLE_OPS}"
    assert list((report.savedmodel_dir / "variables").iterdir()) == []
    assert list(meta.meta_info_def.tags) == ["serve"]
    assert set(meta.signature_def) == {"serving_default"}


@pytest.mark.parametrize("name", list(EXPORT_SET))
def test_trained_scalars_are_consts_with_trained_values(exported: dict, name: str) -> None:
    model, report = exported[name]
    (meta,) = _saved_model(report.savedmodel_dir).meta_graphs
    consts = {n.name: n for n in meta.graph_def.node if n.op == "Const"}
    weights = {w.path: np.asarray(w) for w in model.weights}
    shipped = [s for s in report.scalars if s["used_by_inference"]]
    assert shipped, "every model of the export set carries a trained scalar"
    for scalar in shipped:
        node = consts[scalar["savedmodel_const"]]
        value = tf.make_ndarray(node.attr["value"].tensor)
        assert value.tobytes() == weights[scalar["name"]].tobytes(), scalar["name"]
    assert report.freeze_proof["proven"]


@pytest.mark.parametrize("name", list(EXPORT_SET))
def test_onnx_has_only_data_inputs_and_passes_checker(exported: dict, name: str) -> None:
    _, report = exported[name]
    proto = onnx.load(str(report.onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert sorted(i.name for i in proto.graph.input) == sorted(report.signature["inputs"])
    assert sorted(o.name for o in proto.graph.output) == sorted(report.signature["outputs"])
    batch_dims = {i.type.tensor_type.shape.dim[0].dim_param for i in proto.graph.input}
    assert batch_dims == {"batch"}


@pytest.mark.parametrize("name", list(EXPORT_SET))
def test_parity_within_tolerance(exported: dict, name: str) -> None:
    _, report = exported[name]
    parity = report.parity
    assert parity.passed
    runtimes = {c.runtime for c in parity.comparisons}
    assert runtimes == {"savedmodel", "savedmodel_cpp", "onnxruntime"}
    for c in parity.comparisons:
        assert c.max_abs <= c.atol + c.rtol * 1e3, c  # outputs here stay well below 1e3


def test_report_file_is_complete(exported: dict) -> None:
    _, report = exported["multi_io"]
    data = json.loads(report.path.read_text())
    assert data["passed"] is True
    assert set(data["packages"]) >= {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"}
    assert data["signature"]["inputs"]["signal"] == {"dtype": "float32", "shape": [None, 8]}
    assert len(data["artifacts"]["saved_model_pb_sha256"]) == 64
    assert len(data["artifacts"]["onnx_sha256"]) == 64
    names = {s["name"] for s in data["scalars"]}
    assert {"class_logits/log_temperature", "value/offset"} <= names


def test_warmup_file_is_tfrecord_of_prediction_logs(exported: dict) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    _, report = exported["embedding"]
    path = report.savedmodel_dir / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == 3
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    tokens = tf.make_ndarray(request.inputs["tokens"])
    assert tokens.dtype == np.int32 and tokens.shape == (1, 6)


def test_cond_stays_functional(exported: dict) -> None:
    _, report = exported["cond"]
    (meta,) = _saved_model(report.savedmodel_dir).meta_graphs
    ops = {n.op for n in meta.graph_def.node}
    assert ops & {"If", "StatelessIf"}, "tf.cond must stay a functional If op"
    assert meta.graph_def.library.function, "cond branches live in the function library"


def test_saved_model_cli_accepts_export(exported: dict) -> None:
    _, report = exported["reference"]
    cli = Path(sys.executable).parent / "saved_model_cli"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    shown = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(report.savedmodel_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert "signature_def['serving_default']" in shown.stdout
    assert "inputs['features']" in shown.stdout
    run = subprocess.run(
        [
            str(cli),
            "run",
            "--dir",
            str(report.savedmodel_dir),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--input_exprs",
            f"features={[[0.5] * 10] * 2}",
        ],  # literals only (safe eval)
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert "Result for output key target" in run.stdout


def test_version_numbers_increase_and_existing_version_is_refused(tmp_path: Path) -> None:
    model = models.embedding_model()
    first = export_model(model, tmp_path, "m", ExportOptions(parity_samples=1))
    second = export_model(model, tmp_path, "m", ExportOptions(parity_samples=1))
    assert (first.version, second.version) == (1, 2)
    # Warmup records are written by default, so TF Serving warms a version before it serves.
    warmup = first.savedmodel_dir / "assets.extra" / "tf_serving_warmup_requests"
    assert sum(1 for _ in tf.compat.v1.io.tf_record_iterator(str(warmup))) == 1
    with pytest.raises(ExportError, match="already exists"):
        export_model(model, tmp_path, "m", ExportOptions(version=1, parity_samples=1))


def test_crash_mid_write_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import exporter.export as export_module

    model = models.embedding_model()
    first = export_model(model, tmp_path, "m", ExportOptions(parity_samples=1))
    pb_before = (first.savedmodel_dir / "saved_model.pb").read_bytes()
    real_write_onnx = export_module.write_onnx

    def crash_after_writing(frozen: Any, export_dir: Path, **kwargs: Any) -> Any:
        real_write_onnx(frozen, export_dir, **kwargs)  # files are on disk in the scratch dir
        raise OSError("simulated crash while writing")

    monkeypatch.setattr(export_module, "write_onnx", crash_after_writing)
    with pytest.raises(OSError, match="simulated crash"):
        export_model(model, tmp_path, "m", ExportOptions(parity_samples=1))
    for base in (tmp_path / "tfserving" / "m", tmp_path / "onnx" / "m"):
        entries = sorted(p.name for p in base.iterdir() if p.name != "config.pbtxt")
        assert entries == ["1"], "no version 2, no .tmp-* left"
    assert (first.savedmodel_dir / "saved_model.pb").read_bytes() == pb_before
    assert not (tmp_path / "reports" / "m" / "2.json").exists()


def test_untracked_raw_variable_is_refused_then_allowed(tmp_path: Path) -> None:
    model = models.subclassed_raw_variable_model()
    with pytest.raises(AuditError, match=r"raw_offset.*never") as excinfo:
        export_model(model, tmp_path, "raw")
    assert "add_weight" in str(excinfo.value)
    assert not (tmp_path / "tfserving" / "raw").exists()
    report = export_model(
        model, tmp_path, "raw", ExportOptions(allow_untracked=True, parity_samples=1)
    )
    assert report.parity.passed
    assert any("raw_offset" in w for w in report.warnings)
    untracked = [s for s in report.scalars if not s["tracked"]]
    assert untracked and untracked[0]["savedmodel_const"], "shipped, as a constant, untrained"


def test_non_finite_scalar_is_refused(tmp_path: Path) -> None:
    model = models.reference_model()
    model.get_layer("scale").weights[0].assign(float("nan"))
    with pytest.raises(AuditError, match=r"non-finite.*scale/scale"):
        export_model(model, tmp_path, "nan")
    assert not (tmp_path / "tfserving").exists()


def test_stateful_graph_is_refused(tmp_path: Path) -> None:
    import keras

    class Counter(keras.layers.Layer):
        def build(self, shape: Any) -> None:
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x: Any) -> Any:
            self.calls.assign_add(1.0)
            return x

    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1)(Counter()(inputs)))
    # Keras 3 lowers assign_add to a read plus AssignVariableOp.
    with pytest.raises(FreezeError, match=r"updates a variable .*AssignVariableOp"):
        export_model(model, tmp_path, "stateful")


def test_opset_above_tf2onnx_maximum_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"--opset=21 is not supported.*7\.\.18"):
        export_model(models.embedding_model(), tmp_path, "m", ExportOptions(opset=21))
    assert not (tmp_path / "onnx" / "m").exists()


def test_inspect_says_keras_own_export_is_not_frozen(tmp_path: Path) -> None:
    model = models.reference_model()
    model.export(str(tmp_path / "keras_export"), format="tf_saved_model", verbose=False)
    result = inspect_artifact(tmp_path / "keras_export")
    assert result.frozen is False
    assert any("VarHandleOp" in op or "ReadVariableOp" in op for op in result.variable_ops)
    scalar_values = [v.get("value") for v in result.variables if v["shape"] == []]
    assert 1.0 in scalar_values and 0.0 in scalar_values  # Scale and Offset, as variables
    assert "not frozen" in result.text()


def test_inspect_says_our_export_is_frozen(exported: dict) -> None:
    model, report = exported["reference"]
    saved = inspect_artifact(report.savedmodel_dir)
    assert saved.frozen and not saved.variables and not saved.variable_ops
    scale = float(np.asarray(model.get_layer("scale").weights[0]))
    assert scale in [s["value"] for s in saved.scalars]
    onnx_result = inspect_artifact(report.onnx_path)
    assert onnx_result.frozen


def test_triton_config_describes_the_onnx_model(exported: dict) -> None:
    _, report = exported["multi_io"]
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    text = (report.onnx_path.parent.parent / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.platform == "onnxruntime_onnx"
    tensors = {
        t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims))
        for t in [*config.input, *config.output]
    }
    assert tensors["signal"] == ("TYPE_FP32", [-1, 8])
    assert tensors["class_logits"] == ("TYPE_FP32", [-1, 3])


def test_large_weights_bypass_tf2onnx_and_stay_bit_exact(tmp_path: Path) -> None:
    import keras
    from onnx import numpy_helper

    from exporter.model.layers import Scale
    from exporter.onnx_format.convert import WEIGHT_PLACEHOLDER_MIN_SIZE

    keras.utils.set_random_seed(3)
    inputs = keras.Input((40,), name="x")
    hidden = keras.layers.Dense(64, activation="relu", name="wide")(inputs)
    outputs = keras.layers.Dense(2, name="y")(Scale(0.75, name="scale")(hidden))
    model = keras.Model(inputs, outputs)
    kernel = np.asarray(model.get_layer("wide").kernel)
    assert kernel.size >= WEIGHT_PLACEHOLDER_MIN_SIZE
    report = export_model(model, tmp_path, "wide")
    proto = onnx.load(str(report.onnx_path))
    assert [i.name for i in proto.graph.input] == ["x"]
    matches = [i for i in proto.graph.initializer if list(i.dims) == list(kernel.shape)]
    assert len(matches) == 1
    assert numpy_helper.to_array(matches[0]).tobytes() == kernel.tobytes()
    assert report.parity.passed


def test_weights_past_graphdef_limit_are_refused_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.freeze.frozen_graph as freeze_module

    # A real >2 GiB model takes minutes and ~10 GiB (see `make bench-large`); lower the limit.
    monkeypatch.setattr(freeze_module, "GRAPHDEF_LIMIT", 1024)
    monkeypatch.setattr(freeze_module, "GRAPHDEF_HEADROOM", 0)
    with pytest.raises(FreezeError, match=r"weights total .* past protobuf's 2 GiB limit"):
        export_model(models.reference_model(), tmp_path, "big")
    assert not (tmp_path / "tfserving").exists()


def test_onnx_only_writes_external_data_past_the_protobuf_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.freeze.frozen_graph as freeze_module
    import exporter.onnx_format.convert as onnx_module

    # Shrink both 2 GiB limits so a small model takes the >2 GiB path end to end.
    monkeypatch.setattr(freeze_module, "GRAPHDEF_LIMIT", 1024)
    monkeypatch.setattr(freeze_module, "GRAPHDEF_HEADROOM", 0)
    monkeypatch.setattr(onnx_module, "PROTOBUF_LIMIT", 1024)
    monkeypatch.setattr(onnx_module, "EXTERNAL_DATA_HEADROOM", 0)
    model = models.reference_model()
    models.train(model, epochs=1)
    report = export_model(model, tmp_path, "big", ExportOptions(onnx_only=True))
    assert report.savedmodel_dir is None and not (tmp_path / "tfserving").exists()
    assert report.onnx["external_data"] is True
    proto = onnx.load(str(report.onnx_path), load_external_data=False)
    external = [i for i in proto.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "large initializers live in model.onnx.data"
    assert (report.onnx_path.parent / "model.onnx.data").stat().st_size >= 10 * 64 * 4
    assert {c.runtime for c in report.parity.comparisons} == {"onnxruntime"}
    assert report.parity.passed
    assert json.loads(report.path.read_text())["artifacts"]["savedmodel_dir"] is None


# VmHWM, not ru_maxrss: Linux carries the forking parent's peak (here pytest's) into a child's
# ru_maxrss across exec, while VmHWM belongs to the new process image alone.
INSPECT_LARGE = """
import json, re, sys
from pathlib import Path
from exporter.inspect import inspect_artifact
result = inspect_artifact(sys.argv[1])
status = Path("/proc/self/status").read_text()
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
print(json.dumps({"peak": peak, "scalars": result.scalars, "frozen": result.frozen}))
"""


def test_inspect_reads_an_external_data_model_without_loading_its_weights(tmp_path: Path) -> None:
    """A 3 GB external weight (a sparse file: no disk used) next to a scalar initializer:
    inspect reports the scalar and stays far below the weight's size in peak memory."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    big = 3 * 10**9 // 4  # float32 elements
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[big])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "model.onnx.data"), ("offset", "0"), ("length", str(big * 4))):
        weight.external_data.add(key=key, value=value)
    scale = numpy_helper.from_array(np.array(0.75, dtype=np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["W", "scale"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [big])],
        initializer=[weight, scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "model.onnx")
    with open(tmp_path / "model.onnx.data", "wb") as data:
        data.truncate(big * 4)
    result = subprocess.run(
        [sys.executable, "-c", INSPECT_LARGE, str(tmp_path / "model.onnx")],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["scalars"] == [{"name": "scale", "value": 0.75}] and found["frozen"]
    assert found["peak"] < 2 * 10**9, f"inspect peaked at {found['peak'] / 1e9:.1f} GB"
