"""The reference model of `make export`: real data, trained scalars, a frozen export.

scikit-learn's bundled diabetes data set (442 patients, 10 standardized features, disease
progression after one year; loaded offline). The model learns its output calibration as two
scalars: `progression = scale * head(features) + offset`. Both train (the run prints how far
they moved) and must ship as graph constants holding exactly their trained values.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SEED = 7


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Diabetes data, split 80/20 with a fixed seed: (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    data = load_diabetes()
    x = data.data.astype("float32")
    y = data.target.astype("float32").reshape(-1, 1)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED)
    return x_train, y_train, x_test, y_test


def build_model() -> Any:
    """features(10) → Dense(32, relu) → Dense(1) → Scale → Offset, output `progression`."""
    import keras

    from exporter.model.layers import Offset, Scale

    features = keras.Input((10,), name="features")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(features)
    head = keras.layers.Dense(1, name="head")(hidden)
    scaled = Scale(initial_value=1.0, name="scale")(head)
    progression = Offset(initial_value=0.0, name="progression")(scaled)
    model = keras.Model(features, progression, name="reference")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", metrics=["mae"])
    return model


def scalar_values(model: Any) -> dict[str, float]:
    """Every scalar weight of the model, by path."""
    return {w.path: float(np.asarray(w)) for w in model.weights if len(w.shape) == 0}


def train(epochs: int = 200) -> tuple[Any, dict[str, float], dict[str, float], float]:
    """Train the reference model; return it, scalars before/after, and test MAE."""
    import keras

    keras.utils.set_random_seed(SEED)
    x_train, y_train, x_test, y_test = load_data()
    model = build_model()
    before = scalar_values(model)
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    after = scalar_values(model)
    _, mae = model.evaluate(x_test, y_test, verbose=0)
    return model, before, after, float(mae)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the diabetes reference model, export it.")
    parser.add_argument("--out", default="artifacts")
    parser.add_argument("--name", default="reference")
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args(argv)

    from exporter import ExporterError, ExportOptions, export_model

    print(f"[train] diabetes (scikit-learn, offline), {args.epochs} epochs", flush=True)
    model, before, after, mae = train(args.epochs)
    print(f"[train] test MAE {mae:.1f} (target range 25..346)")
    for name, value in after.items():
        moved = "moved" if value != before[name] else "DID NOT MOVE"
        print(f"[train] {name}: {before[name]:.4g} -> {value:.6g} ({moved})")
    keras_path = Path(args.out) / "keras" / f"{args.name}.keras"
    keras_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(keras_path)
    x_test = load_data()[2]
    try:
        report = export_model(
            model,
            args.out,
            args.name,
            ExportOptions(
                warmup_requests=10,
                parity_inputs=[{"features": x_test}],
                progress=lambda msg: print(f"[export] {msg}", flush=True),
            ),
        )
    except ExporterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\nKeras       {keras_path}")
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
