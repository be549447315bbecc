"""Benchmark 4 (opt-in, `--large`): export time and memory from 1M to 1B parameters.

The model is an Embedding plus a stack of large Dense layers with a scalar after each
(`common.build_stack`), untrained (an optimizer would triple memory at 1B). Each (size, tool)
runs in a fresh process capped at `RSS_CAP_BYTES` (the machine is shared), exporting both
formats: this project's `export_model` (SavedModel + ONNX + checks + parity) and Keras'
`model.export` for `tf_saved_model` and for `onnx` (each in its own process: one format's
failure or memory cap does not hide the other's numbers; their sum is "Keras' two exports"). Every
worker appends the stage it reached to a progress file, so a failure (exception, cap,
timeout) is reported with the stage it happened in.

Reported per row: wall time, peak RSS above the post-build baseline as a multiple of the
weights, and MB/s of weights (weights bytes / wall time).
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

SIZES = (1_000_000, 3_000_000, 30_000_000, 100_000_000, 1_000_000_000)
QUICK_SIZES = (1_000_000, 3_000_000)
VARIANTS = ("project", "keras_savedmodel", "keras_onnx")
KERAS_FORMATS = {"keras_savedmodel": "tf_saved_model", "keras_onnx": "onnx"}
TIMEOUT_S = 1800.0
RSS_CAP_BYTES = 12 * 2**30  # the machine is shared: a run must stay under ~12 GiB
TARGET_PEAK_X = 2.0  # peak RSS above baseline, in weights, at 1B (both formats)
TARGET_MB_S = 50.0  # weights throughput from 100M up
TARGET_VS_KERAS = 0.3  # project / Keras' two exports at 30M


def _stage(progress: Path, name: str) -> None:
    with progress.open("a") as f:
        f.write(json.dumps({"stage": name, "t": time.perf_counter(), "rss": common.rss_bytes()}))
        f.write("\n")


def _keras(fmt: str, model: Any, out: Path, progress: Path) -> dict[str, Any]:
    """One of Keras' exports (`tf_saved_model` or `onnx`): its own process, its own cap."""
    _stage(progress, f"keras model.export(format={fmt!r})")
    path = out / ("model.onnx" if fmt == "onnx" else "saved_model")
    model.export(str(path), format=fmt, verbose=False)
    return {"ok": True, "formats": {fmt: {"ok": True}}}


def _project(model: Any, out: Path, progress: Path) -> dict[str, Any]:
    from exporter import ExportOptions, export_model

    report = export_model(model, out, "big", ExportOptions(progress=lambda m: _stage(progress, m)))
    return {
        "ok": report.passed,
        "formats": {"tf_saved_model": {"ok": True}, "onnx": {"ok": True}},
        "parity_passed": report.parity.passed,
        "parity_batches": report.parity.samples,
        "read_only_variables": len(report.freeze_proof.get("read_only_variables", [])),
        "onnx_external_data": report.onnx["external_data"],
    }


