"""`make soak` (`python -m bench.soak`): the reliability soak of issue 8, as numbers.

1. Hot swaps under load: a ~50M-parameter MLP exported by the exporter (default settings, so
   with its warmup record) is served; `--clients` gRPC clients (10 s deadline) call Predict in
   closed loops while `--swaps` new versions are published (copied, then renamed in, as the
   exporter publishes). Counted: failed requests (any non-OK status), p99 in steady state and
   during swaps (publish -> old version END), server RSS after each swap.
2. The malformed-request catalogue (`tests.malformed`) against a server with default limits:
   each case's answer vs. the expected code, and whether the server still answered after it.

Writes `bench/results/soak.json` and prints a summary; exits 1 if a target is missed (0 failed
requests, swap p99 <= 2x steady p99, RSS within +-10 % across swaps, every bad input answered
as expected with the server alive).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common
from serving.launch import ServerProcess, start_server_process

MODEL = "soak"
DEADLINE_S = 10.0
STARTUP_TIMEOUT_S = 600.0
SWAP_TIMEOUT_S = 600.0
SETTLE_S = 3.0  # after the old version ended: let the reclaimer run before RSS is read


def export_source(params: int, cache: Path) -> Path:
    """The exporter's default export of the soak MLP (cached: exporting 50M takes minutes)."""
    version_dir = cache / "tfserving" / MODEL / "1"
    if not (version_dir / "saved_model.pb").exists():
        from exporter import ExportOptions, export_model

        shutil.rmtree(cache, ignore_errors=True)
        export_model(
            common.build_mlp(params, train_steps=1), cache, MODEL, ExportOptions(parity_samples=1)
        )
    return version_dir


def _rss(server: ServerProcess) -> int:
    import psutil

    return int(psutil.Process(server.proc.pid).memory_info().rss)


def _publish(source: Path, base: Path, version: int) -> None:
    """Copy next to the base path, then one rename: the server never sees a partial version."""
    tmp = base / f".tmp-{version}"
    shutil.copytree(source, tmp)
    tmp.rename(base / str(version))


