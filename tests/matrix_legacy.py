"""tf_keras (Keras 2) members of the matrix: `.h5` and SavedModel files with a trained scalar.

`CUSTOM_OBJECTS` is what the CLI's `--custom-objects tests.matrix_legacy` loads them with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tf_keras

SEED = 0


@tf_keras.utils.register_keras_serializable(package="matrix_legacy")
class LegacyScale(tf_keras.layers.Layer):
    """x * s with one trainable scalar, the tf_keras way (add_weight in build)."""

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(
            name="scale", shape=(), initializer=tf_keras.initializers.Constant(1.0)
        )

    def call(self, inputs: Any) -> Any:
        return inputs * self.scale


CUSTOM_OBJECTS = {"LegacyScale": LegacyScale}


def legacy_model() -> Any:
    """Conv1D -> BatchNorm -> pooled -> LegacyScale -> Dense, trained on generated data."""
    tf_keras.utils.set_random_seed(SEED)
    signal = tf_keras.Input((16, 2), name="signal")
    x = tf_keras.layers.Conv1D(8, 3, activation="relu")(signal)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.GlobalAveragePooling1D()(x)
    x = LegacyScale(name="scale")(x)
    model = tf_keras.Model(signal, tf_keras.layers.Dense(1, name="out")(x), name="legacy")
    rng = np.random.default_rng(SEED)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(
        rng.normal(size=(64, 16, 2)).astype("float32"),
        rng.normal(size=(64, 1)).astype("float32"),
        epochs=2,
        batch_size=16,
        verbose=0,
    )
    return model


def save_legacy(directory: Path) -> dict[str, Path]:
    """The same trained tf_keras model as `.h5` and as a SavedModel directory."""
    model = legacy_model()
    h5, savedmodel = directory / "legacy.h5", directory / "legacy_savedmodel"
    model.save(h5)
    model.save(savedmodel, save_format="tf")
    return {"legacy_h5": h5, "legacy_savedmodel": savedmodel}