def worker(variant: str, params: int, progress: Path) -> dict[str, Any]:
    """Build the model, export it once, report time, RSS and outcome."""
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    _stage(progress, "build")
    model = common.build_stack(params)
    weights = common.weights_bytes(model)
    baseline = common.rss_bytes()
    out = Path(tempfile.mkdtemp(prefix=f"bench-large-{variant}-"))
    outcome: dict[str, Any] = {}
    try:
        with common.RssSampler(interval_s=0.02) as sampler:
            start = time.perf_counter()
            _stage(progress, "export")
            try:
                if variant == "project":
                    outcome = _project(model, out, progress)
                else:
                    outcome = _keras(KERAS_FORMATS[variant], model, out, progress)
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
    above = sampler.peak - baseline
    return {
        "variant": variant,
        "params": int(model.count_params()),
        "weights_bytes": weights,
        "time_s": elapsed,
        "mb_per_s": weights / 1e6 / elapsed,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": sampler.peak,
        "peak_above_baseline_bytes": above,
        "peak_above_baseline_x_weights": above / weights,
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


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, judged on this run's rows (MISSED/MET, never asserted)."""
    ok = [r for r in rows if "error" not in r]
    project = {r["params"]: r for r in ok if r["variant"] == "project"}
    keras: dict[int, dict[str, Any]] = {}
    for r in ok:
        if r["variant"] in KERAS_FORMATS:
            both = keras.setdefault(r["params"], {"time_s": 0.0, "parts": 0})
            both["time_s"] += r["time_s"]
            both["parts"] += 1
    keras = {p: r for p, r in keras.items() if r["parts"] == len(KERAS_FORMATS)}
    result = []
    if project:
        top = project[max(project)]
        met = bool(top.get("ok")) and top["peak_above_baseline_x_weights"] <= TARGET_PEAK_X
        result.append(
            {
                "target": f"{top['params'] / 1e6:.0f}M: both formats, parity, peak <= "
                f"{TARGET_PEAK_X}x weights",
                "measured": f"{top['peak_above_baseline_x_weights']:.2f}x, ok={top.get('ok')}",
                "status": "MET" if met else "MISSED",
            }
        )
        big = [r for p, r in sorted(project.items()) if p >= 90_000_000]
        if big:
            worst = min(r["mb_per_s"] for r in big)
            measured = ", ".join(f"{r['params'] / 1e6:.0f}M {r['mb_per_s']:.1f}" for r in big)
            result.append(
                {
                    "target": f">= {TARGET_MB_S:g} MB/s of weights from 100M up",
                    "measured": measured,
                    "status": "MET" if worst >= TARGET_MB_S else "MISSED",
                }
            )
    mid = [p for p in project if p in keras and 20_000_000 <= p <= 40_000_000]
    if mid:
        ratio = project[mid[0]]["time_s"] / keras[mid[0]]["time_s"]
        result.append(
            {
                "target": f"30M: project <= {TARGET_VS_KERAS}x Keras' two exports",
                "measured": f"{ratio:.2f}x ({project[mid[0]]['time_s']:.1f} s vs "
                f"{keras[mid[0]]['time_s']:.1f} s)",
                "status": "MET" if ratio <= TARGET_VS_KERAS else "MISSED",
            }
        )
    return result


def table(rows: list[dict[str, Any]]) -> str:
    """One line per (variant, size): time, peak above baseline (x weights), MB/s, formats."""
    lines = [
        f"{'variant':16s} {'params':>8s} {'weights':>9s} {'time':>8s} {'peak above':>11s} "
        f"{'x wts':>6s} {'MB/s':>6s}  formats"
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"{r['variant']:8s} {r.get('params_requested', 0) / 1e6:7.0f}M  {r['error'][:90]}"
            )
            continue
        formats = (
            " ".join(
                f"{k}={'ok' if v.get('ok') else 'FAILED'}" for k, v in r.get("formats", {}).items()
            )
            or r.get("exception", "")[:80]
        )
        lines.append(
            f"{r['variant']:16s} {r['params'] / 1e6:7.0f}M {r['weights_bytes'] / 2**20:7.0f}Mi "
            f"{r['time_s']:7.1f}s {r['peak_above_baseline_bytes'] / 2**20:9.0f}Mi "
            f"{r['peak_above_baseline_x_weights']:6.2f} {r['mb_per_s']:6.1f}  {formats}"
        )
    return "\n".join(lines)


def run(
    sizes: Sequence[int] = SIZES,
    variants: Sequence[str] = VARIANTS,
    results_dir: Path = common.RESULTS_DIR,
) -> dict[str, Any]:
    """Every (size, variant) in its own capped process; write large_model.json and the plot."""
    from bench import plots

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-large-progress-") as tmp:
        for params in sizes:
            for variant in variants:
                progress = Path(tmp) / f"{variant}-{params}.jsonl"
                result = common.run_worker(
                    "bench.large_model",
                    [variant, str(params), str(progress)],
                    timeout_s=TIMEOUT_S,
                    rss_cap_bytes=RSS_CAP_BYTES,
                )
                result.setdefault("variant", variant)
                result["params_requested"] = params
                result["stages"] = _stages(progress)
                rows.append(result)
                print(table([result]).splitlines()[-1], flush=True)
    payload = {
        "benchmark": "large_model",
        "rss_cap_bytes": RSS_CAP_BYTES,
        "rows": rows,
        "targets": targets(rows),
    }
    common.write_result("large_model", payload, results_dir)
    plots.large_scaling(payload, results_dir / "large_scaling.png")
    print(table(rows))
    for t in payload["targets"]:
        print(f"  {t['status']:6s} {t['target']}: {t['measured']}")
    return payload


if __name__ == "__main__":
    _variant, _params, _progress = sys.argv[1:4]
    print(json.dumps(worker(_variant, int(_params), Path(_progress))))
