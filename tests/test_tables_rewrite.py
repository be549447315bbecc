"""Lookup tables, the pre-conversion rewrite pass, tolerances and --formats, on small models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from exporter import ExportOptions, export_model
from exporter.cli import main as exporter_main
from exporter.errors import ExportError, FreezeError
from exporter.freeze.frozen_graph import freeze
from exporter.inspect import inspect_artifact
from exporter.model.trace import trace_model
from exporter.onnx_format.graph_rewrite import rewrite_for_onnx
from exporter.verify.parity import keras_runner, savedmodel_runner
from exporter.verify.tolerances import resolve_tolerances
from tests import matrix_models


@keras.saving.register_keras_serializable(package="test_tables")
class MutableCounter(keras.layers.Layer):
    """Looks ids up in a MutableHashTable: state a frozen artifact cannot keep."""

    def build(self, input_shape: Any) -> None:
        self.table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.float32, 0.0)
        self.table.insert(tf.constant([1, 2], tf.int64), tf.constant([0.5, 2.0]))

    def call(self, ids: Any) -> Any:
        return self.table.lookup(ids)

    def compute_output_spec(self, ids: Any) -> Any:
        return keras.KerasTensor(ids.shape, dtype="float32")


def test_mutable_table_is_refused_in_one_line(tmp_path: Path) -> None:
    ids = keras.Input((3,), dtype="int64", name="ids")
    model = keras.Model(ids, MutableCounter()(ids))
    with pytest.raises(FreezeError) as err:
        export_model(model, tmp_path, "mutable")
    assert "mutable lookup table" in str(err.value) and "\n" not in str(err.value)
    assert "MutableHashTable" in str(err.value)
    assert not (tmp_path / "tfserving").exists()


def test_vocabulary_file_table_ships_as_an_asset(tmp_path: Path) -> None:
    """A StringLookup built from a file: the SavedModel's init op reads assets/<file>."""
    vocab = tmp_path / "colours.txt"
    vocab.write_text("red\ngreen\nblue\n")
    colour = keras.Input((1,), dtype="string", name="colour")
    ids = keras.layers.StringLookup(vocabulary=str(vocab))(colour)
    model = keras.Model(colour, keras.layers.Embedding(4, 2)(ids))
    report = export_model(model, tmp_path / "out", "vocab_file")
    table = report.freeze_proof["tables"][0]
    assert table["contents"] == "assets/colours.txt" and table["size"] == 3
    assert (report.savedmodel_dir / "assets" / "colours.txt").read_text() == vocab.read_text()
    vocab.write_text("changed\n")  # the SavedModel reads its own copy, not the source file
    batch = {"colour": np.array([[b"blue"], [b"red"], [b"nope"]], dtype=object)}
    expected = keras_runner(trace_model(model))(batch)
    got = savedmodel_runner(report.savedmodel_dir)(batch)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)
    inspected = inspect_artifact(report.savedmodel_dir).tables
    assert [t["contents"] for t in inspected] == ["assets/colours.txt"]
    assert inspected[0]["initialised_by"] == "frozen_tables_init"


