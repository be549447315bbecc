"""exporter.model.layers: the math, `.keras` round trips, and LossWeighting training for real."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from exporter.errors import ModelLoadError
from exporter.model.layers import LossWeighting, Offset, Scale, Temperature
from exporter.model.trace import trace_model
from tests.models import loss_weighting_model, sample_inputs, train

X = np.array([[-2.0, 0.0, 3.5], [1.0, -1.0, 0.25]], dtype="float32")


def test_scale_multiplies_and_is_a_tracked_rank0_weight() -> None:
    layer = Scale(2.5)
    np.testing.assert_allclose(layer(X), X * 2.5, rtol=0, atol=0)
    assert [w.path for w in layer.trainable_weights] == [f"{layer.name}/scale"]
    assert layer.scale.shape == ()
    assert layer.initial_weight_values() == {"scale": 2.5}


def test_scale_can_be_frozen() -> None:
    layer = Scale(3.0, trainable=False)
    assert layer.trainable_weights == []
    assert [w.name for w in layer.non_trainable_weights] == ["scale"]


def test_offset_adds() -> None:
    layer = Offset(-0.75)
    np.testing.assert_allclose(layer(X), X - 0.75, rtol=0, atol=0)
    assert layer.offset.shape == ()
    assert layer.initial_weight_values() == {"offset": -0.75}


def test_temperature_divides_logits_by_exp_log_t() -> None:
    layer = Temperature(4.0)
    assert layer.temperature == pytest.approx(4.0, rel=1e-6)
    np.testing.assert_allclose(layer(X), X / 4.0, rtol=1e-6)
    assert layer.initial_weight_values() == {"log_temperature": math.log(4.0)}


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_temperature_rejects_non_positive_initial_value(bad: float) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        Temperature(bad)


def test_temperature_stays_positive_when_pushed_towards_zero() -> None:
    """Gradient steps that minimise T move log T down without bound; T stays > 0."""
    layer = Temperature(1.0)
    optimizer = keras.optimizers.SGD(learning_rate=50.0)
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = tf.exp(layer.log_temperature)  # minimise T itself
        optimizer.apply_gradients(
            zip(tape.gradient(loss, [layer.log_temperature]), [layer.log_temperature], strict=True)
        )
    assert float(layer.log_temperature.numpy()) < -1.0
    assert layer.temperature > 0.0
    assert np.all(np.isfinite(layer(X)))


def test_loss_weighting_combines_losses() -> None:
    layer = LossWeighting(2)
    layer.log_vars[0].assign(0.5)
    layer.log_vars[1].assign(-1.0)
    total = layer([tf.constant(2.0), tf.constant(3.0)])
    expected = math.exp(-0.5) * 2.0 + 0.5 + math.exp(1.0) * 3.0 - 1.0
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert [w.shape for w in layer.weights] == [(), ()]


def test_loss_weighting_rejects_wrong_counts() -> None:
    with pytest.raises(ValueError, match="num_losses"):
        LossWeighting(0)
    layer = LossWeighting(2)
    with pytest.raises(ValueError, match="exactly one scalar loss per task"):
        layer([tf.constant(1.0)])
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="number of model outputs"):
        layer.attach(model, ["mse"])


def test_uncertainty_weighted_loss_value() -> None:
    weighting = LossWeighting(1)
    weighting.log_vars[0].assign(0.3)
    loss = weighting.attach(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]), ["mse"])[
        0
    ]
    y_true = np.array([[1.0], [2.0]], "float32")
    y_pred = np.array([[0.0], [0.0]], "float32")
    mse = (1.0 + 4.0) / 2
    assert float(loss(y_true, y_pred)) == pytest.approx(math.exp(-0.3) * mse + 0.3, rel=1e-6)


def _round_trip(model: keras.Model, path: Path) -> keras.Model:
    model.save(path)
    return keras.saving.load_model(path)


def test_scalar_layers_round_trip_through_keras_file(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((3,), name="x")
    hidden = Scale(1.5, name="scale")(inputs)
    hidden = Offset(0.25, name="offset")(hidden)
    outputs = Temperature(3.0, name="temperature")(keras.layers.Dense(2, name="logits")(hidden))
    model = keras.Model(inputs, outputs)
    model.get_layer("scale").scale.assign(1.75)  # a "trained" value, not the initial one
    loaded = _round_trip(model, tmp_path / "scalars.keras")
    for name in ("scale", "offset", "temperature"):
        original, restored = model.get_layer(name), loaded.get_layer(name)
        assert type(restored) is type(original)
        assert restored.get_config() == original.get_config()
        assert [w.numpy() for w in restored.weights] == [w.numpy() for w in original.weights]
    assert loaded.get_layer("scale").scale.numpy() == np.float32(1.75)
    np.testing.assert_array_equal(loaded(X), model(X))


def test_loss_weighting_round_trips_through_keras_file(tmp_path: Path) -> None:
    first, second = keras.Input((1,), name="l1"), keras.Input((1,), name="l2")
    model = keras.Model([first, second], LossWeighting(2, name="weighting")([first, second]))
    model.get_layer("weighting").log_vars[1].assign(0.7)
    loaded = _round_trip(model, tmp_path / "weighting.keras")
    restored = loaded.get_layer("weighting")
    assert restored.get_config()["num_losses"] == 2
    assert [float(v.numpy()) for v in restored.log_vars] == pytest.approx([0.0, 0.7])
    losses = [np.array([[2.0]], "float32"), np.array([[3.0]], "float32")]
    np.testing.assert_allclose(loaded(losses), model(losses), rtol=1e-6)


@pytest.fixture(scope="module")
def trained_loss_weighting() -> keras.Model:
    model = loss_weighting_model(seed=3)
    train(model, epochs=3, seed=3)
    return model


def test_loss_weighting_trains_in_fit(trained_loss_weighting: keras.Model) -> None:
    weighting = trained_loss_weighting.loss_weighting
    trainable = {w.path for w in trained_loss_weighting.trainable_weights}
    assert {"loss_weighting/log_var_0", "loss_weighting/log_var_1"} <= trainable
    values = [float(v.numpy()) for v in weighting.log_vars]
    assert all(v != 0.0 for v in values), values  # moved away from the initial 0.0


def test_loss_weighting_is_not_captured_by_inference(trained_loss_weighting: keras.Model) -> None:
    traced = trace_model(trained_loss_weighting)
    captured = {v.ref() for v in traced.function.variables}
    weighting = trained_loss_weighting.loss_weighting
    assert all(v.value.ref() not in captured for v in weighting.log_vars)
    # ...while every other weight is, and the outputs do not depend on log_vars.
    others = [w for w in trained_loss_weighting.weights if "loss_weighting" not in w.path]
    assert all(w.value.ref() in captured for w in others)
    x = sample_inputs(trained_loss_weighting, 4, seed=9)
    before = trained_loss_weighting(x)
    trained = weighting.log_vars[0].numpy()
    weighting.log_vars[0].assign(5.0)
    after = trained_loss_weighting(x)
    weighting.log_vars[0].assign(trained)
    for key in ("y1", "y2"):
        np.testing.assert_array_equal(before[key], after[key])


def test_model_compiled_with_loss_weighting_loads_and_refuses_silent_training(
    trained_loss_weighting: keras.Model, tmp_path: Path
) -> None:
    loaded = _round_trip(trained_loss_weighting, tmp_path / "weighted.keras")
    x = sample_inputs(trained_loss_weighting, 4, seed=5)
    for key in ("y1", "y2"):
        np.testing.assert_array_equal(loaded(x)[key], trained_loss_weighting(x)[key])
    with pytest.raises(ModelLoadError, match="without its LossWeighting layer"):
        train(loaded, epochs=1, seed=0)
