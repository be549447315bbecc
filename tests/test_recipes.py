"""The three recipes users bring (docs: seed_recipes.md): what really trains, and what the
audit says about it. Keras 3 forms run in-process; the tf_keras originals in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import pytest

from exporter.errors import AuditError
from exporter.model.audit import audit_model
from exporter.model.audit_report import AuditReport
from tests import models
from tests.conftest import REPO_ROOT


def _refs(weights: list[Any]) -> set[Any]:
    return {w.value.ref() for w in weights}


# --- Recipe 1: add_weight in a custom layer (works) --------------------------------------


@pytest.fixture(scope="module")
def recipe1() -> keras.Model:
    model = models.recipe1_model(seed=0)
    assert float(model.get_layer("recipe_scale").scale.numpy()) == 1.0
    models.train(model, epochs=3, seed=0)
    return model


def test_recipe1_scale_trains(recipe1: keras.Model) -> None:
    scale = recipe1.get_layer("recipe_scale").scale
    assert scale.value.ref() in _refs(recipe1.trainable_weights)
    assert float(scale.numpy()) != 1.0


def test_recipe1_audit_is_clean(recipe1: keras.Model) -> None:
    report = audit_model(recipe1)
    scalar = report.scalar("recipe_scale/scale")
    assert (scalar.tracked, scalar.trainable, scalar.used_by_inference) == (True, True, True)
    assert scalar.status == "ok" and scalar.value == float(
        recipe1.get_layer("recipe_scale").scale.numpy()
    )
    assert not report.has_errors


# --- Recipe 2: a "trainable" loss weight outside the model (broken) ----------------------


def test_recipe2_literal_form_does_not_even_run_in_keras3() -> None:
    """A new tf.Variable per loss call: tf.function refuses it on the first batch."""
    model = models.recipe2_setup(seed=0).model
    weight = keras.Variable(1.0)
    model.compile(optimizer="adam", loss=lambda yt, yp: models.recipe2_literal_loss(yt, yp, weight))
    with pytest.raises(ValueError, match=r"singleton tf\.Variables"):
        models.train(model, epochs=1, seed=0)


@pytest.fixture(scope="module")
def recipe2() -> models.Recipe2:
    setup = models.recipe2_setup(seed=0)
    models.train(setup.model, epochs=3, seed=0)
    return setup


def test_recipe2_outside_weight_never_trains(recipe2: models.Recipe2) -> None:
    assert all(w.value is not recipe2.weight for w in recipe2.model.trainable_weights)
    assert float(recipe2.weight.numpy()) == 1.0


def test_recipe2_audit_warns_about_the_loss_weight(recipe2: models.Recipe2) -> None:
    report = audit_model(recipe2.model)
    scalar = report.scalar("loss_weight")
    assert (scalar.tracked, scalar.trainable, scalar.used_by_inference) == (False, False, False)
    assert scalar.variable is recipe2.weight
    [finding] = report.findings_for("loss_weight")
    assert (finding.level, finding.code) == ("warning", "untracked_loss_variable")
    assert "optimizer never sees it" in finding.message
    assert "LossWeighting" in finding.message
    assert not report.has_errors  # inference (and so the export) does not depend on it


def test_recipe2_replacement_loss_weighting_trains() -> None:
    model = models.loss_weighting_model(seed=0)
    models.train(model, epochs=2, seed=0)
    values = [float(v.numpy()) for v in model.loss_weighting.log_vars]
    assert all(v != 0.0 for v in values), values
    report = audit_model(model)
    assert report.scalar("loss_weighting/log_var_0").status == "not-used"


# --- Recipe 3: a Lambda closing over an outside variable (broken) ------------------------


@pytest.fixture(scope="module")
def recipe3() -> models.Recipe3:
    setup = models.recipe3_model(seed=0)
    models.train(setup.model, epochs=3, seed=0)
    return setup


@pytest.fixture(scope="module")
def recipe3_report(recipe3: models.Recipe3) -> AuditReport:
    return audit_model(recipe3.model, initial_values={"offset": 0.5})


def test_recipe3_offset_never_trains(recipe3: models.Recipe3) -> None:
    assert recipe3.offset.value.ref() not in _refs(recipe3.model.trainable_weights)
    assert recipe3.offset.value.ref() not in _refs(recipe3.model.weights)
    assert float(recipe3.offset.numpy()) == 0.5


def test_recipe3_audit_names_the_untracked_offset(
    recipe3: models.Recipe3, recipe3_report: AuditReport
) -> None:
    assert recipe3_report.has_errors
    scalar = recipe3_report.scalar("offset")
    assert scalar.variable is recipe3.offset.value
    assert (scalar.tracked, scalar.trainable, scalar.used_by_inference) == (False, False, True)
    assert (scalar.status, scalar.value, scalar.unchanged_since_init) == ("untracked", 0.5, True)
    [finding] = recipe3_report.findings_for("offset", "error")
    assert finding.code == "untracked_captured"
    for phrase in (
        "'offset'",
        "closed over by Lambda layer 'add_offset'",
        "optimizer never sees it",
        "never trains",
        "add_weight",
        "exporter.model.layers.Offset",
    ):
        assert phrase in finding.message
    assert "ERROR: Variable 'offset'" in recipe3_report.table()


def test_recipe3_export_is_refused(recipe3: models.Recipe3, tmp_path: Path) -> None:
    from exporter import export_model

    with pytest.raises(AuditError, match="offset"):
        export_model(recipe3.model, tmp_path, "recipe3")
    assert not (tmp_path / "tfserving").exists()


def test_recipe3_fix_offset_layer_trains() -> None:
    model = models.reference_model(seed=0)
    models.train(model, epochs=2, seed=0)
    offset = model.get_layer("offset").offset
    assert offset.value.ref() in _refs(model.trainable_weights)
    assert float(offset.numpy()) != 0.0
    assert audit_model(model).scalar("offset/offset").status == "ok"


# --- A raw tf.Variable attribute of a subclassed Keras 3 model ---------------------------


def test_raw_tf_variable_attribute_audit_tells_the_truth() -> None:
    model = models.subclassed_raw_variable_model(seed=0)
    before = float(model.raw_offset.numpy())
    models.train(model, epochs=3, seed=0)
    trained = float(model.raw_offset.numpy()) != before
    tracked = any(w.value is model.raw_offset for w in model.weights)
    report = audit_model(model)
    scalar = report.scalar("raw_offset")
    # Whatever Keras does, the audit must agree with what was measured...
    assert scalar.tracked == tracked and scalar.trainable == trained
    assert (scalar.status == "untracked") == (not tracked)
    # ...and Keras 3.15 measured: not tracked, not trained, still 0.5.
    assert (tracked, trained, scalar.value) == (False, False, 0.5)
    [finding] = report.findings_for("raw_offset", "error")
    assert "raw attribute `raw_offset` of RawVariableRegressor" in finding.message


# --- The tf_keras originals (subprocess: TF_USE_LEGACY_KERAS=1 before importing TF) ------


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("legacy")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "legacy_recipes.py"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_legacy_runs_tf_keras(legacy: dict[str, Any]) -> None:
    assert legacy["keras"].startswith("tf_keras")
    assert legacy["recipe1"]["model_module"].startswith("tf_keras")


def test_legacy_recipe1_trains_and_audits_clean(legacy: dict[str, Any]) -> None:
    recipe = legacy["recipe1"]
    assert recipe["trained_scale"] != 1.0
    scale = next(s for s in recipe["audit"]["scalars"] if s["name"] == "scale")
    assert (scale["tracked"], scale["trainable"], scale["used_by_inference"]) == (True, True, True)
    assert scale["value"] == recipe["trained_scale"] and scale["status"] == "ok"
    assert recipe["audit"]["has_errors"] is False


def test_legacy_recipe1_exports_its_trained_scale(legacy: dict[str, Any]) -> None:
    recipe = legacy["recipe1"]
    export = recipe["export"]
    assert export["status"] == "exported" and export["passed"] is True
    assert recipe["trained_scale"] in export["graph"]["scalar_consts"]  # a Const, bit-exact
    assert export["graph"]["variable_ops"] == []  # frozen: no VarHandleOp / ReadVariableOp
    row = next(s for s in export["scalars"] if s["name"] == "scale")
    assert row["value"] == recipe["trained_scale"] and row["savedmodel_const_bit_exact"] is True


def test_legacy_recipe2_outside_weight_never_trains(legacy: dict[str, Any]) -> None:
    recipe = legacy["recipe2"]
    assert "singleton tf.Variables" in recipe["literal_error"]
    assert recipe["outside_weight_after_fit"] == 1.0
    assert recipe["outside_in_trainable_weights"] is False
    [finding] = [f for f in recipe["audit"]["findings"] if f["variable"] == "loss_weight"]
    assert (finding["level"], finding["code"]) == ("warning", "untracked_loss_variable")


def test_legacy_recipe3_variable_is_flagged(legacy: dict[str, Any]) -> None:
    recipe = legacy["recipe3"]
    assert recipe["offset_in_trainable_weights"] is False
    assert recipe["offset_after_fit"] == 0.0  # set_value(0.0), then never touched by fit
    name = recipe["offset_name"].split(":")[0]
    scalar = next(s for s in recipe["audit"]["scalars"] if s["name"] == name)
    assert (scalar["tracked"], scalar["used_by_inference"], scalar["status"]) == (
        False,
        True,
        "untracked",
    )
    assert scalar["unchanged_since_init"] is True
    [finding] = [f for f in recipe["audit"]["findings"] if f["variable"] == name]
    assert finding["level"] == "error" and "closed over by Lambda layer" in finding["message"]
    assert "optimizer never sees it" in finding["message"]


def test_legacy_recipe3_export_refused_unless_allowed(legacy: dict[str, Any]) -> None:
    recipe = legacy["recipe3"]
    refused = recipe["export"]
    assert (refused["status"], refused["error"]) == ("refused", "AuditError")
    allowed = recipe["export_allowed"]
    assert allowed["status"] == "exported" and allowed["passed"] is True
    name = recipe["offset_name"].split(":")[0]
    assert any(repr(name) in w for w in allowed["warnings"])  # shipped, but not silently
    assert 0.0 in allowed["graph"]["scalar_consts"]  # the untrained offset, frozen as is


def test_legacy_raw_tf_variable_audit_tells_the_truth(legacy: dict[str, Any]) -> None:
    """tf_keras tracks raw tf.Variable attributes (tf.Module style), so this one trains."""
    result = legacy["raw_variable"]
    trained = result["value_after_fit"] != 0.5
    scalar = next(s for s in result["audit"]["scalars"] if s["name"].endswith("raw_offset"))
    assert scalar["tracked"] == result["tracked"] and scalar["trainable"] == trained
    assert (result["tracked"], trained, scalar["status"]) == (True, True, "ok")
