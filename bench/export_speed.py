"""Benchmark 1: export time and peak RSS against model size, for three export paths.

- `project`: `exporter.export_model` (trace, audit, freeze with proof, SavedModel, ONNX with
  checker + ORT load, parity Keras/SavedModel/ORT, atomic publish, report);
- `keras`: Keras 3's own `model.export(format="tf_saved_model")` + `model.export(format="onnx")`;
- `tf2onnx`: `tf2onnx.convert.from_keras` (ONNX only: what a user reaches for first).

Each (size, variant) runs in a fresh interpreter that loads the same trained `.keras` file,
records its post-load RSS as the baseline, and samples RSS during the export alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common

VARIANTS = ("project", "keras", "tf2onnx")
SIZES = (100_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000)
QUICK_SIZES = (20_000, 200_000)
TARGET_SIZE = 3_000_000  # the "~3M-parameter MLP" of the export-time target


def _export(variant: str, model: Any, out: Path, stages: list[tuple[str, float]]) -> None:
    """Run one export path into `out` (an empty directory)."""
    import tensorflow as tf

    if variant == "project":
        from exporter import ExportOptions, export_model

        def progress(msg: str) -> None:
            stages.append((msg.split(":", 1)[0], time.perf_counter()))

        export_model(model, out, "mlp", ExportOptions(progress=progress))
    elif variant == "keras":
        model.export(str(out / "saved_model"), format="tf_saved_model", verbose=False)
        stages.append(("onnx", time.perf_counter()))
        model.export(str(out / "model.onnx"), format="onnx", verbose=False)
    elif variant == "tf2onnx":
        import tf2onnx

        spec = [tf.TensorSpec((None, common.INPUT_DIM), tf.float32, name="features")]
        tf2onnx.convert.from_keras(
            model, input_signature=spec, opset=17, output_path=str(out / "m.onnx")
        )
    else:
        raise ValueError(f"unknown variant {variant!r}")


def worker(variant: str, model_path: str) -> dict[str, Any]:
    """Load the model, export it once, report time and RSS (runs in a fresh process)."""
    import logging

    import keras

    import exporter.model.layers  # noqa: F401  (registers Scale/Offset for loading)

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    model = keras.saving.load_model(model_path, compile=False)
    weights = common.weights_bytes(model)
    baseline = common.rss_bytes()
    out = Path(tempfile.mkdtemp(prefix=f"bench-export-{variant}-"))
    stages: list[tuple[str, float]] = []
    try:
        with common.RssSampler() as sampler:
            start = time.perf_counter()
            stages.append(("start", start))
            _export(variant, model, out, stages)
            elapsed = time.perf_counter() - start
        size_on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stages.append(("end", start + elapsed))
    breakdown: dict[str, float] = {}
    for i, (name, t) in enumerate(stages[:-1]):  # a stage may recur (parity per runtime): sum
        breakdown[name] = round(breakdown.get(name, 0.0) + stages[i + 1][1] - t, 4)
    return {
        "variant": variant,
        "params": int(model.count_params()),
        "weights_bytes": weights,
        "time_s": elapsed,
        "stages_s": breakdown,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": sampler.peak,
        "peak_above_baseline_bytes": sampler.peak - baseline,
        "ru_maxrss_bytes": common.peak_rss_bytes(),
        "output_bytes": size_on_disk,
    }


def make_models(sizes: Sequence[int], workdir: Path) -> dict[int, Path]:
    """Build and train one MLP per size (in a fresh process), saved as `.keras` files."""
    paths = {}
    for size in sizes:
        path = workdir / f"mlp_{size}.keras"
        result = common.run_worker(
            "bench.export_speed", ["--make-model", str(size), str(path)], timeout_s=900
        )
        if "error" in result:
            raise RuntimeError(f"building the {size}-parameter MLP failed: {result['error']}")
        paths[size] = path
    return paths


def run(
    sizes: Sequence[int] = SIZES,
    variants: Sequence[str] = VARIANTS,
    repeats: int = 1,
    target_size: int = TARGET_SIZE,
    results_dir: Path = common.RESULTS_DIR,
) -> dict[str, Any]:
    """Measure every (size, variant) in fresh processes (`repeats` of them at `target_size`,
    where the time target is judged; the fastest run counts); write export_speed.json."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        models = make_models(sizes, Path(tmp))
        for size in sizes:
            for variant in variants:
                runs = [
                    common.run_worker(
                        "bench.export_speed",
                        ["--worker", variant, str(models[size])],
                        timeout_s=1800,
                    )
                    for _ in range(repeats if size == target_size else 1)
                ]
                good = [r for r in runs if "error" not in r]
                if not good:
                    rows.append({"variant": variant, "target_params": size, **runs[0]})
                    continue
                best = min(good, key=lambda r: r["time_s"])  # least disturbed run
                best["time_s_all"] = [r["time_s"] for r in good]
                best["target_params"] = size
                rows.append(best)
                above_mib = best["peak_above_baseline_bytes"] / 2**20
                print(
                    f"  export {variant:8s} {best['params']:>12,d} params: "
                    f"{best['time_s']:7.2f} s, peak +{above_mib:7.1f} MiB above baseline",
                    flush=True,
                )
    fits = {}
    for variant in variants:
        ok = [r for r in rows if r["variant"] == variant and "error" not in r]
        # Fixed costs (graph building, imports, ORT init) flatten the small end: fit the
        # growth on the sizes where the weights dominate too.
        big = [r for r in ok if r["params"] >= 1_000_000]
        fits[variant] = {
            "time_slope_ge_1m": common.loglog_slope(
                [r["params"] for r in big], [r["time_s"] for r in big]
            ),
            "peak_above_baseline_slope_ge_1m": common.loglog_slope(
                [r["params"] for r in big], [max(r["peak_above_baseline_bytes"], 1) for r in big]
            ),
            "time_slope": common.loglog_slope([r["params"] for r in ok], [r["time_s"] for r in ok]),
            "peak_above_baseline_slope": common.loglog_slope(
                [r["params"] for r in ok], [max(r["peak_above_baseline_bytes"], 1) for r in ok]
            ),
        }
    payload = {
        "benchmark": "export_speed",
        "repeats_at_target_size": repeats,
        "target_size": target_size,
        "rows": rows,
        "fits": fits,
    }
    common.write_result("export_speed", payload, results_dir)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    """Worker entry points (`--make-model`, `--worker`); the suite calls `run()`."""
    p = argparse.ArgumentParser(prog="python -m bench.export_speed")
    p.add_argument("--make-model", nargs=2, metavar=("PARAMS", "PATH"))
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--worker", nargs=2, metavar=("VARIANT", "MODEL"))
    args = p.parse_args(argv)
    if args.make_model:
        params, path = args.make_model
        model = common.build_mlp(int(params), train_steps=args.train_steps)
        model.save(path)
        print(json.dumps({"params": int(model.count_params()), "path": path}))
    elif args.worker:
        print(json.dumps(worker(*args.worker)))
    else:
        p.error("pass --make-model or --worker (the suite runs through `python -m bench`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
