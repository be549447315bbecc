"""The exporter as a new user meets it: what `--inputs` may load, what the audit catches, what
"frozen" means, Keras 3's own formats, parity's flags and a quiet, informative CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.cli import main
from tests.conftest import one_error_line, run_cli

REPO = Path(__file__).resolve().parent.parent

FACTORIES = '''
import keras
import numpy as np


class LearnedTemp(keras.layers.Layer):
    """A custom layer's scalar, as users write it: add_weight(shape=(), initializer="ones")."""

    def build(self, input_shape):
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones")

    def call(self, x):
        return x / self.temperature


def temp_model():
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(3, name="dense")(inputs)
    return keras.Model(inputs, LearnedTemp(name="temp")(hidden))


def trained_temp_model():
    model = temp_model()
    model.get_layer("temp").temperature.assign(1.75)
    return model
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("factories") / "user_models.py"
    path.write_text(FACTORIES)
    return path


@pytest.fixture(scope="module")
def exported(factories: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export of the LearnedTemp model (savedmodel + onnx), shared by the parity tests."""
    out = tmp_path_factory.mktemp("exported")
    assert (
        main(
            [
                "export",
                "--model",
                f"{factories}:temp_model",
                "--name",
                "temp",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    return out


def _export_temp(capsys, factories: Path, out: Path, *flags: str) -> tuple[int, str, str]:
    """`export` of the LearnedTemp model as `t` into `out`."""
    spec = f"{factories}:temp_model"
    return run_cli(capsys, "export", "--model", spec, "--name", "t", "--out", str(out), *flags)


# --- 1. --inputs never unpickles ------------------------------------------------------------


class _RunsCode:
    """A pickle payload: unpickling it creates `self.marker` (the side effect to look for)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _crafted(tmp_path: Path, suffix: str) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    payload = np.empty((1, 4), dtype=object)
    payload[0, 0] = _RunsCode(marker)
    path = tmp_path / f"crafted{suffix}"
    if suffix == ".npz":
        np.savez(path, features=payload)
    else:
        np.save(path, payload)
    return path, marker


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_crafted_pickle_inputs_are_refused_and_nothing_runs(
    capsys, factories: Path, tmp_path: Path, suffix: str
) -> None:
    crafted, marker = _crafted(tmp_path, suffix)
    out = tmp_path / "out"
    code, _, err = _export_temp(capsys, factories, out, "--inputs", str(crafted))
    assert code == 2, err
    line = one_error_line(err)
    assert str(crafted) in line and ("pickle" in line or ".npy" in line) and "np.savez" in line
    assert not marker.exists(), "the pickle ran"
    assert not out.exists(), "refused inputs must stop the export before anything is written"


def test_crafted_pickle_inputs_are_refused_by_parity(
    capsys, exported: Path, tmp_path: Path
) -> None:
    crafted, marker = _crafted(tmp_path, ".npz")
    code, _, err = run_cli(
        capsys,
        "parity",
        "--export",
        str(exported),
        "--model-name",
        "temp",
        "--inputs",
        str(crafted),
        "--samples",
        "0",
    )
    assert code == 2, err
    assert "pickle" in one_error_line(err)
    assert not marker.exists(), "the pickle ran"


def test_text_file_passed_as_npz_exits_2_with_one_line(
    capsys, factories: Path, tmp_path: Path
) -> None:
    text = tmp_path / "inputs.npz"
    text.write_text("features: 1 2 3 4\n")
    code, _, err = _export_temp(capsys, factories, tmp_path / "out", "--inputs", str(text))
    assert code == 2, err
    assert "not an .npz archive" in one_error_line(err) and "unexpected" not in err


# --- 2. "unchanged since init" from each weight's own initial value -----------------------

INITIALIZED = """
import keras
import tf_keras

INITIALIZERS = {
    "ones": ((), "ones"),
    "zeros_1": ((1,), "zeros"),
    "constant": ((), keras.initializers.Constant(0.25)),
    "random": ((), keras.initializers.RandomNormal()),
    "vector": ((3,), "ones"),
    "random_matrix": ((3, 3), "glorot_uniform"),
}


class Weights3(keras.layers.Layer):
    def build(self, input_shape):
        for name, (shape, init) in INITIALIZERS.items():
            setattr(self, name, self.add_weight(name=name, shape=shape, initializer=init))

    def call(self, x):
        total = sum(keras.ops.sum(getattr(self, n)) for n in INITIALIZERS)
        return x * total


class Weights2(tf_keras.layers.Layer):
    def build(self, input_shape):
        inits = {"constant": tf_keras.initializers.Constant(0.25),
                 "random": tf_keras.initializers.RandomNormal()}
        for name, (shape, init) in INITIALIZERS.items():
            init = inits.get(name, init)
            setattr(self, name, self.add_weight(name=name, shape=shape, initializer=init))

    def call(self, x):
        import tensorflow as tf

        return x * sum(tf.reduce_sum(getattr(self, n)) for n in INITIALIZERS)


def _model(api, layer, trained):
    inputs = api.Input((2,), name="x")
    model = api.Model(inputs, layer(name="w")(inputs))
    for w in model.get_layer("w").weights if trained else ():
        w.assign(w + 0.5)
    return model


def keras3():
    return _model(keras, Weights3, trained=False)


def keras3_trained():
    return _model(keras, Weights3, trained=True)


def tf_keras2():
    return _model(tf_keras, Weights2, trained=False)


def tf_keras2_trained():
    return _model(tf_keras, Weights2, trained=True)
"""

_SCALARS = {"ones", "zeros_1", "constant", "random"}
_TENSORS = {"vector", "random_matrix"}


def _audit_json(capsys, spec: str, *flags: str) -> dict:
    code, out, err = run_cli(capsys, "audit", "--model", spec, "--json", *flags)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("initialized") / "initialized.py"
    path.write_text(INITIALIZED)
    return path


@pytest.mark.parametrize("factory", ["keras3", "tf_keras2"])
def test_untrained_custom_weights_are_flagged_unchanged(
    capsys, initialized: Path, factory: str
) -> None:
    audit = _audit_json(capsys, f"{initialized}:{factory}")
    status = {s["name"].rsplit("/", 1)[-1].split(":")[0]: s["status"] for s in audit["scalars"]}
    assert status == dict.fromkeys(_SCALARS, "unchanged"), status
    unchanged = {
        n.rsplit("/", 1)[-1].split(":")[0] for n in audit["non_scalar_summary"]["unchanged"]
    }
    assert unchanged == _TENSORS
    codes = [f["code"] for f in audit["findings"]]
    assert codes.count("unchanged_since_init") == len(_SCALARS) + 1  # one for the tensors


@pytest.mark.parametrize("factory", ["keras3_trained", "tf_keras2_trained"])
def test_trained_custom_weights_are_not_flagged(capsys, initialized: Path, factory: str) -> None:
    audit = _audit_json(capsys, f"{initialized}:{factory}")
    assert {s["status"] for s in audit["scalars"]} == {"ok"}
    assert audit["non_scalar_summary"]["unchanged"] == []


def test_untrained_weights_are_flagged_after_a_keras_file_round_trip(
    capsys, factories: Path, tmp_path: Path
) -> None:
    sys.path.insert(0, str(factories.parent))
    try:
        import user_models
    finally:
        sys.path.remove(str(factories.parent))
    for factory, expected in (("temp_model", "unchanged"), ("trained_temp_model", "ok")):
        path = tmp_path / f"{factory}.keras"
        getattr(user_models, factory)().save(path)
        audit = _audit_json(capsys, str(path), "--custom-objects", str(factories))
        assert audit["scalars"][0]["status"] == expected, audit["scalars"]


def test_python_api_records_initial_values(initialized: Path) -> None:
    import importlib.util

    from exporter import audit_model, record_initial_values

    spec = importlib.util.spec_from_file_location("initialized_api", initialized)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with record_initial_values():
        model = module.keras3()
    report = audit_model(model)
    assert report.scalar("random").status == "unchanged"  # its own random draw, recorded
    assert report.scalar("constant").initial_value == 0.25


# --- 4. Keras 3's own formats --------------------------------------------------------------


def _user_model(factories: Path, name: str = "temp_model"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_models_direct", factories)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, getattr(module, name)()


def test_keras3_h5_file_loads_through_keras3(capsys, factories: Path, tmp_path: Path) -> None:
    _, model = _user_model(factories)
    path = tmp_path / "model.h5"
    model.save(path)  # Keras 3's legacy HDF5 writer: keras_version 3.x, batch_shape configs
    audit = _audit_json(capsys, str(path), "--custom-objects", str(factories))
    assert [s["status"] for s in audit["scalars"]] == ["unchanged"]


def test_keras3_model_export_directory_is_refused_saying_what_to_pass(
    capsys, factories: Path, tmp_path: Path
) -> None:
    _, model = _user_model(factories)
    exported = tmp_path / "exported"
    model.export(str(exported), verbose=False)
    code, _, err = run_cli(capsys, "audit", "--model", str(exported))
    assert code == 2, err
    line = one_error_line(err)
    assert "model.export()" in line and ".keras" in line and "inspect" in line
    assert "_UserObject" not in err