def test_hashed_oov_refuses_onnx_naming_the_flag(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "hashing.keras"
    matrix_models.hashing_lookup().save(path)
    argv = ["export", "--model", str(path), "--name", "hashing", "--out", str(tmp_path / "o")]
    assert exporter_main(argv) == 1  # a check failed: no faithful ONNX form
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: No faithful ONNX form")
    err = errors[0]
    assert "StringToHashBucketFast" in err and "--formats savedmodel" in err
    assert not (tmp_path / "o" / "tfserving" / "hashing" / "1").exists()  # nothing published
    assert exporter_main([*argv, "--formats", "savedmodel"]) == 0
    report = json.loads((tmp_path / "o" / "reports" / "hashing" / "1.json").read_text())
    assert report["formats"]["produced"] == ["savedmodel"] and report["passed"]
    assert report["freeze_proof"]["tables"][0]["size"] == 4


def test_erfc_rewrite_is_exact_and_keeps_names() -> None:
    fn = tf.function(lambda x: tf.math.erfc(x) * 2.0).get_concrete_function(
        tf.TensorSpec([None], tf.float32)
    )
    graph_def = fn.graph.as_graph_def()
    names = {n.name for n in graph_def.node}
    summary = rewrite_for_onnx(graph_def)
    assert summary.to_dict() == {"Erfc": 1}
    ops = {n.op for n in graph_def.node}
    assert "Erfc" not in ops and {"Erf", "Sub"} <= ops
    assert names <= {n.name for n in graph_def.node}  # consumers still find their inputs
    x = np.linspace(-3, 3, 101).astype(np.float32)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            got = session.run(fn.outputs[0].name, {fn.inputs[0].name: x})
    np.testing.assert_allclose(got, tf.math.erfc(x).numpy() * 2.0, atol=1e-6)


def test_explicit_tolerance_wins_and_says_so() -> None:
    outputs = {"logits": "float32", "ids": "int64"}
    auto = resolve_tolerances(outputs, {"float16"})
    assert (auto["logits"].atol, auto["logits"].rtol) == (5e-3, 1e-2)
    assert (auto["ids"].atol, auto["ids"].rtol, auto["ids"].reason) == (0, 0, "int64 output: exact")
    given = resolve_tolerances(outputs, {"float16"}, atol=1e-4)
    assert (given["logits"].atol, given["logits"].rtol) == (1e-4, 1e-2)
    assert given["logits"].reason.startswith("--atol given")


def test_float32_default_passes_rounding_and_fails_a_wrong_scalar() -> None:
    """The float32 default admits a deep net's measured rounding spread (MobileNetV3Small:
    5.8e-5 on logits up to ~10, a logit near 0 off by 2.7e-5; EfficientNetB0: 6.8e-4 rel on
    logits of ~400) and still fails a scalar that one training step moved (1.01 vs 1.0)."""
    from exporter.verify.parity import compare

    (tolerance,) = resolve_tolerances({"logits": "float32"}, {"float32"}).values()
    assert tolerance.reason == "float32 output"
    reference = np.array([[9.53, -4.2, 2e-4], [400.0, 180.0, -103.0]], np.float32)
    rounding = reference + np.array([[5.8e-5, -3e-5, 2.7e-5], [0.27, -0.1, 0.07]], np.float32)
    unscaled = reference * np.float32(1.01)

    def report(candidate: np.ndarray) -> Any:
        return compare(
            "keras",
            lambda _b: {"logits": reference},
            {"onnxruntime": lambda _b: {"logits": candidate}},
            [{}],
            tolerances={"logits": tolerance},
        )

    assert report(rounding).passed
    assert not report(unscaled).passed


def test_default_atol_widens_to_the_models_own_spread_and_refuses_noise() -> None:
    from exporter.errors import ParityError
    from exporter.verify.tolerances import widen_to_spread

    tolerances = resolve_tolerances({"logits": "float32", "ids": "int64"}, {"float32"})
    assert widen_to_spread(tolerances, {"logits": (5e-6, 10.0)}) == tolerances
    widened = widen_to_spread(tolerances, {"logits": (0.01, 450.0)}, {"logits": (0.05, 450.0)})
    assert (widened["logits"].atol, widened["logits"].rtol) == (1.0, 1e-3)
    assert widened["logits"].reason == (
        "float32 output; atol 20x the model's own spread (5.0e-02: "
        "Keras eager vs tf.function, inputs moved by one ulp)"
    )
    assert widened["ids"] == tolerances["ids"]  # exact stays exact
    # An input ulp may flip a threshold: it widens, only the eager/tf.function gap refuses.
    capped = widen_to_spread(tolerances, {"logits": (5.0, 8.0)})["logits"]
    assert capped.atol == pytest.approx(0.8) and capped.reason.endswith(
        "capped at 10% of its magnitude"
    )
    with pytest.raises(ParityError, match=r"'logits' is not reproducible: .*--atol"):
        widen_to_spread(tolerances, {"logits": (0.0, 2e3)}, {"logits": (90.0, 2e3)})


def test_unknown_format_is_bad_usage(tmp_path: Path) -> None:
    ids = keras.Input((1,), name="x")
    model = keras.Model(ids, keras.layers.Dense(1)(ids))
    with pytest.raises(ExportError, match="--formats tflite"):
        export_model(model, tmp_path, "m", ExportOptions(formats=["tflite"]))


def test_frozen_graph_has_no_table_placeholder() -> None:
    model = matrix_models.integer_lookup()
    frozen = freeze(trace_model(model))
    ops = {n.op for n in frozen.graph_def.node}
    assert {"HashTableV2", "InitializeTableV2"} <= ops
    assert not [n for n in frozen.graph_def.node if n.op == "Placeholder" and n.name != "ids"]


class LogGamma(keras.layers.Layer):
    """An op tf2onnx has no handler for (Lgamma) and no exact rewrite exists for."""

    def call(self, x: Any) -> Any:
        return tf.math.lgamma(tf.abs(x) + 1.0)


def test_unconvertible_op_names_its_layer_and_the_fix(tmp_path: Path) -> None:
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Dense(2)(LogGamma(name="log_gamma")(x)))
    with pytest.raises(ExportError) as err:
        export_model(model, tmp_path, "lgamma")
    message = str(err.value)
    assert "\n" not in message and message.startswith("tf2onnx cannot convert Lgamma")
    assert "layer 'log_gamma'" in message and "--formats savedmodel" in message
    report = export_model(model, tmp_path, "lgamma", ExportOptions(formats=["savedmodel"]))
    assert report.passed and report.onnx_path is None and report.onnx is None


