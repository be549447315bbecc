"""Learned scale vectors (ConvNeXt's `LayerScale.gamma`, a LayerNormalization's gamma, a user's
own per-channel multiplier): recognised from the traced graph, judged like scalars by the
audit, and found bit-exact in the exported SavedModel and ONNX files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
import tf_keras
from onnx import numpy_helper
from tensorflow.core.protobuf import saved_model_pb2

from exporter import ExportOptions, export_model, record_initial_values
from exporter.cli import main as exporter_main
from exporter.model.audit import audit_model
from exporter.model.audit_report import AuditReport
from tests import applications, models


def _trained() -> keras.Model:
    with record_initial_values():
        model = models.layer_scale_model(seed=0)
    models.train(model, epochs=3, seed=0)
    return model


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    return _trained()


def _by_group(report: AuditReport) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for scale in report.learned_scales:
        groups.setdefault(scale.group, []).append(scale)
    return groups


def test_recognised_by_graph_use_not_batch_norm_kernels_or_biases(trained: keras.Model) -> None:
    report = audit_model(trained)
    assert [(s.name, s.group) for s in report.learned_scales] == [
        ("layer_scale/gamma", "ChannelScale.gamma"),
        ("norm/gamma", "LayerNormalization.gamma"),
    ]
    # BatchNormalization's gamma only multiplies rsqrt(moving_variance): no learned scale.
    assert "bn/gamma" in [v.path for v in trained.weights]
    assert report.non_scalar_summary.count == 12  # learned scales stay counted as tensors


def test_trained_scales_are_judged_like_scalars(trained: keras.Model) -> None:
    report = audit_model(trained)
    gamma = trained.get_layer("layer_scale").gamma.numpy()
    (scale,) = _by_group(report)["ChannelScale.gamma"]
    assert scale.shape == (16,) and scale.channels == 16 and scale.dtype == "float32"
    assert (scale.tracked, scale.trainable, scale.used_by_inference, scale.finite) == (
        True,
        True,
        True,
        True,
    )
    assert scale.unchanged_since_init is False and scale.initial_value == pytest.approx(1e-6)
    assert (scale.min, scale.max) == (gamma.min(), gamma.max()) and scale.status == "ok"
    assert [f for f in report.findings if f.level != "info"] == []
    row = report.to_dict()["learned_scales"][0]
    assert row["group"] == "ChannelScale.gamma" and row["status"] == "ok"
    assert json.loads(json.dumps(report.to_dict()))["learned_scales"] == [
        s.to_dict() for s in report.learned_scales
    ]


def test_untrained_scales_are_unchanged_one_warning_by_kind() -> None:
    with record_initial_values():
        model = models.layer_scale_model(seed=0)
    report = audit_model(model)
    assert {s.status for s in report.learned_scales} == {"unchanged"}
    (finding,) = [f for f in report.findings if f.variable == "2 learned scales"]
    assert finding.level == "warning" and finding.code == "unchanged_since_init"
    assert "ChannelScale.gamma x1, initial value 1e-06" in finding.message
    assert "LayerNormalization.gamma x1, initial value 1" in finding.message
    # ... and no longer in the warning about the other tensors: proj, norm/beta, hidden, bn's
    # gamma and beta (a BatchNormalization gamma is no learned scale), target/kernel.
    (tensors,) = [f for f in report.findings if f.message.startswith("Trainable weights")]
    assert "(8: " in tensors.message


def test_frozen_before_training_is_reported_not_silently_ok() -> None:
    with record_initial_values():
        model = models.layer_scale_model(seed=0)
    model.trainable = False
    report = audit_model(model)
    for scale in report.learned_scales:
        assert (scale.trainable, scale.unchanged_since_init) == (False, True)
        assert scale.status == "non-trainable"
    (finding,) = [f for f in report.findings if f.code == "frozen_at_init"]
    assert finding.level == "warning" and "not trainable" in finding.message
    table = report.table()
    assert "ChannelScale.gamma" in table and "yes (1e-06)" in table


def test_non_finite_scale_is_an_error(trained: keras.Model) -> None:
    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    gamma = model.get_layer("layer_scale").gamma
    gamma.assign(np.where(np.arange(16) == 3, np.nan, gamma.numpy()).astype("float32"))
    report = audit_model(model)
    scale = next(s for s in report.learned_scales if s.group == "ChannelScale.gamma")
    assert scale.finite is False and scale.status == "non-finite"
    assert [f.code for f in report.findings_for(scale.name, "error")] == ["non_finite"]
    assert report.to_dict()["learned_scales"][0]["finite"] is False


def test_vector_read_as_offset_or_into_a_constant_factor_is_no_learned_scale() -> None:
    class Mixed(keras.layers.Layer):
        def build(self, input_shape: Any) -> None:
            channels = (input_shape[-1],)
            self.shift = self.add_weight(name="shift", shape=channels, initializer="zeros")
            self.both = self.add_weight(name="both", shape=channels, initializer="ones")
            self.doubled = self.add_weight(name="doubled", shape=channels, initializer="ones")
            self.grid = self.add_weight(name="grid", shape=(3, 4), initializer="ones")
            self.masked = self.add_weight(name="masked", shape=channels, initializer="ones")
            self.mask = tf.constant(np.ones(channels, "float32"))  # an eager tensor: captured

        def call(self, x: Any) -> Any:
            x = (x + self.shift) * self.both + self.both
            x = x * (self.doubled * 2.0) * keras.ops.reshape(self.grid, (12,))
            return x * (self.masked * self.mask)

    inputs = keras.Input((12,))
    report = audit_model(keras.Model(inputs, Mixed()(inputs)))
    assert report.learned_scales == []


def test_normalization_gammas_are_learned_scales_batch_norm_is_not() -> None:
    inputs = keras.Input((4, 4, 8))
    hidden = keras.layers.GroupNormalization(groups=2, name="gn")(inputs)
    hidden = keras.layers.RMSNormalization(name="rms")(hidden)
    hidden = keras.layers.LayerNormalization(rms_scaling=True, name="ln_rms")(hidden)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    model = keras.Model(inputs, keras.layers.Conv2D(8, 1, name="conv")(hidden))
    assert sorted((s.name, s.group) for s in audit_model(model).learned_scales) == [
        ("gn/gamma", "GroupNormalization.gamma"),
        ("ln_rms/gamma", "LayerNormalization.gamma"),
        ("rms/scale", "RMSNormalization.scale"),
    ]


def test_initial_value_from_layer_scale_config_without_recording() -> None:
    from keras.src.applications.convnext import LayerScale

    inputs = keras.Input((8,))
    model = keras.Model(inputs, LayerScale(1e-6, 8, name="ls")(inputs))
    (scale,) = audit_model(model).learned_scales
    assert scale.group == "LayerScale.gamma"  # the attribute, not the weight's name "variable"
    assert scale.unchanged_since_init is True and scale.initial_value == pytest.approx(1e-6)


def test_tf_keras_layer_scale_and_layer_norm() -> None:
    from tf_keras.src.applications.convnext import LayerScale

    inputs = tf_keras.Input((8,))
    hidden = LayerScale(1e-6, 8, name="ls")(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.LayerNormalization(name="norm")(hidden))
    groups = sorted(s.group for s in audit_model(model).learned_scales)
    assert groups == ["LayerNormalization.gamma", "LayerScale.gamma"]


def test_convnext_tiny_audit() -> None:
    with record_initial_values():
        backbone = keras.applications.ConvNeXtTiny(
            input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg"
        )
    report = audit_model(backbone)
    groups = _by_group(report)
    assert sorted(groups) == ["LayerNormalization.gamma", "LayerScale.gamma"]
    layer_scales = groups["LayerScale.gamma"]
    assert len(layer_scales) == 18  # 3 + 3 + 9 + 3 blocks
    assert sorted({s.channels for s in layer_scales}) == [96, 192, 384, 768]
    assert [s.initial_value for s in layer_scales] == [pytest.approx(1e-6)] * 18
    assert (
        len(groups["LayerNormalization.gamma"]) == 23
    )  # stem, 3 downsampling, 18 blocks, after pooling
    lines = [line for line in report.table().splitlines() if line.startswith("LayerScale.gamma")]
    assert len(lines) == 1 and "18" in lines[0] and "96-768" in lines[0]


def _graph_consts(saved_model_dir: Path) -> dict[str, np.ndarray]:
    """Every Const of the exported saved_model.pb, read from the file."""
    saved = saved_model_pb2.SavedModel.FromString((saved_model_dir / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    return {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph.node if n.op == "Const"}


def _onnx_initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))  # external data loaded from beside the file
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _unnumbered(path: str) -> str:
    """A weight path without the process-wide counter Keras gives unnamed weights
    (`.../layer_scale/variable_18`): the model loaded here numbers them differently."""
    return re.sub(r"/variable(_\d+)?$", "/variable", path)


def _assert_shipped_bit_exact(report: dict[str, Any], values: dict[str, np.ndarray]) -> None:
    """Each learned scale's bytes are in saved_model.pb (a Const) and in model.onnx (an
    initializer): read back from the published files, compared with the live variable."""
    saved_model = Path(report["artifacts"]["savedmodel_dir"])
    consts = _graph_consts(saved_model)
    initializers = _onnx_initializers(Path(report["artifacts"]["onnx_path"]))
    for row in report["learned_scales"]:
        expected = values[_unnumbered(row["name"])]
        if row["savedmodel_variable"]:  # past --max-frozen-bytes: in the checkpoint
            checkpoint = tf.train.load_checkpoint(str(saved_model / "variables" / "variables"))
            const = checkpoint.get_tensor(row["savedmodel_variable"])
        else:
            const = consts[row["savedmodel_const"]]
        assert row["savedmodel_bit_exact"] is True
        assert const.dtype == expected.dtype and const.tobytes() == expected.tobytes()
        onnx_value = initializers[row["onnx_initializer"]]
        assert onnx_value.dtype == expected.dtype and onnx_value.tobytes() == expected.tobytes()


def test_export_ships_each_learned_scale_bit_exact(trained: keras.Model, tmp_path: Path) -> None:
    report = export_model(trained, tmp_path, "layer_scale", ExportOptions())
    document = json.loads(report.path.read_text())
    values = {_unnumbered(v.path): np.asarray(v.numpy()) for v in trained.weights}
    assert [r["name"] for r in document["learned_scales"]] == ["layer_scale/gamma", "norm/gamma"]
    _assert_shipped_bit_exact(document, values)
    assert document["audit"]["learned_scales"][0]["status"] == "ok"
    summary = report.summary()
    assert "Learned scales: 2 vectors" in summary
    (line,) = [x for x in summary.splitlines() if x.startswith("ChannelScale.gamma")]
    assert "1 Const, bit-exact" in line and "1 initializer, bit-exact" in line


def test_mixed_precision_scale_ships_as_the_exact_float16_cast(tmp_path: Path) -> None:
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with record_initial_values():
            model = models.layer_scale_model(seed=0)
        models.train(model, epochs=1, seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    report = export_model(model, tmp_path, "mixed", ExportOptions())
    row = next(r for r in report.learned_scales if r["group"] == "ChannelScale.gamma")
    assert row["dtype"] == "float32" and row["savedmodel_bit_exact"] is True
    gamma = model.get_layer("layer_scale").gamma.numpy()
    initializers = _onnx_initializers(report.onnx_path)
    assert row["onnx_initializer"], row["onnx_note"]  # tf2onnx folds the Cast of the weight
    shipped = initializers[row["onnx_initializer"]]
    assert shipped.dtype == np.float16 and shipped.tobytes() == gamma.astype(np.float16).tobytes()
    assert "exact cast" in row["onnx_note"]


def test_large_learned_scale_kept_variable_is_proven_in_the_checkpoint(tmp_path: Path) -> None:
    with record_initial_values():
        keras.utils.set_random_seed(0)
        features = keras.Input((8,), name="features")
        hidden = keras.layers.Dense(1024, name="wide")(features)
        hidden = models.ChannelScale(0.5, name="layer_scale")(hidden)
        model = keras.Model(features, keras.layers.Dense(1, name="target")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    models.train(model, epochs=1, seed=0)
    report = export_model(model, tmp_path, "wide", ExportOptions(max_frozen_bytes=1024))
    document = json.loads(report.path.read_text())
    (row,) = document["learned_scales"]
    assert row["savedmodel_const"] is None and row["savedmodel_variable"]
    assert row["onnx_note"] == "initializer, bit-exact"  # external data, as the variable's
    _assert_shipped_bit_exact(document, {_unnumbered(v.path): v.numpy() for v in model.weights})
    (line,) = [x for x in report.summary().splitlines() if x.startswith("ChannelScale.gamma")]
    assert "1 read-only variable, bit-exact" in line


@pytest.fixture(scope="module")
def convnext_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Any]:
    """ConvNeXtTiny as the applications matrix builds it (random weights, backbone frozen, a
    trained scalar head), exported by the CLI with default flags."""
    directory = tmp_path_factory.mktemp("convnext")
    source = applications.save("ConvNeXtTiny", directory)
    out = directory / "out"
    assert exporter_main(applications.export_argv("ConvNeXtTiny", source, out)) == 0
    report = json.loads((out / "reports" / "convnexttiny" / "1.json").read_text())
    return report, keras.models.load_model(source)


def test_convnext_tiny_export_reports_frozen_layer_scales(
    convnext_export: tuple[dict[str, Any], Any],
) -> None:
    report, model = convnext_export
    layer_scales = [r for r in report["learned_scales"] if r["group"] == "LayerScale.gamma"]
    assert len(layer_scales) == 18
    for row in layer_scales:  # frozen backbone, weights=None: never trained
        assert (row["trainable"], row["unchanged_since_init"], row["status"]) == (
            False,
            True,
            "non-trainable",
        )
        assert row["initial_value"] == pytest.approx(1e-6)
    assert any("LayerScale.gamma x18, initial value 1e-06" in w for w in report["warnings"])
    values = {_unnumbered(v.path): np.asarray(v.numpy()) for v in model.weights}
    _assert_shipped_bit_exact(report, values)
