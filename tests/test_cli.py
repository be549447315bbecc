"""`python -m exporter`: exit codes and one-line messages for good and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import pytest

from tests import models
from tests.conftest import REPO_ROOT, one_error_line, run_cli

FACTORIES = """
from tests import models

def reference():
    return models.reference_model()

def nan_scale():
    model = models.reference_model()
    model.get_layer("scale").weights[0].assign(float("nan"))
    return model

def recipe3():
    return models.recipe3_model().model

def not_a_model():
    return {"weights": [1.0]}
"""


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("factories") / "factories.py"
    path.write_text(FACTORIES)
    return path


def test_export_from_factory_prints_summary(capsys, factories: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(
        capsys,
        "export",
        "--model",
        f"{factories}:reference",
        "--name",
        "ref",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    assert "Frozen proof: PASSED" in out and "parity PASSED" in out
    assert "scale/scale" in out and "offset/offset" in out
    assert (tmp_path / "tfserving" / "ref" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "onnx" / "ref" / "1" / "model.onnx").is_file()
    assert json.loads((tmp_path / "reports" / "ref" / "1.json").read_text())["passed"]
    assert "[export] freeze" in err  # progress per stage


def test_missing_model_file_exits_2(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        str(tmp_path / "nope.keras"),
        "--name",
        "m",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2
    assert "Model file not found" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_factory_not_returning_a_model_exits_2(capsys, factories: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        f"{factories}:not_a_model",
        "--name",
        "m",
        "--out",
        str(tmp_path),
    )
    assert code == 2
    assert "returned dict, not a Keras model" in one_error_line(err)


def test_wrong_custom_objects_exits_2(capsys, factories: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        f"{factories}:reference",
        "--name",
        "m",
        "--out",
        str(tmp_path),
        "--custom-objects",
        "no_such_module_xyz",
    )
    assert code == 2
    assert "no_such_module_xyz" in one_error_line(err)


def test_nan_scalar_exits_1(capsys, factories: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys, "export", "--model", f"{factories}:nan_scale", "--name", "m", "--out", str(tmp_path)
    )
    assert code == 1
    assert "scale/scale" in one_error_line(err) and "non-finite" in err
    assert not (tmp_path / "tfserving").exists()


def test_unwritable_output_exits_2(capsys, factories: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        f"{factories}:reference",
        "--name",
        "m",
        "--out",
        str(blocker / "out"),
    )
    assert code == 2
    assert "Cannot create output directory" in one_error_line(err)


def test_keras_file_with_lambda_needs_unsafe_flag(capsys, tmp_path: Path) -> None:
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    code, _, err = run_cli(capsys, "audit", "--model", str(path))
    assert code == 2
    assert "--allow-unsafe-deserialization" in one_error_line(err)
    code, out, _ = run_cli(capsys, "audit", "--model", str(path), "--allow-unsafe-deserialization")
    assert code == 0, out


def test_keras_file_round_trip_exports(capsys, tmp_path: Path) -> None:
    model = models.multi_io_model()
    path = tmp_path / "multi.keras"
    model.save(path)
    code, out, err = run_cli(
        capsys,
        "export",
        "--model",
        str(path),
        "--name",
        "multi",
        "--out",
        str(tmp_path / "out"),
        "--opset",
        "18",
    )
    assert code == 0, err
    assert "class_logits/log_temperature" in out


def test_audit_json_and_exit_1_for_untracked(capsys, factories: Path) -> None:
    code, out, _ = run_cli(capsys, "audit", "--model", f"{factories}:recipe3", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["has_errors"] is True
    assert any(not s["tracked"] and s["used_by_inference"] for s in data["scalars"])


def test_module_entry_point_exit_codes(factories: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    usage = subprocess.run(
        [sys.executable, "-m", "exporter", "export"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert usage.returncode == 2 and "--model" in usage.stderr
    audit = subprocess.run(
        [sys.executable, "-m", "exporter", "audit", "--model", f"{factories}:recipe3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert audit.returncode == 1, audit.stderr
    assert "untracked" in audit.stdout.lower()


@pytest.mark.parametrize("save_format", ["h5", "tf"])
def test_legacy_keras2_files_export(capsys, tmp_path: Path, save_format: str) -> None:
    import numpy as np
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((10,), name="features"),
            tf_keras.layers.Dense(4, activation="relu"),
            tf_keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    model.fit(np.random.rand(16, 10), np.random.rand(16, 1), verbose=0)
    path = tmp_path / ("legacy.h5" if save_format == "h5" else "legacy_savedmodel")
    model.save(path, save_format=save_format)
    code, out, err = run_cli(
        capsys, "export", "--model", str(path), "--name", "legacy", "--out", str(tmp_path / "out")
    )
    assert code == 0, err
    assert "Frozen proof: PASSED" in out
    report = json.loads((tmp_path / "out" / "reports" / "legacy" / "1.json").read_text())
    assert report["signature"]["inputs"] == {"features": {"dtype": "float32", "shape": [None, 10]}}


def test_user_parity_inputs(capsys, factories: Path, tmp_path: Path) -> None:
    import numpy as np

    good = tmp_path / "good.npz"
    np.savez(good, features=np.linspace(-1, 1, 30).reshape(3, 10))
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        f"{factories}:reference",
        "--name",
        "m",
        "--out",
        str(tmp_path / "out"),
        "--inputs",
        str(good),
    )
    assert code == 0, err
    assert json.loads((tmp_path / "out/reports/m/1.json").read_text())["parity"]["samples"] == 9
    bad = tmp_path / "bad.npz"
    np.savez(bad, wrong_name=np.zeros((1, 10)))
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        f"{factories}:reference",
        "--name",
        "m",
        "--out",
        str(tmp_path / "out"),
        "--inputs",
        str(bad),
    )
    assert code == 2
    assert "['wrong_name']" in one_error_line(err) and "['features']" in err


def test_keras_file_with_unknown_custom_layer_names_it(capsys, tmp_path: Path) -> None:
    @keras.saving.register_keras_serializable(package="only_in_this_test")
    class Doubler(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x * 2.0

    inputs = keras.Input((4,), name="x")
    path = tmp_path / "custom.keras"
    keras.Model(inputs, Doubler()(inputs)).save(path)
    keras.saving.get_custom_objects().pop("only_in_this_test>Doubler")
    code, _, err = run_cli(capsys, "audit", "--model", str(path))
    assert code == 2
    line = one_error_line(err)
    assert "unknown class 'Doubler'" in line and "--custom-objects" in line
    assert len(line) < 400
