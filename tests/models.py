"""Small deterministic Keras 3 models shared by every test (and the recipes users bring).

Each factory seeds Keras first, so two calls with the same seed give identical weights.
Models are compiled (adam + mse unless stated) so `train` can fit them directly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from exporter.model.layers import LossWeighting, Offset, Scale, Temperature

PACKAGE = "frozen_scalars_tests"


def _compiled(model: keras.Model, loss: Any = "mse") -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    return model


def reference_model(seed: int = 0) -> keras.Model:
    """features(10) → Dense(64, relu) → Scale → Offset → Dense(1) "target" (diabetes shape)."""
    keras.utils.set_random_seed(seed)
    features = keras.Input((10,), name="features")
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(features)
    hidden = Scale(1.0, name="scale")(hidden)
    hidden = Offset(0.0, name="offset")(hidden)
    target = keras.layers.Dense(1, name="target")(hidden)
    return _compiled(keras.Model(features, target, name="reference"))


def multi_io_model(seed: int = 0) -> keras.Model:
    """Two inputs, two named outputs: "class_logits" (via Temperature) and "value" (Offset)."""
    keras.utils.set_random_seed(seed)
    signal = keras.Input((8,), name="signal")
    meta = keras.Input((3,), name="meta")
    hidden = keras.layers.Concatenate(name="concat")([signal, meta])
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(hidden)
    logits = keras.layers.Dense(3, name="logits")(hidden)
    class_logits = Temperature(2.0, name="class_logits")(logits)
    value = Offset(0.25, name="value")(keras.layers.Dense(1, name="value_dense")(hidden))
    return _compiled(keras.Model([signal, meta], [class_logits, value], name="multi_io"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelScale(keras.layers.Layer):
    """`x * gamma` with a per-channel `gamma` filled with `init_value`: the shape of ConvNeXt's
    `LayerScale`, written the way a user writes their own."""

    def __init__(self, init_value: float = 1e-6, **kwargs: Any):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape: Any) -> None:
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
        )

    def call(self, inputs: Any) -> Any:
        return inputs * self.gamma

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "init_value": self.init_value}


def layer_scale_model(seed: int = 0) -> keras.Model:
    """features(12) → Dense(16) → ChannelScale (1e-6) → LayerNormalization → Dense(8) →
    BatchNormalization → Dense(1) "target": two learned scale vectors (the ChannelScale's and
    the LayerNormalization's gamma) beside a BatchNormalization gamma, which is none."""
    keras.utils.set_random_seed(seed)
    features = keras.Input((12,), name="features")
    hidden = keras.layers.Dense(16, name="proj")(features)
    hidden = ChannelScale(1e-6, name="layer_scale")(hidden)
    hidden = keras.layers.LayerNormalization(name="norm")(hidden)
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(hidden)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    target = keras.layers.Dense(1, name="target")(hidden)
    return _compiled(keras.Model(features, target, name="layer_scale"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaleOrShift(keras.layers.Layer):
    """x * scale if mean(x) > 0 else x + offset: two scalars behind a data-dependent cond."""

    def build(self, input_shape: Any) -> None:
        constant = keras.initializers.Constant
        self.scale = self.add_weight(shape=(), name="scale", initializer=constant(1.5))
        self.offset = self.add_weight(shape=(), name="offset", initializer=constant(-0.5))

    def call(self, x: Any) -> Any:
        return ops.cond(ops.mean(x) > 0, lambda: x * self.scale, lambda: x + self.offset)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def cond_model(seed: int = 0) -> keras.Model:
    """features(4) → Dense(4) → ScaleOrShift (a `cond` on a scalar predicate) → Dense(1)."""
    keras.utils.set_random_seed(seed)
    features = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(4, name="hidden")(features)
    hidden = ScaleOrShift(name="scale_or_shift")(hidden)
    target = keras.layers.Dense(1, name="target")(hidden)
    return _compiled(keras.Model(features, target, name="cond"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledRegressor(keras.Model):
    """Subclassed model owning a tracked scalar created with `add_weight`."""

    def __init__(self, input_dim: int = 5, **kwargs: Any):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.hidden = keras.layers.Dense(8, activation="relu", name="hidden")
        self.head = keras.layers.Dense(1, name="head")
        self.scale = self.add_weight(
            shape=(), name="scale", initializer=keras.initializers.Constant(1.0)
        )

    def call(self, x: Any) -> Any:
        return self.head(self.hidden(x)) * self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "input_dim": self.input_dim}


class RawVariableRegressor(keras.Model):
    """Subclassed model holding a raw `tf.Variable` attribute (Keras 3 does not track it)."""

    def __init__(self, input_dim: int = 5, **kwargs: Any):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.hidden = keras.layers.Dense(8, activation="relu", name="hidden")
        self.head = keras.layers.Dense(1, name="head")
        self.raw_offset = tf.Variable(0.5, trainable=True, name="raw_offset")

    def call(self, x: Any) -> Any:
        return self.head(self.hidden(x)) + self.raw_offset


def _built(model: keras.Model) -> keras.Model:
    model(np.zeros((1, model.input_dim), "float32"))  # subclassed: build by calling
    return _compiled(model)


def subclassed_model(seed: int = 0) -> keras.Model:
    """`ScaledRegressor`: subclassed keras.Model, scalar via `add_weight`, built."""
    keras.utils.set_random_seed(seed)
    return _built(ScaledRegressor(name="subclassed"))


def subclassed_raw_variable_model(seed: int = 0) -> keras.Model:
    """`RawVariableRegressor`: raw `tf.Variable(0.5)` attribute named "raw_offset", built."""
    keras.utils.set_random_seed(seed)
    return _built(RawVariableRegressor(name="subclassed_raw"))


def embedding_model(seed: int = 0, vocab: int = 20) -> keras.Model:
    """tokens (int32, 6) → Embedding → mean pool → Dense(1) → Scale "score"."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    hidden = keras.layers.Embedding(vocab, 4, name="embedding")(tokens)
    hidden = keras.layers.GlobalAveragePooling1D(name="pool")(hidden)
    hidden = keras.layers.Dense(1, name="dense")(hidden)
    score = Scale(0.5, name="score")(hidden)
    return _compiled(keras.Model(tokens, score, name="embedding"))


def loss_weighting_model(seed: int = 0) -> keras.Model:
    """Two outputs "y1", "y2" trained with `LossWeighting(2)` (at `model.loss_weighting`)."""
    keras.utils.set_random_seed(seed)
    features = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(features)
    outputs = {
        "y1": keras.layers.Dense(1, name="y1")(hidden),
        "y2": keras.layers.Dense(1, name="y2")(hidden),
    }
    model = keras.Model(features, outputs, name="loss_weighted")
    weighting = LossWeighting(2, name="loss_weighting")
    return _compiled(model, loss=weighting.attach(model, {"y1": "mse", "y2": "mse"}))


# --- The three recipes of docs (seed_recipes.md), Keras 3 form -------------------------


class RecipeScale(keras.layers.Layer):
    """Recipe 1 as users write it: `add_weight` with no shape (a scalar) in `__init__`."""

    def __init__(self, initial_scale: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.scale = self.add_weight(
            name="scale",
            initializer=keras.initializers.Constant(initial_scale),
            trainable=True,
        )

    def call(self, inputs: Any) -> Any:
        return inputs * self.scale


def recipe1_model(seed: int = 0) -> keras.Model:
    """Recipe 1 (works): Dense(64, relu) → RecipeScale → Dense(1), adam + mse."""
    keras.utils.set_random_seed(seed)
    return _compiled(
        keras.Sequential(
            [
                keras.Input((10,), name="features"),
                keras.layers.Dense(64, activation="relu"),
                RecipeScale(1.0, name="recipe_scale"),
                keras.layers.Dense(1),
            ],
            name="recipe1",
        )
    )


class Recipe2(NamedTuple):
    model: keras.Model
    weight: tf.Variable  # the outside "trainable" loss weight the optimizer never sees


def recipe2_setup(seed: int = 0) -> Recipe2:
    """Recipe 2 (broken): mse scaled by a `tf.Variable(1.0)` created outside the model.

    The article's literal form (a new `tf.Variable` per loss call) does not even run in
    Keras 3: tf.function refuses non-singleton variables (see `recipe2_literal_loss`).
    """
    keras.utils.set_random_seed(seed)
    weight = tf.Variable(1.0, trainable=True, name="loss_weight")
    model = keras.Sequential(
        [
            keras.Input((10,), name="features"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="recipe2",
    )
    _compiled(model, loss=lambda y_true, y_pred: ops.mean(ops.square(y_true - y_pred) * weight))
    return Recipe2(model, weight)


def recipe2_literal_loss(y_true: Any, y_pred: Any, weight_param: Any) -> Any:
    """The article's loss: builds a fresh "trainable" variable on every call."""
    weight = tf.Variable(weight_param, trainable=True)
    return ops.mean(ops.square(y_true - y_pred) * weight)


class Recipe3(NamedTuple):
    model: keras.Model
    offset: keras.Variable  # closed over by the Lambda; not a model weight


def recipe3_model(seed: int = 0) -> Recipe3:
    """Recipe 3 (broken): Lambda closing over `keras.Variable(0.5, name="offset")`.

    The regularizer attempt (`add_loss(lambda: ...)` on Sequential) has no Keras 3
    equivalent; the closest is adding mean(offset²) to the compiled loss, which
    still cannot train a variable the optimizer does not see.
    """
    keras.utils.set_random_seed(seed)
    offset = keras.Variable(0.5, name="offset")
    model = keras.Sequential(
        [
            keras.Input((10,), name="features"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Lambda(lambda x: x + offset, name="add_offset"),
            keras.layers.Dense(1),
        ],
        name="recipe3",
    )

    def mse_plus_regularizer(y_true: Any, y_pred: Any) -> Any:
        return ops.mean(ops.square(y_true - y_pred)) + ops.mean(ops.square(offset))

    _compiled(model, loss=mse_plus_regularizer)
    return Recipe3(model, offset)


# --- Data ------------------------------------------------------------------------------


def sample_inputs(model: keras.Model, n: int = 32, seed: int = 0) -> Any:
    """Random inputs for `model`: one array (single input) or a list, in `model.inputs`
    order. Integer inputs are token ids in [0, 10); subclassed models use `input_dim`."""
    rng = np.random.default_rng(seed)
    inputs = getattr(model, "inputs", None) or [keras.KerasTensor((None, model.input_dim))]
    arrays = []
    for tensor in inputs:
        shape = (n, *tensor.shape[1:])
        if "int" in str(tensor.dtype):
            arrays.append(rng.integers(0, 10, size=shape).astype(tensor.dtype))
        else:
            arrays.append(rng.normal(size=shape).astype("float32"))
    return arrays[0] if len(arrays) == 1 else arrays


def train(
    model: keras.Model, epochs: int = 3, seed: int = 0, n: int = 64
) -> keras.callbacks.History:
    """Fit `model` on random inputs and targets shaped like its outputs (batch 16)."""
    keras.utils.set_random_seed(seed)
    x = sample_inputs(model, n, seed)
    rng = np.random.default_rng(seed + 1)
    y = keras.tree.map_structure(
        lambda out: rng.normal(size=ops.shape(out)).astype("float32"), model(x)
    )
    return model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0)
