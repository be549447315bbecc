"""The exporter as a new user meets it: what `--inputs` may load, what the audit catches, what
"frozen" means, Keras 3's own formats, parity's flags and a quiet, informative CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.cli import main
from tests.conftest import REPO_ROOT, one_error_line, run_cli

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


def marks_when_built():
    """A factory that leaves a trace: validation must refuse bad flags before calling it."""
    import os
    import pathlib

    pathlib.Path(os.environ["FACTORY_MARKER"]).touch()
    return temp_model()


def kept_model():
    """A 64x32 kernel (2048 elements): past --max-frozen-bytes 1KiB it stays a variable."""
    inputs = keras.Input((64,), name="features")
    return keras.Model(inputs, LearnedTemp(name="temp")(keras.layers.Dense(32, name="big")(inputs)))
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
    for factory, expected in (("temp_model", "unchanged"), ("trained_temp_model", "ok")):
        path = tmp_path / f"{factory}.keras"
        _user_model(factories, factory)[1].save(path)
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


# --- 3. one story about "frozen" ----------------------------------------------------------


def test_export_and_inspect_tell_one_story_about_kept_variables(
    capsys, factories: Path, tmp_path: Path
) -> None:
    spec = f"{factories}:kept_model"
    code, out, err = run_cli(
        capsys,
        "export",
        "--model",
        spec,
        "--name",
        "kept",
        "--out",
        str(tmp_path),
        "--max-frozen-bytes",
        "1KiB",
        "--quiet",
    )
    assert code == 0, err
    story = "1 large tensor (8.0 KiB: big/kernel) stays a read-only variable by design"
    proof = next(line for line in out.splitlines() if line.startswith("Frozen proof:"))
    assert proof.startswith("Frozen proof: PASSED: 2 weights frozen into Consts") and story in proof
    code, text, err = run_cli(capsys, "inspect", str(tmp_path / "tfserving" / "kept" / "1"))
    assert code == 0, err
    assert text.splitlines()[0].endswith(
        f"(savedmodel): frozen: {story}; no op but the loader's restore can write it"
    )
    code, doc, _ = run_cli(capsys, "inspect", "--json", str(tmp_path / "tfserving/kept/1"))
    inspected = json.loads(doc)
    assert inspected["frozen"] is True and inspected["writers"] == []
    assert [(v["name"], v["bytes"]) for v in inspected["variables"]] == [("big/kernel", 8192)]


def test_inspect_counts_a_keras3_model_export_variable_once(
    capsys, factories: Path, tmp_path: Path
) -> None:
    _, model = _user_model(factories)
    model.export(str(tmp_path / "exported"), verbose=False)
    code, doc, err = run_cli(capsys, "inspect", "--json", str(tmp_path / "exported"))
    assert code == 0, err
    inspected = json.loads(doc)
    assert sorted(v["name"] for v in inspected["variables"]) == sorted(
        w.path for w in model.weights
    )
    assert inspected["frozen"] is False and inspected["story"].startswith("not frozen: 3 variables")
    features = inspected["signatures"]["serving_default"]["inputs"]["features"]
    assert features == {"dtype": "float32", "shape": [None, 4]}


# --- 7. an informative summary --------------------------------------------------------------


def test_summary_shows_the_signature_and_only_the_produced_artifacts(
    capsys, factories: Path, tmp_path: Path
) -> None:
    code, out, err = _export_temp(capsys, factories, tmp_path, "--formats", "onnx", "--quiet")
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index("Signature")
    assert lines[start + 2].split() == ["input", "features", "float32", "(-1,", "4)"]
    assert lines[start + 3].split() == ["output", "temp", "float32", "(-1,", "3)"]
    assert "SavedModel Const" not in out
    header = lines[lines.index("Scalars") + 1].split()
    assert header == ["scalar", "value", "tracked", "trainable", "ONNX"]


# --- 9. versions across formats ---------------------------------------------------------------


def test_versions_number_exports_and_deploy_writes_only_what_a_version_has(
    capsys, factories: Path, tmp_path: Path
) -> None:
    assert _export_temp(capsys, factories, tmp_path, "--formats", "onnx", "--quiet")[0] == 0
    code, out, err = _export_temp(capsys, factories, tmp_path, "--formats", "savedmodel", "--quiet")
    assert code == 0, err
    assert "Version     2 (savedmodel; no onnx: not requested (--formats savedmodel))" in out
    assert sorted(p.name for p in (tmp_path / "tfserving" / "t").iterdir()) == ["2"]
    assert [p.name for p in (tmp_path / "onnx" / "t").iterdir() if p.is_dir()] == ["1"]

    code, out, err = run_cli(capsys, "deploy", "--out", str(tmp_path), "--name", "t")
    assert code == 0, err
    written = {
        Path(line).relative_to(tmp_path / "deploy" / "t").as_posix() for line in out.splitlines()
    }
    assert "kserve/tensorflow.yaml" in written and "kubernetes/deployment.yaml" in written
    assert "kserve/triton.yaml" not in written
    assert "note: version 2 has no onnx artifact" in err and "no Triton InferenceService" in err

    code, out, err = run_cli(
        capsys, "deploy", "--out", str(tmp_path), "--name", "t", "--version", "1"
    )
    assert code == 0, err
    assert [Path(line).name for line in out.splitlines()] == ["triton.yaml"]
    triton = (tmp_path / "deploy" / "t" / "kserve" / "triton.yaml").read_text()
    assert "frozen-scalars/model-version: '1'" in triton


# --- 5. parity: its flags, a dead or wrong target, a model that is not the exported one ------


def test_parity_against_a_dead_target_exits_2_within_the_wait(capsys, exported: Path) -> None:
    import time

    from serving.launch import free_port

    target = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    code, _, err = run_cli(
        capsys,
        "parity",
        "--export",
        str(exported),
        "--model-name",
        "temp",
        "--target",
        target,
        "--wait",
        "1",
    )
    assert code == 2, err
    assert f"cannot reach {target} within 1 s" in one_error_line(err)
    assert time.monotonic() - started < 60  # bounded by --wait, not 2 minutes of retries


def test_parity_against_a_server_without_the_model_exits_2(
    capsys, exported: Path, tmp_path: Path
) -> None:
    import shutil

    from serving.server import parse_args, start_server

    shutil.copytree(exported / "tfserving" / "temp", tmp_path / "tfserving" / "other")
    base = (exported / "tfserving" / "temp").resolve()
    running = start_server(
        parse_args(
            [
                "--host=127.0.0.1",
                "--port=0",
                "--rest_api_port=0",
                "--model_name=temp",
                f"--model_base_path={base}",
            ]
        )
    )
    try:
        target = f"127.0.0.1:{running.grpc_port}"
        code, _, err = run_cli(
            capsys,
            "parity",
            "--export",
            str(tmp_path),
            "--model-name",
            "other",
            "--target",
            target,
            "--wait",
            "2",
        )
    finally:
        running.stop()
    assert code == 2, err
    assert f"the server at {target} does not serve model 'other'" in one_error_line(err)


def test_parity_with_a_retrained_factory_says_it_is_not_the_exported_model(
    capsys, exported: Path, factories: Path
) -> None:
    code, _, err = run_cli(
        capsys,
        "parity",
        "--export",
        str(exported),
        "--model-name",
        "temp",
        "--model",
        f"{factories}:trained_temp_model",
    )
    assert code == 2, err
    line = one_error_line(err)
    assert "is not the exported model: its scalar 'temp/temperature' is 1.75" in line
    assert "report says 1" in line


def test_parity_accepts_allow_unsafe_deserialization_for_a_lambda_model(
    capsys, tmp_path: Path
) -> None:
    import keras

    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    out = tmp_path / "out"
    unsafe = "--allow-unsafe-deserialization"
    code, _, err = run_cli(
        capsys,
        "export",
        "--model",
        str(path),
        "--name",
        "lam",
        "--out",
        str(out),
        unsafe,
        "--formats",
        "savedmodel",
        "--quiet",
    )
    assert code == 0, err
    code, out_text, err = run_cli(
        capsys,
        "parity",
        "--export",
        str(out),
        "--model-name",
        "lam",
        "--model",
        str(path),
        unsafe,
        "--samples",
        "1",
    )
    assert code == 0, err
    assert "keras" in out_text and "parity PASSED" in out_text


# --- 7. a quiet CLI; 8. a command for the package -------------------------------------------


def _exporter_process(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    return subprocess.run(
        [sys.executable, "-m", "exporter", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def test_export_quiet_prints_only_the_projects_own_lines(factories: Path, tmp_path: Path) -> None:
    done = _exporter_process(
        "export",
        "--model",
        f"{factories}:trained_temp_model",
        "--name",
        "t",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    # The one trained scalar moved; the Dense layer it sits on never trained (a project warning).
    assert len(lines) == 1 and lines[0].startswith("warning: Trainable weights"), done.stderr
    assert "cuInit" not in done.stderr and "deprecated" not in done.stderr


def test_version_and_every_help_ends_with_an_example(tmp_path: Path) -> None:
    done = _exporter_process("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "frozen-scalars 0.1.0"
    assert "tensorflow 2." in done.stdout and "keras 3." in done.stdout
    for command in ("", "export", "audit", "inspect", "parity", "deploy"):
        helped = _exporter_process(*filter(None, [command]), "--help", cwd=tmp_path)
        assert helped.returncode == 0, helped.stderr
        last = helped.stdout.rstrip().splitlines()
        example = next(i for i, line in enumerate(last) if line.startswith("example"))
        assert all(line.startswith("  ") for line in last[example + 1 :]), command
        assert f"python -m exporter {command or 'audit'}" in "\n".join(last[example:])


def test_console_script_is_declared_and_runs(tmp_path: Path) -> None:
    import tomllib

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["frozen-scalars"] == "exporter.cli:console"
    module, _, function = scripts["frozen-scalars"].partition(":")
    code = (
        f"import sys; sys.argv = ['frozen-scalars', 'inspect', '--help']; "
        f"from {module} import {function}; sys.exit({function}())"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: frozen-scalars inspect")
    assert "frozen-scalars inspect artifacts/tfserving/my_model/1" in done.stdout


# --- 6. bad values exit 2 before any work ----------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--atol", "-1"], "--atol=-1.0: a tolerance must be a finite number >= 0"),
        (["--name", "has space"], "--name 'has space' is not a model name"),
        (["--name", "1st_model"], "starting with a letter"),
        (["--name", "m" * 59], "at most 58 characters"),
        (["--formats", ""], "--formats is empty: name at least one of savedmodel,onnx"),
    ],
)
def test_bad_values_exit_2_before_the_model_is_built(
    capsys, monkeypatch, factories: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    marker = tmp_path / "factory-ran"
    monkeypatch.setenv("FACTORY_MARKER", str(marker))
    argv = [
        "export",
        "--model",
        f"{factories}:marks_when_built",
        "--name",
        "ok",
        "--out",
        str(tmp_path / "out"),
        *flags,
    ]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert message in one_error_line(err)
    assert not marker.exists() and not (tmp_path / "out").exists()


# --- 10. the model config file's startup errors, as tensorflow_model_server prints them -----


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "Failed to start server. Error: NOT_FOUND: {path}; No such file or directory"),
        (
            'model_config_list { config { name: "m" base_pth: "/models/m" } }',
            "Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{path}' (",
        ),
    ],
)
def test_model_config_file_errors_are_tf_servings_startup_lines(
    capsys, tmp_path: Path, content: str | None, expected: str
) -> None:
    from serving.__main__ import main as serving_main

    path = tmp_path / "models.config"
    if content is not None:
        path.write_text(content)
    code = serving_main(["--port=0", "--rest_api_port=0", f"--model_config_file={path}"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert expected.format(path=path) in err.splitlines()[-1]


def test_re_exporting_an_identical_model_names_the_version_it_repeats(
    capsys, tmp_path: Path
) -> None:
    import keras

    inputs = keras.Input((4,), name="x")
    path = tmp_path / "plain.keras"
    keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs)).save(path)
    argv = [
        "export",
        "--model",
        str(path),
        "--name",
        "p",
        "--out",
        str(tmp_path / "out"),
        "--formats",
        "savedmodel",
        "--quiet",
    ]
    assert run_cli(capsys, *argv)[0] == 0
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert (
        "Version     2 (savedmodel; no onnx: not requested (--formats savedmodel); "
        "identical to version 1)" in out
    )
    report = json.loads((tmp_path / "out" / "reports" / "p" / "2.json").read_text())
    assert report["identical_to"] == 1
