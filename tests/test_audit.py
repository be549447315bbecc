"""exporter.model.audit on real Keras 3 models: classification, findings, report formats."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from exporter.errors import AuditError
from exporter.model.audit import audit_model
from exporter.model.audit_report import STATUSES, AuditReport, ScalarFinding
from exporter.model.layers import Scale
from exporter.model.trace import trace_model
from tests import models


@pytest.fixture(scope="module")
def trained_reference() -> keras.Model:
    model = models.reference_model(seed=0)
    models.train(model, epochs=3, seed=0)
    return model


@pytest.fixture(scope="module")
def reference_report(trained_reference: keras.Model) -> AuditReport:
    return audit_model(trained_reference)


def test_trained_reference_scalars_are_clean(reference_report: AuditReport) -> None:
    assert not reference_report.has_errors
    assert [f for f in reference_report.findings if f.level != "info"] == []
    names = [s.name for s in reference_report.scalars]
    assert names == ["scale/scale", "offset/offset", "target/bias"]
    for scalar in reference_report.scalars:
        assert (scalar.tracked, scalar.trainable, scalar.used_by_inference) == (True, True, True)
        assert scalar.finite and scalar.status == "ok"
        assert scalar.unchanged_since_init is False  # trained away from its Constant/Zeros
    scale = reference_report.scalar("scale")
    assert scale.initial_value == 1.0 and scale.shape == () and scale.dtype == "float32"
    assert reference_report.scalar("target/bias").shape == (1,)  # size 1 counts as scalar


def test_scalar_variable_is_the_captured_tf_variable(
    trained_reference: keras.Model, reference_report: AuditReport
) -> None:
    captured = {v.ref() for v in trace_model(trained_reference).function.variables}
    for scalar in reference_report.scalars:
        assert isinstance(scalar.variable, tf.Variable)
        assert scalar.variable.ref() in captured
        assert scalar.value == scalar.variable.numpy().item()
    scale = trained_reference.get_layer("scale").scale
    assert reference_report.scalar("scale/scale").variable is scale.value


def test_non_scalar_summary(reference_report: AuditReport) -> None:
    summary = reference_report.non_scalar_summary
    assert summary.count == 3  # hidden kernel, hidden bias, target kernel
    assert summary.total_params == 10 * 64 + 64 + 64
    assert summary.used_by_inference == 3
    assert summary.non_finite == [] and summary.untracked == []


def test_to_dict_is_json_and_leaves_out_the_variable(reference_report: AuditReport) -> None:
    data = json.loads(json.dumps(reference_report.to_dict()))
    assert data["model"] == "reference" and data["has_errors"] is False
    assert set(data["scalars"][0]) == {
        "name", "value", "shape", "dtype", "tracked", "trainable",
        "used_by_inference", "finite", "unchanged_since_init", "initial_value", "status",
    }  # fmt: skip
    assert "variable" not in repr(reference_report.scalars[0])
    assert data["non_scalar_summary"]["total_params"] == 768


def test_table_is_aligned(reference_report: AuditReport) -> None:
    lines = reference_report.table().splitlines()
    header, rule, *rows = lines[: 2 + len(reference_report.scalars)]
    for column in ("name", "shape", "dtype", "value", "tracked", "trainable", "inference"):
        assert column in header
    status_at = header.index("status")
    assert all(row[status_at:].strip() == "ok" for row in rows)
    assert set(rule.replace(" ", "")) == {"-"}
    assert lines[2 + len(rows)].startswith("non-scalars: 3 weights, 768 params")


def test_passing_traced_gives_the_same_answer(trained_reference: keras.Model) -> None:
    traced = trace_model(trained_reference)
    again = audit_model(trained_reference, traced=traced)
    assert again.to_dict() == audit_model(trained_reference).to_dict()


def test_untrained_constant_scalars_warn_unchanged() -> None:
    report = audit_model(models.reference_model(seed=0))
    warned = {f.variable for f in report.findings if f.code == "unchanged_since_init"}
    # Zeros counts too; the one tensor still at its Zeros init gets its own (grouped) warning.
    assert warned == {"scale/scale", "offset/offset", "target/bias", "hidden/bias"}
    assert report.non_scalar_summary.unchanged == ["hidden/bias"]
    scale = report.scalar("scale/scale")
    assert (scale.unchanged_since_init, scale.status) == (True, "unchanged")
    assert not report.has_errors  # a warning, not an error


def test_initial_values_argument_for_generic_weights() -> None:
    model = models.subclassed_model(seed=0)
    head_bias = "subclassed/head/bias"
    report = audit_model(model, initial_values={head_bias: 0.0, "scale": 1.0})
    assert report.scalar(head_bias).unchanged_since_init is True
    assert report.scalar("subclassed/scale").unchanged_since_init is True


def test_non_trainable_scalar_is_not_warned() -> None:
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, Scale(2.0, trainable=False, name="fixed")(inputs))
    scalar = audit_model(model).scalar("fixed/scale")
    assert (scalar.tracked, scalar.trainable, scalar.used_by_inference) == (True, False, True)
    assert scalar.status == "non-trainable" and scalar.unchanged_since_init is True
    assert audit_model(model).findings == []


def test_non_finite_scalar_and_kernel_are_errors() -> None:
    model = models.reference_model(seed=0)
    model.get_layer("scale").scale.assign(float("nan"))
    model.get_layer("hidden").kernel.assign(np.full((10, 64), np.inf, "float32"))
    report = audit_model(model)
    assert report.has_errors
    scale = report.scalar("scale/scale")
    assert scale.finite is False and scale.status == "non-finite" and math.isnan(scale.value)
    assert report.findings_for("scale/scale", "error")[0].code == "non_finite"
    assert report.non_scalar_summary.non_finite == ["hidden/kernel"]
    assert report.to_dict()["scalars"][0]["value"] == "nan"  # JSON-safe
    json.dumps(report.to_dict(), allow_nan=False)


def test_cond_captures_both_branch_scalars() -> None:
    report = audit_model(models.cond_model(seed=0))
    for name in ("scale_or_shift/scale", "scale_or_shift/offset"):
        scalar = report.scalar(name)
        assert scalar.used_by_inference and scalar.tracked
        assert scalar.value == (1.5 if name.endswith("scale") else -0.5)
        # A custom layer's initializer is gone once the weight exists (Keras keeps no
        # reference) and its config has no `*_initializer`: the audit cannot tell.
        assert scalar.initial_value is None and scalar.unchanged_since_init is None


def test_multi_io_and_embedding_models() -> None:
    multi = audit_model(models.multi_io_model(seed=0))
    temperature = multi.scalar("class_logits/log_temperature")
    assert temperature.initial_value == pytest.approx(math.log(2.0))
    assert temperature.value == pytest.approx(math.log(2.0))
    assert multi.scalar("value/offset").value == 0.25
    embedding = audit_model(models.embedding_model(seed=0))
    assert embedding.scalar("score/scale").used_by_inference
    assert embedding.non_scalar_summary.total_params == 20 * 4 + 1 * 4  # table + dense kernel


def test_loss_only_scalars_are_info_not_used_by_inference() -> None:
    model = models.loss_weighting_model(seed=0)
    models.train(model, epochs=1, seed=0)
    report = audit_model(model)
    for name in ("loss_weighting/log_var_0", "loss_weighting/log_var_1"):
        scalar = report.scalar(name)
        assert (scalar.tracked, scalar.trainable, scalar.used_by_inference) == (True, True, False)
        assert scalar.status == "not-used"
        [finding] = report.findings_for(name)
        assert (finding.level, finding.code) == ("info", "not_used_by_inference")
    assert not report.has_errors


def test_untracked_non_scalar_closed_over_by_lambda_is_an_error() -> None:
    bias = keras.Variable(np.ones(4, "float32"), name="lambda_bias")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x + bias, name="shift")(inputs))
    report = audit_model(model)
    assert report.has_errors
    assert report.non_scalar_summary.untracked == ["lambda_bias"]
    [finding] = report.findings_for("lambda_bias", "error")
    assert "closed over by Lambda layer 'shift'" in finding.message


def test_statuses_cover_every_scalar(reference_report: AuditReport) -> None:
    assert all(s.status in STATUSES for s in reference_report.scalars)
    assert isinstance(reference_report.scalars[0], ScalarFinding)


@pytest.mark.parametrize("not_a_model", [42, "model.keras", keras.layers.Dense(2)])
def test_not_a_model_raises_audit_error(not_a_model: object) -> None:
    with pytest.raises(AuditError, match="needs a Keras model"):
        audit_model(not_a_model)


def test_same_named_untracked_variables_get_distinct_names() -> None:
    first, second = keras.Variable(1.0, name="dup"), keras.Variable(2.0, name="dup")
    inputs = keras.Input((2,), name="x")
    hidden = keras.layers.Lambda(lambda x: x * first, name="times")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x + second, name="plus")(hidden))
    report = audit_model(model)
    by_name = {s.name: s for s in report.scalars}
    assert set(by_name) == {"dup", "dup_1"}
    assert {by_name[n].variable.ref() for n in by_name} == {first.value.ref(), second.value.ref()}
    assert len(report.findings_for("dup", "error")) == 1
    assert len(report.findings_for("dup_1", "error")) == 1
