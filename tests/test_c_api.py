"""The C++ loader row: TensorFlow's C API (`TF_LoadSessionFromSavedModel`, what TF Serving links).

It must agree with the Python loader on what both accept, and catch what only the C++ loader
refuses: tensorflow/cc/saved_model/loader.cc validates every graph and library constant
(`ValidateSavedTensors`) and refuses self-recursive functions before creating the Session; the
Python loader does neither, so such a SavedModel loads and serves in Python and fails in TF
Serving. A missing asset file is *not* such a case: neither loader checks that assets exist
(both only feed their paths to the init op), which the last test pins.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from exporter import export_model
from exporter.errors import CppLoaderError, UsageError
from exporter.options import ExportOptions, ParityOptions
from exporter.verify.c_api import CppSavedModel, cpp_runner, unavailable_reason
from exporter.verify.parity import savedmodel_runner
from exporter.verify.runtimes import DEFAULT_RUNTIMES, check_runtimes
from tests import models


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """The reference model exported (SavedModel only) with the default runtimes."""
    model = models.reference_model()
    models.train(model, epochs=1)
    out = tmp_path_factory.mktemp("c_api")
    report = export_model(model, out, "ref", ExportOptions(formats=("savedmodel",)))
    assert {c.runtime for c in report.parity.comparisons} == {"savedmodel", "savedmodel_cpp"}
    assert report.parity.passed
    batch = {
        name: np.random.default_rng(0).normal(size=(3, *spec.shape[1:])).astype("float32")
        for name, spec in report_specs(report).items()
    }
    return report.savedmodel_dir, batch


def report_specs(report) -> dict[str, tf.TensorSpec]:
    return {
        name: tf.TensorSpec([None, *spec["shape"][1:]], spec["dtype"])
        for name, spec in report.signature["inputs"].items()
    }


def _tampered(source: Path, destination: Path, edit) -> Path:
    shutil.copytree(source, destination)
    proto = saved_model_pb2.SavedModel.FromString((destination / "saved_model.pb").read_bytes())
    edit(proto.meta_graphs[0])
    (destination / "saved_model.pb").write_bytes(proto.SerializeToString())
    return destination


def _self_recursive_function(meta_graph) -> None:
    """An unused library function that calls itself (loader.cc: ValidateFunctionNotRecursive)."""
    function = meta_graph.graph_def.library.function.add()
    function.signature.name = "calls_itself"
    function.signature.output_arg.add(name="y", type=tf.float32.as_datatype_enum)
    function.node_def.add(name="again", op="calls_itself")
    function.ret["y"] = "again:y:0"


def _constant_of_unknown_size(meta_graph) -> None:
    """An unused HostConst whose tensor has a -1 dim (loader.cc: ValidateSavedTensors)."""
    node = meta_graph.graph_def.node.add(name="unknown_size", op="HostConst")
    node.attr["dtype"].type = tf.float32.as_datatype_enum
    node.attr["value"].tensor.dtype = tf.float32.as_datatype_enum
    node.attr["value"].tensor.tensor_shape.dim.add(size=-1)


def test_the_wheel_exposes_the_c_api() -> None:
    assert unavailable_reason() == ""
    assert "savedmodel_cpp" in DEFAULT_RUNTIMES


def test_cpp_loader_agrees_with_the_python_loader(reference: tuple) -> None:
    path, batch = reference
    cpp, python = cpp_runner(path)(batch), savedmodel_runner(path)(batch)
    assert cpp.keys() == python.keys()
    for key in cpp:
        assert cpp[key].dtype == python[key].dtype and cpp[key].shape == python[key].shape
        np.testing.assert_allclose(cpp[key], python[key], rtol=1e-6, atol=1e-6)


def test_strings_round_trip_through_tf_tstring(tmp_path: Path) -> None:
    """Short (inline), long (heap) and empty strings in and out, through the C API."""

    class Upper(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"upper": tf.strings.upper(text), "length": tf.strings.length(text)}

    module = Upper()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    text = np.array([b"", b"cat", "gr\u00fcn".encode(), b"a sentence well past 22 bytes!" * 3])
    got = cpp_runner(tmp_path)({"text": text})
    assert got["upper"].tolist() == [t.upper() for t in text.tolist()]
    assert got["length"].tolist() == [len(t) for t in text.tolist()]


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (_self_recursive_function, "is self recursive"),
        (_constant_of_unknown_size, "initializes from a tensor with -1 elements"),
    ],
)
def test_cpp_loader_refuses_what_the_python_loader_serves(
    reference: tuple, tmp_path: Path, edit, refusal: str
) -> None:
    path, batch = reference
    tampered = _tampered(path, tmp_path / "1", edit)
    python = savedmodel_runner(tampered)(batch)  # the Python loader loads and runs it
    np.testing.assert_array_equal(python["target"], savedmodel_runner(path)(batch)["target"])
    with pytest.raises(CppLoaderError) as refused:
        cpp_runner(tampered)
    message = str(refused.value)
    assert "TF_LoadSessionFromSavedModel" in message and "FAILED_PRECONDITION" in message
    assert refusal in message


def test_parity_command_reports_the_cpp_refusal(reference: tuple, tmp_path: Path) -> None:
    """`python -m exporter parity` on such an export: SavedModel rows pass, the C++ row fails."""
    from exporter.verify.served_parity import run_parity

    path, _ = reference
    _tampered(path, tmp_path / "tfserving" / "ref" / "1", _self_recursive_function)
    report = run_parity(tmp_path, "ref", ParityOptions(samples=1, batch_sizes=(2,)))
    assert "is self recursive" in report.errors["savedmodel_cpp"]
    assert not report.passed and "savedmodel_cpp" in report.table()


def test_a_missing_asset_is_accepted_by_both_loaders(reference: tuple, tmp_path: Path) -> None:
    """No loader checks that a named asset exists: it only feeds the path to the init op."""
    path, batch = reference

    def name_a_missing_asset(meta_graph) -> None:
        asset = meta_graph.asset_file_def.add(filename="vocab.txt")
        asset.tensor_info.name = "missing_asset_path:0"
        node = meta_graph.graph_def.node.add(name="missing_asset_path", op="Const")
        node.attr["dtype"].type = tf.string.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto("vocab.txt"))

    tampered = _tampered(path, tmp_path / "1", name_a_missing_asset)
    assert not (tampered / "assets" / "vocab.txt").exists()
    np.testing.assert_allclose(
        cpp_runner(tampered)(batch)["target"],
        savedmodel_runner(tampered)(batch)["target"],
        atol=1e-6,
    )


def test_the_session_is_closed_when_released(reference: tuple) -> None:
    path, batch = reference
    loaded = CppSavedModel(path)
    loaded.run(batch)
    loaded.close()
    loaded.close()  # idempotent: the finalizer runs once


def test_runtimes_are_checked_when_the_options_are_built() -> None:
    assert check_runtimes(["onnx_reference", "savedmodel"]) == ("savedmodel", "onnx_reference")
    assert ExportOptions().runtimes == ParityOptions().runtimes == DEFAULT_RUNTIMES
    with pytest.raises(UsageError, match="unknown runtime tensorrt"):
        ExportOptions(runtimes=("tensorrt",))
    with pytest.raises(UsageError, match="runs nothing on the savedmodel artifact"):
        ExportOptions(runtimes=("onnxruntime",))
    assert ExportOptions(runtimes=("onnxruntime",), formats=("onnx",)).runtimes == ("onnxruntime",)
