"""The real-architecture matrix, exported through the CLI with default flags.

One session fixture trains every model briefly, saves it as a user would (.keras, .h5,
SavedModel) and exports it with `python -m exporter export` (in-process: the CLI's own
argument parsing, loading and defaults, without a fresh TF import per model). Each model
must then be frozen (no variable op; tables initialised by the SavedModel's init op), agree
with Keras in the SavedModel and ONNX Runtime, and agree with the SavedModel when served by
the embedded server over gRPC (and REST for raw-string inputs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from exporter.cli import main as exporter_main
from exporter.inspect import inspect_artifact
from tests import matrix_legacy, matrix_models

LEGACY = ("legacy_h5", "legacy_savedmodel")
#: The largest graphs (tf2onnx's loop and conv rewrites dominate): `make test-all` only.
SLOW = {"mobilenet", "bilstm", "bigru"}
MATRIX = [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
    for name in (*matrix_models.KERAS3, *LEGACY)
]


class Matrix:
    """Matrix models trained, saved and exported by the CLI on first use, once per session."""

    def __init__(self, files: Path, out: Path) -> None:
        self.files, self.out = files, out
        self.sources: dict[str, Path] = {}
        self.codes: dict[str, int] = {}

    def source(self, name: str) -> Path:
        if name not in self.sources:
            if name in LEGACY:
                self.sources.update(matrix_legacy.save_legacy(self.files))
            else:
                self.sources[name] = matrix_models.save_keras3(name, self.files)[0]
        return self.sources[name]

    def report(self, name: str) -> dict[str, Any]:
        """The export report of `name`, exporting it with the CLI's default flags first."""
        if name not in self.codes:
            argv = ["export", "--model", str(self.source(name)), "--name", name]
            argv += ["--out", str(self.out)]
            if name in LEGACY:
                argv += ["--custom-objects", "tests.matrix_legacy"]
            self.codes[name] = exporter_main(argv)
        assert self.codes[name] == 0, f"{name}: CLI export exited {self.codes[name]}"
        return json.loads((self.out / "reports" / name / "1.json").read_text())


@pytest.fixture(scope="session")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    return Matrix(tmp_path_factory.mktemp("matrix_files"), tmp_path_factory.mktemp("matrix_out"))


@pytest.mark.parametrize("name", MATRIX)
def test_exports_frozen_with_parity(matrix: Matrix, name: str) -> None:
    report = matrix.report(name)
    assert report["passed"] and report["formats"]["produced"] == ["savedmodel", "onnx"]
    proof = report["freeze_proof"]
    assert proof["proven"] and proof["variable_ops_remaining"] == []
    runtimes = {c["runtime"] for c in report["parity"]["comparisons"]}
    assert runtimes == {"savedmodel", "savedmodel_cpp", "onnxruntime"}
    assert all(c["passed"] for c in report["parity"]["comparisons"])
    # The trained scalar shipped as the value training gave it, bit-exact in the SavedModel.
    trained = [s for s in report["scalars"] if s["used_by_inference"]]
    assert trained, f"{name} has no scalar in its inference graph"
    for scalar in trained:
        assert scalar["value"] not in (0.0, 1.0), f"{scalar['name']} never trained"
        assert scalar["savedmodel_const_bit_exact"] is True
    # Learned scale vectors (a LayerNormalization's gamma here) are in both artifacts, exactly.
    for row in report["learned_scales"]:
        assert row["savedmodel_bit_exact"] is True and row["onnx_initializer"], row
    saved = inspect_artifact(Path(report["artifacts"]["savedmodel_dir"]))
    assert saved.frozen and saved.variable_ops == [] and saved.variables == []
    onnx_model = onnx.load(report["artifacts"]["onnx_path"])
    onnx.checker.check_model(onnx_model, full_check=True)


@pytest.mark.parametrize("name", sorted(matrix_models.TABLES))
def test_tables_are_initialised_by_the_init_op(matrix: Matrix, name: str) -> None:
    report = matrix.report(name)
    tables = report["freeze_proof"]["tables"]
    assert tables and all(t["initialised_by"] == "frozen_tables_init" for t in tables)
    saved = inspect_artifact(Path(report["artifacts"]["savedmodel_dir"]))
    assert len(saved.tables) == len(tables)
    for table in saved.tables:
        assert table["op"] == "HashTableV2" and table["initialised_by"] == "frozen_tables_init"
        assert table["contents"] == "constants" and table["size"] > 0
    # ONNX: the same vocabularies as ONNX-ML lookups inside the file.
    onnx_tables = inspect_artifact(Path(report["artifacts"]["onnx_path"])).tables
    assert sorted(t["size"] for t in onnx_tables) == sorted(t["size"] for t in tables)


