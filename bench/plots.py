"""PNG plots of the benchmark JSON (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): no display needed

LABELS = {
    "project": "frozen-scalars export_model (full: freeze+SM+ONNX+parity)",
    "keras": "Keras 3 model.export (SavedModel + ONNX)",
    "tf2onnx": "tf2onnx.convert.from_keras (ONNX only)",
}


def export_scaling(payload: dict[str, Any], path: Path) -> Path:
    """Log-log export time and peak RSS (above the post-load baseline) against parameters."""
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    rows = [r for r in payload["rows"] if "error" not in r]
    for variant in LABELS:
        pts = sorted((r["params"], r) for r in rows if r["variant"] == variant)
        if not pts:
            continue
        xs = [p for p, _ in pts]
        slope = payload["fits"].get(variant, {})
        ax_t.plot(
            xs,
            [r["time_s"] for _, r in pts],
            "o-",
            label=f"{LABELS[variant]} (slope >=1M: {_fmt(slope.get('time_slope_ge_1m'))})",
        )
        ax_m.plot(
            xs,
            [r["peak_above_baseline_bytes"] / 2**20 for _, r in pts],
            "o-",
            label=f"{variant} (slope >=1M: {_fmt(slope.get('peak_above_baseline_slope_ge_1m'))})",
        )
    if rows:
        weights = sorted({(r["params"], r["weights_bytes"]) for r in rows})
        ax_m.plot(
            [p for p, _ in weights],
            [2.5 * w / 2**20 for _, w in weights],
            "k--",
            label="target: 2.5 x weights",
        )
    _log_log(ax_t, "Export wall time", "seconds")
    _log_log(ax_m, "Export peak RSS above post-load baseline", "MiB")
    return _save(fig, path)


def latency_bars(payload: dict[str, Any], path: Path) -> Path:
    """Median latency (p99 as error bar) per runtime, one group per batch size."""
    rows = payload["rows"]
    batches = sorted({r["batch"] for r in rows})
    runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        sel = {r["runtime"]: r for r in rows if r["batch"] == batch}
        med = [sel[n]["median_ms"] for n in runtimes]
        err = [max(0.0, sel[n]["p99_ms"] - sel[n]["median_ms"]) for n in runtimes]
        ax.bar(range(len(runtimes)), med, yerr=[[0] * len(err), err], capsize=3)
        ax.set_xticks(range(len(runtimes)), runtimes, rotation=60, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms (bar: median, whisker: p99)")
        ax.set_title(f"batch {batch}")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"In-process inference latency, MLP {payload['params']:,} params")
    return _save(fig, path)


def serving_curves(payload: dict[str, Any], path: Path) -> Path:
    """Requests/s and p50 against concurrent clients for every server and floor."""
    rows = payload["rows"]
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in dict.fromkeys(r["target"] for r in rows):
        pts = sorted((r["clients"], r) for r in rows if r["target"] == name)
        floor = not pts[0][1]["floor"]
        style = ("--" if floor else "-") if pts[0][1]["protocol"] == "grpc" else ":"
        marker = "s" if floor else "o" if "batching=off" not in name else "x"
        xs = [c for c, _ in pts]
        ax_r.plot(xs, [r["requests_per_s"] for _, r in pts], style + marker, label=name)
        ax_l.plot(xs, [r.get("median_ms", float("nan")) for _, r in pts], style + marker)
    ax_r.set_title(f"Throughput, batch-1 Predict, MLP {payload['params']:,} params")
    ax_r.set_ylabel("requests/s")
    ax_l.set_title("p50 latency")
    ax_l.set_ylabel("ms")
    ax_l.set_yscale("log")
    for ax in (ax_r, ax_l):
        ax.set_xlabel("concurrent clients (closed loop, separate processes)")
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
    ax_r.legend(fontsize=7)
    return _save(fig, path)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def large_scaling(payload: dict[str, Any], path: Path) -> Path:
    """Log-log wall time and peak RSS above baseline vs parameters (1M..1B), both tools."""
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    rows = [r for r in payload["rows"] if "error" not in r]
    labels = {
        "project": LABELS["project"],
        "keras_savedmodel": "Keras 3 model.export(format='tf_saved_model')",
        "keras_onnx": "Keras 3 model.export(format='onnx')",
    }
    for variant, label in labels.items():
        pts = sorted((r["params"], r) for r in rows if r["variant"] == variant)
        if not pts:
            continue
        xs = [p for p, _ in pts]
        failed = [p for p, r in pts if not r.get("ok")]
        ax_t.plot(xs, [r["time_s"] for _, r in pts], "o-", label=label)
        ax_m.plot(xs, [r["peak_above_baseline_bytes"] / 2**20 for _, r in pts], "o-", label=label)
        for p, r in pts:
            if p in failed:
                ax_t.annotate("failed", (p, r["time_s"]), fontsize=7)
    if rows:
        weights = sorted({(r["params"], r["weights_bytes"]) for r in rows})
        xs = [p for p, _ in weights]
        ax_m.plot(xs, [2.0 * w / 2**20 for _, w in weights], "k--", label="target: 2.0 x weights")
        ax_t.plot(xs, [w / 50e6 for _, w in weights], "k:", label="target: 50 MB/s of weights")
    _log_log(ax_t, "Export wall time (both formats)", "seconds")
    _log_log(ax_m, "Peak RSS above post-build baseline", "MiB")
    return _save(fig, path)


def _log_log(ax: Any, title: str, unit: str) -> None:
    """Log-log axes against parameters, with a grid and the legend."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig: Any, path: Path) -> Path:
    """Write the PNG and free the figure (pyplot keeps every open figure alive)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