class _Load:
    """Closed-loop gRPC clients; every call's (start, seconds, status name, version)."""

    def __init__(self, target: str, clients: int) -> None:
        self.target, self.clients = target, clients
        self.calls: list[tuple[float, float, str, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from serving.client import make_tensor_proto

        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["features"].CopyFrom(make_tensor_proto(common.inputs_for(1)))
        with grpc.insecure_channel(self.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    response = stub.Predict(request, timeout=DEADLINE_S)
                    status, version = "OK", response.model_spec.version.value
                except grpc.RpcError as err:
                    status, version = err.code().name, 0
                with self._lock:
                    self.calls.append((start, time.monotonic() - start, status, version))

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE_S + 5)

    def between(self, start: float, end: float) -> list[tuple[float, float, str, int]]:
        with self._lock:
            return [c for c in self.calls if start <= c[0] < end]


def _p99_ms(calls: Sequence[tuple[float, float, str, int]]) -> float | None:
    durations = [c[1] for c in calls if c[2] == "OK"]
    return common.stats_ms(durations)["p99_ms"] if durations else None


def _status(server: ServerProcess) -> dict[int, str]:
    from serving.client import ServingClient

    with ServingClient(server.grpc_target, timeout=10.0) as client:
        return {s.version: s.state for s in client.status(MODEL)}


def _wait_swapped(server: ServerProcess, new: int, old: int) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while True:
        status = _status(server)
        if status.get(new) == "AVAILABLE" and status.get(old) == "END":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"version {new} did not replace {old}: {status}")
        time.sleep(0.1)


def swaps(source: Path, work: Path, clients: int, count: int, steady_s: float) -> dict[str, Any]:
    """Part 1: steady load, then `count` warm swaps under the same load."""
    base = work / MODEL
    base.mkdir()
    _publish(source, base, 1)
    server = start_server_process(
        [
            f"--model_name={MODEL}",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=0.5",
            f"--grpc_max_threads={max(8, clients)}",
        ],
        rest=False,
        timeout_s=STARTUP_TIMEOUT_S,
        env=common.bench_env(),
        cwd=common.REPO_ROOT,
    )
    try:
        rss_loaded = _rss(server)
        with _Load(server.grpc_target, clients) as load:
            t0 = time.monotonic()
            time.sleep(steady_s)
            steady = load.between(t0, time.monotonic())
            windows, rss_after = [], []
            for version in range(2, count + 2):
                start = time.monotonic()
                _publish(source, base, version)
                _wait_swapped(server, version, version - 1)
                end = time.monotonic()
                windows.append((start, end))
                time.sleep(SETTLE_S)
                rss_after.append(_rss(server))
            t1 = time.monotonic()
        calls = load.between(t0, t1 + DEADLINE_S)
        during = [c for s, e in windows for c in load.between(s, e)]
        failed: dict[str, int] = {}
        for c in calls:
            if c[2] != "OK":
                failed[c[2]] = failed.get(c[2], 0) + 1
        steady_p99, swap_p99 = _p99_ms(steady), _p99_ms(during)
        spread = (max(rss_after) - min(rss_after)) / rss_after[0] if rss_after else None
        return {
            "clients": clients,
            "swaps": count,
            "requests": len(calls),
            "requests_failed": sum(failed.values()),
            "failed_by_status": failed,
            "steady_p99_ms": steady_p99,
            "swap_p99_ms": swap_p99,
            "swap_p99_over_steady": swap_p99 / steady_p99 if steady_p99 and swap_p99 else None,
            "swap_seconds": [round(e - s, 2) for s, e in windows],
            "versions_served": sorted({c[3] for c in calls if c[2] == "OK"}),
            "rss_loaded_bytes": rss_loaded,
            "rss_after_swaps_bytes": rss_after,
            "rss_spread_fraction": spread,
        }
    finally:
        server.stop()


def malformed_requests(work: Path) -> dict[str, Any]:
    """Part 2: the catalogue against a server with the default limits."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tests import malformed
    from tests.tfs_models import build_repository

    repo = work / "repo"
    build_repository(repo)
    server = start_server_process(
        [
            f"--model_config_file={repo / 'tfserving' / 'models.config'}",
            "--rest_api_timeout_in_ms=2000",
        ],
        timeout_s=STARTUP_TIMEOUT_S,
        env=common.bench_env(),
        cwd=common.REPO_ROOT,
    )
    outcomes = []
    try:
        limit = 4 * 1024 * 1024
        for rest_case in malformed.rest_cases(limit):
            outcomes.append(malformed.run_rest(server.rest_port, rest_case, 2.0))
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for grpc_case in malformed.grpc_cases():
                outcomes.append(malformed.run_grpc(stub, grpc_case))
        alive = server.proc.poll() is None
    finally:
        server.stop()
    return {
        "bad_inputs_tried": len(outcomes),
        "answered_as_expected": sum(o.ok for o in outcomes),
        "server_alive_after_all": alive,
        "cases": [
            {
                "case": o.name,
                "expected": str(o.expected),
                "got": str(o.got),
                "short": o.short,
                "alive": o.alive,
                "seconds": round(o.seconds, 3),
            }
            for o in outcomes
        ],
    }


def _targets(result: dict[str, Any]) -> dict[str, bool]:
    s, m = result["swaps"], result["malformed"]
    ratio, spread = s["swap_p99_over_steady"], s["rss_spread_fraction"]
    return {
        "0 failed requests": s["requests_failed"] == 0,
        ">= 5 swaps under >= 8 clients": s["swaps"] >= 5 and s["clients"] >= 8,
        "swap p99 <= 2x steady": ratio is not None and ratio <= 2.0,
        "RSS flat (+-10%) across >= 10 swaps": s["swaps"] >= 10
        and spread is not None
        and spread <= 0.10,
        ">= 40 bad inputs, each as expected, server alive": m["bad_inputs_tried"] >= 40
        and m["answered_as_expected"] == m["bad_inputs_tried"]
        and m["server_alive_after_all"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--params", type=int, default=50_000_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--swaps", type=int, default=10)
    p.add_argument("--steady-seconds", type=float, default=15.0)
    p.add_argument("--cache", type=Path, default=common.REPO_ROOT / "artifacts" / "soak")
    p.add_argument("--results", type=Path, default=common.RESULTS_DIR)
    args = p.parse_args(argv)
    source = export_source(args.params, args.cache)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {
            "params": args.params,
            "swaps": swaps(source, work, args.clients, args.swaps, args.steady_seconds),
            "malformed": malformed_requests(work),
        }
    result["targets"] = _targets(result)
    path = common.write_result("soak", result, args.results)
    s, m = result["swaps"], result["malformed"]
    print(json.dumps({k: v for k, v in s.items() if k != "rss_after_swaps_bytes"}, indent=1))
    print(f"RSS after each swap (MiB): {[round(b / 2**20) for b in s['rss_after_swaps_bytes']]}")
    print(
        f"bad inputs: {m['answered_as_expected']}/{m['bad_inputs_tried']} as expected, "
        f"server alive: {m['server_alive_after_all']}"
    )
    for target, met in result["targets"].items():
        print(f"  [{'met' if met else 'MISSED'}] {target}")
    print(f"wrote {path}")
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