def test_text_model_names_its_custom_op_library(matrix: Matrix) -> None:
    report = matrix.report("text_vectorization")
    assert report["onnx"]["custom_op_library"] == "onnxruntime_extensions"
    assert report["onnx"]["rewrites"] == {"StringSplitV2": 1}
    model = onnx.load(report["artifacts"]["onnx_path"])
    assert {n.op_type for n in model.graph.node if n.domain == "ai.onnx.contrib"} == {
        "StringRegexReplace",
        "StringSplit",
    }
    # The vocabulary lookup and TextVectorization's "" mask are both ONNX-ML LabelEncoders
    # (onnxruntime-extensions' StringEqual fails on a batch with no token).
    assert [n.op_type for n in model.graph.node].count("LabelEncoder") == 2
    lookup = matrix.report("string_lookup")
    assert lookup["onnx"]["custom_op_library"] is None  # plain ONNX-ML: any ORT runs it


def test_text_model_answers_text_that_standardizes_to_nothing(matrix: Matrix) -> None:
    """A batch whose strings hold no word (empty, blank, punctuation) gives Keras' answer."""
    import keras
    import tensorflow as tf

    from exporter.verify.parity import onnx_runner

    report = matrix.report("text_vectorization")
    keras_model = keras.models.load_model(matrix.source("text_vectorization"))
    run = onnx_runner(report["artifacts"]["onnx_path"])
    for texts in (["", "   ", "?!", "\t\n"], [""], ["Red CAT!", "", "...", "dog"]):
        batch = np.array(texts, dtype=object)
        expected = keras_model(tf.constant(batch)).numpy()
        np.testing.assert_allclose(run({"sentence": batch})["score"], expected, atol=1e-6)


def test_exact_gelu_is_rewritten_and_proven(matrix: Matrix) -> None:
    report = matrix.report("transformer")
    assert report["onnx"]["rewrites"] == {"Erfc": 1}
    ops = {n.op_type for n in onnx.load(report["artifacts"]["onnx_path"]).graph.node}
    assert "Erf" in ops and "Erfc" not in ops
    onnx_rows = [c for c in report["parity"]["comparisons"] if c["runtime"] == "onnxruntime"]
    # Exact to float32 rounding, well inside the default gate (1e-4 + 1e-3 rel).
    assert onnx_rows and all(c["passed"] and c["max_abs"] < 1e-5 for c in onnx_rows), onnx_rows


def test_grouped_convolutions_convert_to_onnx_conv_groups(matrix: Matrix) -> None:
    """Keras 3 runs Conv2D(groups>1) through a nested XLA call; ONNX gets Conv(group=g)."""
    from exporter.onnx_format.inline_calls import CALL_OPS

    report = matrix.report("grouped_conv")
    assert report["onnx"]["rewrites"] == {"StatefulPartitionedCall": 2}
    model = onnx.load(report["artifacts"]["onnx_path"])
    groups = sorted(
        a.i
        for n in model.graph.node
        if n.op_type == "Conv"
        for a in n.attribute
        if a.name == "group"
    )
    assert groups == [4, 16]
    assert not {n.op_type for n in model.graph.node} & CALL_OPS
    # The SavedModel keeps Keras' own graph: the calls are inlined only for tf2onnx.
    saved = inspect_artifact(Path(report["artifacts"]["savedmodel_dir"]))
    assert saved.frozen
    onnx_rows = [c for c in report["parity"]["comparisons"] if c["runtime"] == "onnxruntime"]
    # Exact to float32 rounding, well inside the default gate (1e-4 + 1e-3 rel).
    assert onnx_rows and all(c["passed"] and c["max_abs"] < 1e-5 for c in onnx_rows), onnx_rows


