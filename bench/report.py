"""The ratios table: every target of issue 4, computed from the JSON of one run, met or missed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import common
from exporter.formatting import aligned_rows


@dataclass(frozen=True)
class Target:
    """One stated target and what this run measured for it."""

    name: str
    measured: float | None
    limit: float
    higher_is_better: bool
    detail: str

    @property
    def status(self) -> str:
        if self.measured is None:
            return "n/a"
        ok = self.measured >= self.limit if self.higher_is_better else self.measured <= self.limit
        return "MET" if ok else "MISSED"

    @property
    def goal(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.limit:g}x"


def _load(results_dir: Path, name: str) -> dict[str, Any] | None:
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _export_row(payload: dict[str, Any], variant: str, size: int) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in payload["rows"]
            if r["variant"] == variant and r.get("target_params") == size and "error" not in r
        ),
        None,
    )


def export_targets(payload: dict[str, Any], target_size: int) -> list[Target]:
    """Export time vs Keras at the target size; peak RSS vs weights at the largest size."""
    targets = []
    project = _export_row(payload, "project", target_size)
    keras = _export_row(payload, "keras", target_size)
    ratio = project["time_s"] / keras["time_s"] if project and keras else None
    targets.append(
        Target(
            f"export time, project / Keras model.export x2 ({target_size / 1e6:g}M params)",
            ratio,
            0.5,
            False,
            f"{project['time_s']:.2f} s vs {keras['time_s']:.2f} s" if ratio else "missing run",
        )
    )
    ok = [r for r in payload["rows"] if r["variant"] == "project" and "error" not in r]
    if ok:
        ok.sort(key=lambda r: r["params"])
        big = ok[-1]
        above = big["peak_above_baseline_bytes"] / big["weights_bytes"]
        marginal = ""
        if len(ok) > 1:
            prev = ok[-2]
            extra = (big["peak_above_baseline_bytes"] - prev["peak_above_baseline_bytes"]) / (
                big["weights_bytes"] - prev["weights_bytes"]
            )
            marginal = f"; marginal {extra:.1f} B of RSS per extra weight byte"
        targets.append(
            Target(
                f"export peak RSS above baseline / weights ({big['params'] / 1e6:.1f}M params)",
                above,
                2.5,
                False,
                f"+{big['peak_above_baseline_bytes'] / 2**20:.0f} MiB over "
                f"{big['weights_bytes'] / 2**20:.0f} MiB weights (raw peak "
                f"{big['peak_rss_bytes'] / 2**20:.0f} MiB){marginal}",
            )
        )
    return targets


def latency_targets(payload: dict[str, Any]) -> list[Target]:
    """Frozen SavedModel vs Keras' SavedModel at batch 1, through both loaders."""
    ratios = payload["ratios_vs_keras_sm_load"]["1"]
    rows = {(r["runtime"], r["batch"]): r for r in payload["rows"]}
    out = []
    for frozen, keras in payload["target_pairs"].items():
        f, k = rows[(frozen, 1)]["median_ms"], rows[(keras, 1)]["median_ms"]
        out.append(
            Target(
                f"batch-1 latency, {frozen} / {keras}",
                f / k,
                0.8,
                False,
                f"{f:.3f} ms vs {k:.3f} ms (ORT frozen ONNX: "
                f"{ratios['ort_frozen_onnx']:.2f}x of keras_sm_load)",
            )
        )
    return out


def serving_targets(payload: dict[str, Any]) -> list[Target]:
    """Issue 18's targets at 8 clients (ratios to the floors of the same run) and the
    single-client p50 against the echo floor plus the in-process run."""
    from bench.serving_load import find, ratio

    rows, out = payload["rows"], []
    clients = 8 if find(rows, "grpc floor", 8) else max(r["clients"] for r in rows)
    for backend in payload["in_process_batch1"]:
        off = ratio(payload, f"{backend} batching=off", clients)
        out.append(
            Target(
                f"[{backend}] gRPC req/s at {clients} clients / grpcio floor, unbatched",
                off,
                0.8,
                True,
                f"server CPU/req {_cpu(rows, f'{backend} batching=off', clients)} ms vs floor "
                f"{_cpu(rows, 'grpc floor', clients)} ms",
            )
        )
        for mode in ("default", "tuned"):
            name = f"{backend} batching={mode}"
            if find(rows, name, clients) is None:
                continue
            value = ratio(payload, name, clients)
            beats = "above" if value and off and value > off else "NOT above"
            out.append(
                Target(
                    f"[{backend}] gRPC req/s at {clients} clients / grpcio floor, batching {mode}",
                    value,
                    1.0,
                    True,
                    f"{beats} unbatched ({_fmt(off)}x); p99 "
                    f"{(find(rows, name, clients) or {}).get('p99_ms', 0):.2f} ms",
                )
            )
        rest = ratio(payload, f"{backend} REST", clients)
        out.append(
            Target(
                f"[{backend}] REST req/s at {clients} clients / bare http.server floor",
                rest,
                0.7,
                True,
                f"server CPU/req {_cpu(rows, f'{backend} REST', clients)} ms vs floor "
                f"{_cpu(rows, 'http floor', clients)} ms",
            )
        )
        p50 = payload["derived"]["p50_1_client_over_floor_plus_run"].get(backend)
        base = payload["in_process_batch1"][backend]
        idle = base.get("idle_gap_median_ms")
        out.append(
            Target(
                f"[{backend}] 1-client gRPC p50 / (echo floor p50 + in-process run p50)",
                p50,
                1.1,
                False,
                f"in-process p50 {base['median_ms']:.3f} ms back to back"
                + ("" if idle is None else f", {idle:.3f} ms after 1 ms idle"),
            )
        )
    return out


def _cpu(rows: list[dict[str, Any]], target: str, clients: int) -> str:
    from bench.serving_load import find

    value = (find(rows, target, clients) or {}).get("server_cpu_ms_per_request")
    return "n/a" if value is None else f"{value:.2f}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def collect(results_dir: Path = common.RESULTS_DIR, target_size: int = 3_000_000) -> list[Target]:
    """Every target for which this results directory holds a measurement."""
    targets: list[Target] = []
    if (payload := _load(results_dir, "export_speed")) is not None:
        targets += export_targets(payload, target_size)
    if (payload := _load(results_dir, "latency")) is not None:
        targets += latency_targets(payload)
    if (payload := _load(results_dir, "serving")) is not None:
        targets += serving_targets(payload)
    return targets


def table(targets: list[Target]) -> str:
    """Plain-text table for the terminal."""
    header = ("target", "measured", "goal", "status", "detail")
    rows = [
        (t.name, "n/a" if t.measured is None else f"{t.measured:.2f}x", t.goal, t.status, t.detail)
        for t in targets
    ]
    return "\n".join(aligned_rows(header, rows))


def markdown(targets: list[Target]) -> str:
    """The same table in Markdown, for docs/performance.md."""
    lines = ["| target | measured | goal | status | detail |", "|---|---:|---|---|---|"]
    for t in targets:
        measured = "n/a" if t.measured is None else f"{t.measured:.2f}x"
        lines.append(f"| {t.name} | {measured} | {t.goal} | **{t.status}** | {t.detail} |")
    return "\n".join(lines)


def write_summary(targets: list[Target], results_dir: Path = common.RESULTS_DIR) -> Path:
    """summary.json (targets with status) and summary.md (the Markdown table)."""
    (results_dir / "summary.md").write_text(markdown(targets) + "\n")
    return common.write_result(
        "summary",
        {"targets": [{**asdict(t), "goal": t.goal, "status": t.status} for t in targets]},
        results_dir,
    )
