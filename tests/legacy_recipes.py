"""The three recipes exactly as users wrote them for tf.keras (Keras 2), audited and exported.

Run as a script in its own process (TF_USE_LEGACY_KERAS must be set before TensorFlow is
imported, which a pytest process that already imported Keras 3 cannot undo):

    python tests/legacy_recipes.py OUT_DIR

Prints one JSON object on the last line of stdout; `tests/test_recipes.py` asserts on it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tensorflow import keras  # tf_keras, because of TF_USE_LEGACY_KERAS
from tensorflow.core.protobuf import saved_model_pb2

from exporter.errors import ExporterError
from exporter.model.audit import audit_model

K = keras.backend
SEED = 0


def data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return rng.normal(size=(n, 10)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def fit(model: Any, epochs: int = 3) -> None:
    x, y = data()
    model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0)


def backbone(middle: Any) -> Any:
    return keras.Sequential(
        [
            keras.layers.Dense(64, activation="relu", input_shape=(10,)),
            middle,
            keras.layers.Dense(1),
        ]
    )


class ScaleLayer(keras.layers.Layer):
    """Recipe 1: `add_weight` with no shape (a scalar) in `__init__`."""

    def __init__(self, initial_scale: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.scale = self.add_weight(
            name="scale", initializer=keras.initializers.Constant(initial_scale), trainable=True
        )

    def call(self, inputs: Any) -> Any:
        return inputs * self.scale


def custom_loss(y_true: Any, y_pred: Any, weight_param: Any) -> Any:
    """Recipe 2's loss: a fresh "trainable" variable on every call."""
    weight = tf.Variable(weight_param, trainable=True)
    return K.mean(K.square(y_true - y_pred) * weight)


def frozen_consts(savedmodel_dir: Path) -> dict[str, Any]:
    """Scalar float Consts and variable ops in the exported graph (independent of the report)."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((savedmodel_dir / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    float_consts = [
        tf.make_ndarray(n.attr["value"].tensor)
        for n in nodes
        if n.op == "Const" and n.attr["value"].tensor.dtype == tf.float32.as_datatype_enum
    ]
    scalars = [float(a.reshape(())) for a in float_consts if a.size == 1]
    variable_ops = sorted({n.op for n in nodes if n.op in {"VarHandleOp", "ReadVariableOp"}})
    return {"scalar_consts": scalars, "variable_ops": variable_ops}


def try_export(model: Any, out: Path, name: str, allow_untracked: bool) -> dict[str, Any]:
    from exporter import ExportOptions, export_model

    try:
        report = export_model(model, out, name, ExportOptions(allow_untracked=allow_untracked))
    except ExporterError as exc:
        return {"status": "refused", "error": type(exc).__name__, "message": str(exc)}
    return {
        "status": "exported",
        "passed": report.passed,
        "warnings": list(report.warnings),
        "scalars": report.to_dict()["scalars"],
        "graph": frozen_consts(Path(report.savedmodel_dir)),
    }


def recipe1(out: Path) -> dict[str, Any]:
    keras.utils.set_random_seed(SEED)
    model = backbone(ScaleLayer(1.0, name="scale_layer"))
    model.compile(optimizer="adam", loss="mse")
    fit(model)
    audit = audit_model(model)
    return {
        "model_module": type(model).__module__,
        "trained_scale": float(model.layers[1].scale.numpy()),
        "audit": audit.to_dict(),
        "export": try_export(model, out, "recipe1", allow_untracked=False),
    }


def recipe2() -> dict[str, Any]:
    keras.utils.set_random_seed(SEED)
    literal = backbone(keras.layers.Activation("linear"))
    weight_param = tf.Variable(1.0)
    literal.compile(optimizer="adam", loss=lambda yt, yp: custom_loss(yt, yp, weight_param))
    try:
        fit(literal, epochs=1)
        literal_error = None
    except ValueError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        literal_error = next((line for line in lines if "singleton" in line), lines[-1])

    outside = tf.Variable(1.0, trainable=True, name="loss_weight")
    model = backbone(keras.layers.Activation("linear"))
    model.compile(optimizer="adam", loss=lambda yt, yp: K.mean(K.square(yt - yp) * outside))
    fit(model)
    return {
        "literal_error": literal_error,
        "outside_weight_after_fit": float(outside.numpy()),
        "outside_in_trainable_weights": any(w is outside for w in model.trainable_weights),
        "audit": audit_model(model).to_dict(),
    }


def recipe3(out: Path) -> dict[str, Any]:
    keras.utils.set_random_seed(SEED)
    offset = K.variable(0.5)
    K.set_value(offset, 0.0)
    model = backbone(keras.layers.Lambda(lambda x: x + offset))
    model.add_loss(lambda: K.mean(K.square(offset)))
    model.compile(optimizer="adam", loss="mse")
    fit(model)
    return {
        "offset_name": offset.name,
        "offset_after_fit": float(offset.numpy()),
        "offset_in_trainable_weights": any(w is offset for w in model.trainable_weights),
        "audit": audit_model(model, initial_values={offset.name: 0.0}).to_dict(),
        "export": try_export(model, out, "recipe3", allow_untracked=False),
        "export_allowed": try_export(model, out, "recipe3", allow_untracked=True),
    }


class RawVariableRegressor(keras.Model):
    """A subclassed tf_keras model holding a raw `tf.Variable` attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.head = keras.layers.Dense(1)
        self.raw_offset = tf.Variable(0.5, trainable=True, name="raw_offset")

    def call(self, x: Any) -> Any:
        return self.head(self.hidden(x)) + self.raw_offset


def raw_variable() -> dict[str, Any]:
    keras.utils.set_random_seed(SEED)
    model = RawVariableRegressor()
    model(np.zeros((1, 10), "float32"))
    model.compile(optimizer="adam", loss="mse")
    fit(model)
    return {
        "tracked": any(w is model.raw_offset for w in model.weights),
        "value_after_fit": float(model.raw_offset.numpy()),
        "audit": audit_model(model).to_dict(),
    }


def main(out: Path) -> dict[str, Any]:
    return {
        "keras": keras.__name__ if hasattr(keras, "__name__") else str(keras),
        "recipe1": recipe1(out),
        "recipe2": recipe2(),
        "recipe3": recipe3(out),
        "raw_variable": raw_variable(),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