def test_mixed_precision_tolerance_follows_the_policy(matrix: Matrix) -> None:
    rows = matrix.report("mixed_precision")["parity"]["comparisons"]
    # float16's 5e-3/1e-2; atol at least that (widened only to the model's own spread).
    assert all(c["rtol"] == 1e-2 and c["atol"] >= 5e-3 for c in rows), rows
    assert all(c["atol"] == 5e-3 or "own spread" in c["tolerance"] for c in rows), rows
    assert all("float16" in c["tolerance"] for c in rows)
    float32_rows = matrix.report("bn_cnn")["parity"]["comparisons"]
    # A shallow float32 CNN: its own eager/tf.function spread stays under the default atol.
    assert {c["tolerance"] for c in float32_rows} == {"float32 output"}
    assert {(c["atol"], c["rtol"]) for c in float32_rows} == {(1e-4, 1e-3)}


@pytest.mark.parametrize("name", MATRIX)
def test_served_model_agrees(server: Any, matrix: Matrix, name: str) -> None:
    """The embedded server serves the export; gRPC (and REST) agree with the SavedModel."""
    from exporter.options import ParityOptions
    from exporter.verify.served_parity import run_parity

    if not server.embedded:
        pytest.skip("a remote server does not serve this session's fresh exports")
    matrix.report(name)
    report = run_parity(matrix.out, name, ParityOptions(samples=2))
    runtimes = {c.runtime for c in report.comparisons}
    assert {"grpc", "rest", "onnxruntime"} <= runtimes, (report.errors, report.skipped)
    assert report.errors == {} and report.passed, report.table()


def test_inspect_cli_lists_tables(matrix: Matrix, capsys: pytest.CaptureFixture) -> None:
    matrix.report("text_vectorization")
    savedmodel = matrix.out / "tfserving" / "text_vectorization" / "1"
    assert exporter_main(["inspect", str(savedmodel)]) == 0
    text = capsys.readouterr().out
    assert "lookup tables (1):" in text and "string -> int64" in text
    assert "init_op=frozen_tables_init" in text


def test_npz_string_inputs_are_honoured(matrix: Matrix, tmp_path: Path) -> None:
    """--inputs with a text (str) array joins the parity batches of a string model."""
    inputs = tmp_path / "sentences.npz"
    np.savez(inputs, sentence=np.array(["Red cat!", "unknown words here", ""], dtype=str))
    out = tmp_path / "out"
    path = matrix.source("text_vectorization")
    argv = ["export", "--model", str(path), "--name", "tv", "--out", str(out)]
    assert exporter_main([*argv, "--inputs", str(inputs), "--formats", "savedmodel"]) == 0
    report = json.loads((out / "reports" / "tv" / "1.json").read_text())
    assert report["parity"]["samples"] == 2 * 4 + 1 + 1  # random, no-token, the user's
    assert report["formats"] == {
        "produced": ["savedmodel"],
        "not_produced": {"onnx": "not requested (--formats savedmodel)"},
    }
    assert report["artifacts"]["onnx_path"] is None
    assert not (out / "onnx").exists()


def test_onnx_backend_serves_the_string_models(matrix: Matrix, tmp_path: Path) -> None:
    """`--backend onnx` serves the raw-string models (onnxruntime-extensions' ops, strings fed
    as UTF-8 text) and agrees with the SavedModel over gRPC and REST."""
    from exporter.options import ParityOptions
    from exporter.verify.served_parity import run_parity
    from serving.launch import start_server_process

    names = sorted(matrix_models.STRING_INPUT)
    entries = []
    for name in names:
        matrix.report(name)
        base = matrix.out / "onnx" / name  # Triton's layout: BASE/VERSION/model.onnx
        entries.append(f'config {{ name: "{name}" base_path: "{base}" model_platform: "onnx" }}')
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n  " + "\n  ".join(entries) + "\n}\n")
    server = start_server_process(["--backend=onnx", f"--model_config_file={config}"])
    try:
        for name in names:
            options = ParityOptions(
                target=server.grpc_target, rest_target=server.rest_target, samples=2
            )
            report = run_parity(matrix.out, name, options)
            runtimes = {c.runtime for c in report.comparisons}
            assert {"grpc", "rest"} <= runtimes, (name, report.errors, report.skipped)
            assert report.errors == {} and report.passed, report.table()
    finally:
        server.stop()
