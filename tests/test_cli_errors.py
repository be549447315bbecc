"""Every CLI failure is one `error:` line with its exit code, found before anything is built.

Bad `--inputs`, corrupt artifacts, truncated `.keras` files, an unwritable reports directory,
unexpected exceptions, underscore spellings of flags, and `--help` without TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from onnx import TensorProto, helper
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from exporter.cli import main
from tests.conftest import REPO_ROOT, one_error_line, run_cli

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
REFERENCE = "tests.models:reference_model"  # input "features": float32 (None, 10)

FACTORIES = """
import keras


class FailsAtInference(keras.layers.Layer):
    def call(self, x, training=None):
        if training is False:
            raise RuntimeError("kernel exploded")
        return x


def fails_when_traced():
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, FailsAtInference()(inputs))
"""


def _error_line(err: str) -> str:
    """The one `error:` line, which must also be the last line."""
    line = one_error_line(err)
    assert err.rstrip().splitlines()[-1] == line, err
    return line


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- --inputs checked against the signature before tracing ----------------------------------

BAD_INPUTS = {
    "wrong_static_dim": ({"features": np.zeros((3, 7), np.float32)}, "shape (3, 7)"),
    "wrong_rank": ({"features": np.zeros((3,), np.float32)}, "shape (3,)"),
    "strings_for_floats": ({"features": np.array([["a"] * 10])}, "holds string"),
    "wrong_name": ({"feature": np.zeros((1, 10), np.float32)}, "['feature']"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_one_line_exit_2_before_tracing(capsys, tmp_path: Path, case: str) -> None:
    arrays, expected = BAD_INPUTS[case]
    npz = tmp_path / f"{case}.npz"
    np.savez(npz, **arrays)
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        REFERENCE,
        "--name",
        "m",
        "--out",
        str(out),
        "--inputs",
        str(npz),
    )
    assert code == 2
    line = _error_line(err)
    assert f"--inputs {npz}" in line and expected in line and "'features'" in line
    assert "[export]" not in err, "nothing may be traced or written before inputs are checked"
    assert not out.exists()


def test_inputs_of_castable_kind_are_accepted(capsys, tmp_path: Path) -> None:
    """float64 for a float32 input and ints for floats are cast, as before."""
    npz = tmp_path / "ints.npz"
    np.savez(npz, features=np.arange(20, dtype=np.int64).reshape(2, 10))
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        REFERENCE,
        "--name",
        "m",
        "--out",
        str(tmp_path / "out"),
        "--inputs",
        str(npz),
    )
    assert code == 0, err


# --- corrupt and truncated artifacts --------------------------------------------------------


def _saved_model_bytes() -> bytes:
    meta = meta_graph_pb2.MetaGraphDef()
    meta.meta_info_def.tags.append("serve")
    meta.graph_def.node.add(name="x", op="Placeholder")
    return saved_model_pb2.SavedModel(meta_graphs=[meta]).SerializeToString()


def _onnx_bytes() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize(
    ("artifact", "content", "expected"),
    [
        ("saved_model.pb", b"\x0a\xff\xff\xff\xff\x0f garbage", "corrupt or truncated"),
        ("saved_model.pb", _saved_model_bytes()[:-5], "corrupt or truncated"),
        ("saved_model.pb", b"", "holds no MetaGraph"),
        ("model.onnx", b"\x0a\xff\xff\xff\xff\x0f garbage", "corrupt, truncated"),
        ("model.onnx", _onnx_bytes()[:-9], "corrupt, truncated"),
        ("model.onnx", b"", "corrupt, truncated"),
    ],
)
def test_inspect_corrupt_artifact_one_line(
    capsys, tmp_path: Path, artifact: str, content: bytes, expected: str
) -> None:
    (tmp_path / artifact).write_bytes(content)
    code, out, err = run_cli(capsys, "inspect", str(tmp_path))
    assert code == 2 and out == ""
    line = _error_line(err)
    assert expected in line and str(tmp_path / artifact) in line
    assert "Traceback" not in err


def test_inspect_intact_artifacts_still_work(capsys, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(_onnx_bytes())
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "model.onnx"))
    assert code == 0, err
    assert "(onnx): frozen" in out


def test_debug_shows_the_traceback_then_the_error_line(capsys, tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    code, _, err = run_cli(capsys, "inspect", "--debug", str(tmp_path))
    assert code == 2
    assert "Traceback (most recent call last)" in err and "DecodeError" in err
    assert "corrupt or truncated" in _error_line(err)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_keras_file_says_corrupt_not_missing(capsys, tmp_path: Path, keep: float) -> None:
    inputs = keras.Input((4,), name="x")
    good = tmp_path / "good.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.keras"
    bad.write_bytes(data[: int(len(data) * keep)])
    code, _, err = run_cli(capsys, "audit", "--model", str(bad))
    assert code == 2
    line = _error_line(err)
    assert "corrupt" in line and "truncated" in line and str(bad) in line
    assert "not found" not in line.lower()


# --- failures leave the tree as it was ------------------------------------------------------


def test_unwritable_reports_dir_fails_before_anything_is_published(capsys, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "reports").write_text("a file where the reports directory should be")
    before = _tree(out)
    code, _, err = run_cli(capsys, "export", "--model", REFERENCE, "--name", "m", "--out", str(out))
    assert code == 2
    assert "reports" in _error_line(err) and "not a directory" in err
    assert "[export] trace" not in err, "checked before any work"
    assert _tree(out) == before


def test_failed_export_leaves_no_empty_directories(capsys, tmp_path: Path) -> None:
    factories = tmp_path / "nan_factory.py"
    factories.write_text(
        "from tests import models\n\n"
        "def nan_scale():\n"
        "    model = models.reference_model()\n"
        "    model.get_layer('scale').weights[0].assign(float('nan'))\n"
        "    return model\n"
    )
    out = tmp_path / "new" / "out"
    code, _, err = run_cli(
        capsys, "export", "--model", f"{factories}:nan_scale", "--name", "m", "--out", str(out)
    )
    assert code == 1 and "non-finite" in _error_line(err)
    assert not (tmp_path / "new").exists()


def test_unexpected_exception_is_one_line_exit_1(capsys, tmp_path: Path) -> None:
    factories = tmp_path / "factories.py"
    factories.write_text(FACTORIES)
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        f"{factories}:fails_when_traced",
        "--name",
        "m",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 1
    line = _error_line(err)
    assert "RuntimeError" in line and "kernel exploded" in line and "--debug" in line
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --- flags and startup ----------------------------------------------------------------------


def test_usage_error_ends_with_one_error_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", "m.keras"])
    assert exit_info.value.code == 2
    line = _error_line(capsys.readouterr().err)
    assert "--name" in line and "--help" in line


def test_underscore_spelling_of_a_dashed_flag_is_accepted(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys,
        "audit",
        "--model",
        str(tmp_path / "missing.keras"),
        "--custom_objects",
        "no_such_module_xyz",
    )
    assert code == 2
    assert "no_such_module_xyz" in _error_line(err)  # the flag was taken, the module is missing


def _modules_loaded_by(code: str) -> set[str]:
    probe = (
        "import atexit, json, sys\n"
        "heavy = ('tensorflow', 'keras', 'tf_keras', 'onnx', 'tf2onnx', 'onnxruntime')\n"
        "atexit.register(lambda: print(json.dumps([m for m in heavy if m in sys.modules])))\n"
        + code
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=ENV,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import exporter.cli",
        "import runpy\nsys.argv = ['exporter', '--help']\nrunpy.run_module('exporter', "
        "run_name='__main__')",
        "import runpy\nsys.argv = ['exporter', 'export', '--model', 'm']\n"
        "runpy.run_module('exporter', run_name='__main__')",
    ],
    ids=["import", "help", "usage-error"],
)
def test_cli_answers_without_importing_tensorflow(code: str) -> None:
    assert _modules_loaded_by(code) == set()


def test_public_api_still_imports_from_the_package() -> None:
    import exporter

    assert callable(exporter.export_model) and callable(exporter.audit_model)
    assert issubclass(exporter.ExportError, exporter.ExporterError)
    with pytest.raises(AttributeError):
        exporter.no_such_name  # noqa: B018
