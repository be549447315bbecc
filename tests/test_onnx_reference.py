"""`--runtimes onnx_reference`: the ONNX file checked against ONNX's reference evaluator too."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from exporter.cli import main as exporter_main
from exporter.errors import OnnxReferenceError
from exporter.verify.onnx_reference import custom_ops, reference_runner
from tests import models


def test_cli_runs_the_reference_evaluator_on_request(tmp_path: Path) -> None:
    argv = ["export", "--model", "tests.models:reference_model", "--name", "ref"]
    argv += ["--out", str(tmp_path), "--quiet", "--runtimes", "onnxruntime,onnx_reference"]
    argv += ["--formats", "onnx"]
    assert exporter_main(argv) == 0
    report = json.loads((tmp_path / "reports" / "ref" / "1.json").read_text())
    rows = {c["runtime"]: c for c in report["parity"]["comparisons"]}
    assert set(rows) == {"onnxruntime", "onnx_reference"}
    assert rows["onnx_reference"]["passed"] and rows["onnx_reference"]["max_abs"] < 1e-5


def test_default_runtimes_leave_the_reference_evaluator_out(tmp_path: Path) -> None:
    from exporter import export_model
    from exporter.options import ExportOptions

    report = export_model(
        models.reference_model(), tmp_path, "ref", ExportOptions(formats=("onnx",))
    )
    assert {c.runtime for c in report.parity.comparisons} == {"onnxruntime"}


def test_a_custom_domain_op_is_named(tmp_path: Path) -> None:
    node = helper.make_node("StringSplit", ["x", "sep"], ["i", "v", "s"], domain="ai.onnx.contrib")
    graph = helper.make_graph(
        [node],
        "split",
        [
            helper.make_tensor_value_info("x", TensorProto.STRING, [None]),
            helper.make_tensor_value_info("sep", TensorProto.STRING, [1]),
        ],
        [helper.make_tensor_value_info("v", TensorProto.STRING, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.opset_import.append(helper.make_opsetid("ai.onnx.contrib", 1))
    onnx.save(model, tmp_path / "model.onnx")
    assert custom_ops(model) == ["ai.onnx.contrib.StringSplit"]
    with pytest.raises(OnnxReferenceError, match=r"ai\.onnx\.contrib\.StringSplit"):
        reference_runner(tmp_path / "model.onnx")


def test_a_lookup_table_model_runs_on_the_reference_evaluator(tmp_path: Path) -> None:
    """Vocabularies are ONNX-ML LabelEncoders, which onnx.reference implements (it has no
    CategoryMapper, tf2onnx's own choice for string -> int64)."""
    import keras

    from exporter import export_model
    from exporter.options import ExportOptions

    keras.utils.set_random_seed(0)
    colour = keras.Input((1,), dtype="string", name="colour")
    ids = keras.layers.StringLookup(vocabulary=["red", "green", "blue"])(colour)
    x = keras.layers.Flatten()(keras.layers.Embedding(4, 2)(ids))
    model = keras.Model(colour, keras.layers.Dense(1, name="score")(x))
    options = ExportOptions(runtimes=("savedmodel", "onnxruntime", "onnx_reference"))
    report = export_model(model, tmp_path, "lookup", options)
    rows = {c.runtime: c for c in report.parity.comparisons}
    assert rows["onnx_reference"].passed and rows["onnx_reference"].max_abs < 1e-6
    onnx_model = onnx.load(report.onnx_path)
    assert "CategoryMapper" not in {n.op_type for n in onnx_model.graph.node}
