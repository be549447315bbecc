"""Benchmark 4 (opt-in, `--large`): growth past protobuf's 2 GB limit.

An untrained MLP with more than 2 GiB of float32 weights goes through the same export paths
as benchmark 1, each in a fresh process with an RSS cap. Every worker appends the stage it
reached to a progress file, so a failure (exception, cap, timeout) is reported with the stage
it happened in. What happens is the result: this path was untested before this benchmark.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common

PARAMS = 560_000_000  # 2.24 GB of float32: past the 2 GiB protobuf limit
VARIANTS = ("project", "keras_onnx", "tf2onnx_large_model")
TIMEOUT_S = 1500.0


def _stage(progress: Path, name: str) -> None:
    with progress.open("a") as f:
        f.write(json.dumps({"stage": name, "t": time.perf_counter(), "rss": common.rss_bytes()}))
        f.write("\n")


def _export(variant: str, model: Any, out: Path, progress: Path) -> dict[str, Any]:
    """Run one export path; returns what it produced on disk."""
    import numpy as np
    import tensorflow as tf

    if variant == "project":
        from exporter import export_model

        # Past 2 GiB no frozen GraphDef (so no frozen SavedModel) can exist: ONNX alone.
        report = export_model(
            model, out, "big", onnx_only=True, progress=lambda m: _stage(progress, m)
        )
        return {"onnx_external_data": report.onnx["external_data"]}
    if variant == "keras_onnx":
        _stage(progress, "keras model.export(format='onnx')")
        model.export(str(out / "model.onnx"), format="onnx", verbose=False)
        return {}
    if variant == "tf2onnx_large_model":
        import tf2onnx

        if not hasattr(np, "product"):
            np.product = np.prod  # tf2onnx 1.17's large_model path predates numpy 2
        _stage(progress, "tf2onnx.convert.from_keras(large_model=True)")
        spec = [tf.TensorSpec((None, common.INPUT_DIM), tf.float32, name="features")]
        tf2onnx.convert.from_keras(
            model, input_signature=spec, opset=17, large_model=True, output_path=str(out / "m.zip")
        )
        return {}
    raise ValueError(f"unknown variant {variant!r}")


def worker(variant: str, params: int, progress: Path) -> dict[str, Any]:
    """Build the untrained model, export it once, report time, RSS and outcome."""
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    _stage(progress, "build")
    model = common.build_mlp(params, train_steps=0)
    weights = common.weights_bytes(model)
    baseline = common.rss_bytes()
    out = Path(tempfile.mkdtemp(prefix=f"bench-large-{variant}-"))
    outcome: dict[str, Any] = {}
    try:
        with common.RssSampler(interval_s=0.02) as sampler:
            start = time.perf_counter()
            _stage(progress, "export")
            try:
                outcome = {"ok": True, **_export(variant, model, out, progress)}
            except Exception as exc:  # the failure *is* the measurement: record, don't crash
                outcome = {
                    "ok": False,
                    "exception": f"{type(exc).__name__}: {str(exc)[:600]}",
                    "where": traceback.format_exc().splitlines()[-3:],
                }
            elapsed = time.perf_counter() - start
        files = {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "variant": variant,
        "params": int(model.count_params()),
        "weights_bytes": weights,
        "time_s": elapsed,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": sampler.peak,
        "peak_above_baseline_bytes": sampler.peak - baseline,
        "largest_files": dict(sorted(files.items(), key=lambda kv: -kv[1])[:4]),
        **outcome,
    }


def _stages(progress: Path) -> list[dict[str, Any]]:
    if not progress.exists():
        return []
    entries = [json.loads(line) for line in progress.read_text().splitlines() if line]
    t0 = entries[0]["t"] if entries else 0.0
    return [
        {"stage": e["stage"][:70], "at_s": round(e["t"] - t0, 2), "rss_bytes": e["rss"]}
        for e in entries
    ]


def run(
    params: int = PARAMS,
    variants: Sequence[str] = VARIANTS,
    results_dir: Path = common.RESULTS_DIR,
) -> dict[str, Any]:
    """Every variant in its own capped process; write large_model.json."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-large-progress-") as tmp:
        for variant in variants:
            progress = Path(tmp) / f"{variant}.jsonl"
            result = common.run_worker(
                "bench.large_model", [variant, str(params), str(progress)], timeout_s=TIMEOUT_S
            )
            result.setdefault("variant", variant)
            result["stages"] = _stages(progress)
            rows.append(result)
            last = result["stages"][-1]["stage"] if result["stages"] else "?"
            status = "ok" if result.get("ok") else (result.get("exception") or result.get("error"))
            print(f"  large {variant:20s} last stage {last!r}: {str(status)[:160]}", flush=True)
    payload = {"benchmark": "large_model", "params_requested": params, "rows": rows}
    common.write_result("large_model", payload, results_dir)
    return payload


if __name__ == "__main__":
    _variant, _params, _progress = sys.argv[1:4]
    print(json.dumps(worker(_variant, int(_params), Path(_progress))))
