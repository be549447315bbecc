"""Smoke tests of `make bench`: each benchmark runs once on a tiny model and writes finite
numbers and a plot. No timing assertions: benchmarks measure, tests only prove they work."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import common, export_speed, latency, plots, report, serving_load

TINY = 20_000


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


def _check_json(path: Path, keys: set[str]) -> dict[str, Any]:
    payload = json.loads(path.read_text())
    assert keys <= set(payload), f"{path.name} lacks {keys - set(payload)}"
    assert {"cores", "cpu_model", "packages", "date_utc"} <= set(payload["machine"])
    numbers = _numbers({k: v for k, v in payload.items() if k != "machine"})
    assert numbers and all(math.isfinite(x) for x in numbers)
    return payload


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hidden_width_hits_the_requested_size() -> None:
    for params in (TINY, 3_000_000):
        model = common.build_mlp(params, train_steps=0)
        assert abs(model.count_params() - params) / params < 0.05


def test_export_speed_smoke(tmp_path: Path) -> None:
    payload = export_speed.run(
        sizes=(TINY,), variants=("project",), target_size=TINY, results_dir=tmp_path
    )
    (row,) = payload["rows"]
    assert "error" not in row, row.get("error")
    assert row["weights_bytes"] > 0 and row["time_s"] > 0
    assert {"trace", "freeze", "savedmodel", "onnx", "parity"} <= set(row["stages_s"])
    _check_json(tmp_path / "export_speed.json", {"rows", "fits", "target_size"})
    _check_png(plots.export_scaling(payload, tmp_path / "export.png"))


def test_latency_smoke(tmp_path: Path) -> None:
    payload = latency.run(params=TINY, batches=(1, 4), quick=True, results_dir=tmp_path)
    assert {(r["runtime"], r["batch"]) for r in payload["rows"]} == {
        (name, b) for name in latency.RUNTIMES for b in (1, 4)
    }
    _check_json(tmp_path / "latency.json", {"rows", "ratios_vs_keras_sm_load", "params"})
    _check_png(plots.latency_bars(payload, tmp_path / "latency.png"))
    assert all(t.measured is not None for t in report.latency_targets(payload))


@pytest.mark.slow  # six server and floor processes and a client process: minutes on 2 cores
def test_serving_smoke(tmp_path: Path) -> None:
    payload = serving_load.run(
        params=TINY,
        clients=(1, 8),
        backends=("tensorflow",),
        batching_modes=("off", "tuned"),
        duration_s=0.3,
        rounds=1,
        quick=True,
        client_processes=2,
        results_dir=tmp_path,
    )
    names = {r["target"] for r in payload["rows"]}
    assert names == {
        "grpc floor",
        "grpc.aio floor",
        "http floor",
        "tensorflow batching=off",
        "tensorflow batching=tuned",
        "tensorflow REST",
    }
    assert len(payload["rows"]) == len(names) * 2
    assert all(r["errors"] == 0 and r["requests_per_s"] > 0 for r in payload["rows"])
    assert all(r["server_cpu_ms_per_request"] > 0 for r in payload["rows"])
    assert serving_load.ratio(payload, "tensorflow batching=tuned", 8) > 0
    _check_json(tmp_path / "serving.json", {"rows", "in_process_batch1", "derived"})
    _check_png(plots.serving_curves(payload, tmp_path / "serving.png"))
    assert "| tensorflow REST |" in serving_load.table(payload)
    targets = report.serving_targets(payload)
    assert len(targets) == 4 and all(t.status in ("MET", "MISSED") for t in targets)


@pytest.mark.slow
def test_make_bench_quick_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env=common.bench_env(),
        cwd=common.REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "status" in proc.stdout and ("MET" in proc.stdout or "MISSED" in proc.stdout)
    for name in ("export_speed", "latency", "serving", "matrix", "summary"):
        assert (tmp_path / f"{name}.json").exists()
    for name in ("export_scaling", "latency", "serving"):
        _check_png(tmp_path / f"{name}.png")


@pytest.mark.slow
def test_matrix_bench_writes_one_row_per_model(tmp_path: Path) -> None:
    from bench import matrix

    payload = matrix.run(["integer_lookup"], results_dir=tmp_path)
    (row,) = payload["rows"]
    assert "error" not in row, row
    assert row["model"] == "integer_lookup" and row["parity_passed"] and row["tables"] == 1
    assert row["time_s"] > 0 and row["peak_rss_bytes"] > row["baseline_rss_bytes"] > 0
    _check_json(tmp_path / "matrix.json", {"benchmark", "rows"})
