"""Benchmark 2: in-process inference latency at batch 1, 32 and 256, seven runtimes.

The same trained MLP is exported twice (this project's frozen export, Keras 3's own two
`model.export` calls) and then run through:

- `keras_call`: the live model, `model(x)` (eager, what a notebook does);
- `keras_sm_load` / `frozen_sm_load`: `tf.saved_model.load(dir).signatures["serving_default"]`;
- `keras_sm_session` / `frozen_sm_session`: a TF1 Session over the MetaGraph, the way TF
  Serving runs a SavedModel (`serving.servable.TFServable.run`, one `Session::Run`);
- `ort_frozen_onnx` / `ort_keras_onnx`: ONNX Runtime's CPU provider on each ONNX file.

TF paths get a prebuilt `tf.Tensor`; Session and ORT paths get the numpy array, as a server
would. Ratios are taken against Keras' exported SavedModel through the same loader.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import common

BATCHES = (1, 32, 256)
RUNTIMES = (
    "keras_call",
    "keras_sm_load",
    "frozen_sm_load",
    "keras_sm_session",
    "frozen_sm_session",
    "ort_keras_onnx",
    "ort_frozen_onnx",
)
# The latency target compares the frozen SavedModel with Keras' SavedModel.
TARGET_PAIRS = {"frozen_sm_load": "keras_sm_load", "frozen_sm_session": "keras_sm_session"}


def _runners(model: Any, workdir: Path) -> dict[str, Callable[[Any, Any], Any]]:
    """Export `model` both ways under `workdir`; return runtime -> f(np_batch, tf_batch)."""
    import onnxruntime as ort
    import tensorflow as tf

    from exporter import export_model
    from serving.servable import TFServable

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    report = export_model(model, workdir / "project", "mlp")
    keras_sm, keras_onnx = workdir / "keras_sm", workdir / "keras.onnx"
    model.export(str(keras_sm), format="tf_saved_model", verbose=False)
    model.export(str(keras_onnx), format="onnx", verbose=False)

    def loaded(path: Path) -> Callable[[Any, Any], Any]:
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        (key,) = fn.structured_input_signature[1]
        return lambda _x, t: fn(**{key: t})

    def session(path: Path) -> Callable[[Any, Any], Any]:
        servable = TFServable("mlp", 1, str(path))
        sig = servable.signature_defs["serving_default"]
        (key,) = sig.inputs
        outputs = list(sig.outputs)
        return lambda x, _t: servable.run("serving_default", {key: x}, outputs)

    def onnx(path: Path) -> Callable[[Any, Any], Any]:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        key = sess.get_inputs()[0].name
        return lambda x, _t: sess.run(None, {key: x})

    return {
        "keras_call": lambda _x, t: model(t),
        "keras_sm_load": loaded(keras_sm),
        "frozen_sm_load": loaded(report.savedmodel_dir),
        "keras_sm_session": session(keras_sm),
        "frozen_sm_session": session(report.savedmodel_dir),
        "ort_keras_onnx": onnx(keras_onnx),
        "ort_frozen_onnx": onnx(report.onnx_path),
    }


def _repeats(batch: int, quick: bool) -> int:
    base = 300 if batch == 1 else 150 if batch <= 32 else 60
    return max(10, base // 10) if quick else base


def run(
    params: int = 3_000_000,
    batches: Sequence[int] = BATCHES,
    quick: bool = False,
    results_dir: Path = common.RESULTS_DIR,
) -> dict[str, Any]:
    """Time every runtime at every batch size; write latency.json."""
    import tensorflow as tf

    model = common.build_mlp(params)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        runners = _runners(model, Path(tmp))
        for batch in batches:
            x = common.inputs_for(batch)
            t = tf.constant(x)
            for name in RUNTIMES:
                call = runners[name]
                stats = common.time_calls(
                    lambda call=call, x=x, t=t: call(x, t),
                    warmup=3 if quick else 20,
                    repeats=_repeats(batch, quick),
                    budget_s=2.0 if quick else 8.0,
                )
                rows.append({"runtime": name, "batch": batch, **stats})
                print(
                    f"  latency {name:18s} batch {batch:4d}: median {stats['median_ms']:8.3f} ms"
                    f"  p99 {stats['p99_ms']:8.3f} ms",
                    flush=True,
                )
    ratios = {}
    by_key = {(r["runtime"], r["batch"]): r for r in rows}
    for batch in batches:
        ref = by_key[("keras_sm_load", batch)]["median_ms"]
        ratios[str(batch)] = {name: by_key[(name, batch)]["median_ms"] / ref for name in RUNTIMES}
    payload = {
        "benchmark": "latency",
        "params": int(model.count_params()),
        "reference": "keras_sm_load",
        "rows": rows,
        "ratios_vs_keras_sm_load": ratios,
        "target_pairs": TARGET_PAIRS,
    }
    common.write_result("latency", payload, results_dir)
    return payload