def test_tables_with_read_only_variables(tmp_path: Path) -> None:
    """Weights lifted to variables/ and a table: the loader restores, then runs the main_op."""
    keras.utils.set_random_seed(0)
    colour = keras.Input((1,), dtype="string", name="colour")
    ids = keras.layers.StringLookup(vocabulary=["red", "green", "blue"])(colour)
    x = keras.layers.Flatten()(keras.layers.Embedding(4, 64)(ids))
    model = keras.Model(colour, keras.layers.Dense(64, name="wide")(x))
    report = export_model(model, tmp_path, "lifted_tables", ExportOptions(max_frozen_bytes=4096))
    assert report.freeze_proof["read_only_variables"], "nothing was lifted: raise the sizes"
    assert report.freeze_proof["tables"][0]["size"] == 3
    # savedmodel_cpp: TF Serving's C++ loader restores the lifted variables and runs the init op.
    assert report.passed and {c.runtime for c in report.parity.comparisons} == {
        "savedmodel",
        "savedmodel_cpp",
        "onnxruntime",
    }
    assert inspect_artifact(report.savedmodel_dir).tables[0]["initialised_by"] == (
        "frozen_tables_init"
    )


def test_vocabulary_file_table_with_large_kept_embedding_serves(tmp_path: Path) -> None:
    """A recommender's shape: StringLookup(vocabulary=FILE) + an Embedding too large to freeze.

    The one SavedModel writer copies the file into assets/ (with its AssetFileDef) and keeps
    the embedding in variables/; the embedded server loads it (restore, then the table's
    main_op fed the asset's path) and answers gRPC and REST like the SavedModel in-process."""
    from tensorflow.core.protobuf import saved_model_pb2

    from exporter.options import ParityOptions
    from exporter.verify.served_parity import run_parity

    vocabulary = tmp_path / "items.txt"
    items = [f"item_{i}" for i in range(500)]
    vocabulary.write_text("\n".join(items) + "\n")
    keras.utils.set_random_seed(0)
    item = keras.Input((1,), dtype="string", name="item")
    ids = keras.layers.StringLookup(vocabulary=str(vocabulary), name="lookup")(item)
    vectors = keras.layers.Embedding(len(items) + 1, 256, name="item_vectors")(ids)  # 513 KB
    score = keras.layers.Dense(1, name="score")(keras.layers.Flatten()(vectors))
    model = keras.Model(item, score)
    out = tmp_path / "out"
    options = ExportOptions(max_frozen_bytes=64 * 1024, formats=("savedmodel",))
    report = export_model(model, out, "recommender", options)

    lifted = [v["name"] for v in report.freeze_proof["read_only_variables"]]
    assert any("item_vectors" in name for name in lifted), lifted
    assert report.freeze_proof["tables"][0]["contents"] == "assets/items.txt"
    version = report.savedmodel_dir
    assert (version / "assets" / "items.txt").read_bytes() == vocabulary.read_bytes()
    assert (version / "variables" / "variables.index").is_file()
    saved_model = saved_model_pb2.SavedModel.FromString((version / "saved_model.pb").read_bytes())
    (meta,) = saved_model.meta_graphs
    assert [a.filename for a in meta.asset_file_def] == ["items.txt"]
    assert meta.saver_def.restore_op_name and report.passed

    vocabulary.unlink()  # the served model must read its own copy under assets/
    parity = run_parity(out, "recommender", ParityOptions(samples=2))
    assert {"grpc", "rest"} <= {c.runtime for c in parity.comparisons}, parity.skipped
    assert parity.errors == {} and parity.passed, parity.table()
    expected = model.predict(tf.constant([["item_7"], ["unknown"]]), verbose=0)
    runner = savedmodel_runner(version)
    got = runner({"item": np.array([[b"item_7"], [b"unknown"]], dtype=object)})
    np.testing.assert_array_equal(got["score"], expected)
