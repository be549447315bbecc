"""Benchmark 3: the embedded server under closed-loop load against the floors Python sets.

One run starts every server at once, each in its own process: the bare grpcio floor (sync, as
`python -m serving` uses, and grpc.aio beside it), the bare HTTP floor (`bench.floors`), and
`python -m serving` for TF and ONNX, batching off and on. A few client processes
(`bench.load_client`, official stubs / keep-alive HTTP) then send batch-1 Predict back to back
at 1, 8 and 32 concurrent clients, the targets interleaved round by round so that the load
other jobs put on this shared machine hits every target alike. Ratios to the floor of the same
run are what the targets are stated in; absolute req/s only compare within a run.

One job at ~490 lines: starting the targets, driving the clients round by round and reducing
the rounds to one table share the run's interleaving; split, the ratios would stop being
from one run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common
from serving.launch import ServerProcess, start_server_process

CLIENTS = (1, 8, 32)
# "A small MLP" (issue 18): ~0.1 ms of model CPU per batch-1 run, so the ratios to the floors
# measure the server, not TF's matmuls (the 3M-parameter MLP of the other benchmarks costs
# 0.3-4 ms per run on this shared machine, more than the whole transport).
SERVING_PARAMS = 100_000
CLIENT_PROCESSES = 4
IDLE_GAP_S = 1e-3
METRICS_PATH = "/monitoring/prometheus/metrics"
BATCH_SIZES = ":tensorflow:serving:batching_session:padding_size_count"
# Triton's ONNX Runtime backend parameter for a model that should not wake ORT's thread pool
# for each run (`serving.ort_options`); the "onnx intra_op=1" row serves the export with it.
SINGLE_THREAD_PARAMETER = (
    'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
)
MODEL_NAME = "mlp"
STARTUP_TIMEOUT_S = 180.0
# Tuned by a sweep at 8 clients (docs/performance.md, batching parameters): one batch thread per
# core and a 200 us wait for company beat TF Serving's CPU starting point (timeout 0), whose
# batches stay at ~1.7 rows when the runtime is never the bottleneck; a queue for every client.
TUNED_BATCHING = """\
max_batch_size { value: 64 }
batch_timeout_micros { value: 200 }
num_batch_threads { value: 2 }
max_enqueued_batches { value: 64 }
"""


@dataclass(frozen=True)
class Target:
    """One server under test: how to reach it and what it is."""

    name: str
    protocol: str  # grpc | rest
    address: str
    floor: str  # the name of the floor its ratio is taken against ("" for a floor)
    pid: int  # the serving process, whose CPU time each point records
    metrics: str = ""  # host:port of its Prometheus page (batching targets: batch sizes)


@contextmanager
def _floor(kind: str, response_file: Path) -> Iterator[tuple[str, int]]:
    """A `bench.floors` process; yields its address and pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floors", kind, str(response_file)],
        stdout=subprocess.PIPE,
        text=True,
        env=common.bench_env(),
        cwd=common.REPO_ROOT,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("Serving on "):
            raise RuntimeError(f"floor {kind} did not start: {line!r}")
        yield line.split()[-1], proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@contextmanager
def _server(
    base: Path, backend: str, batching_file: Path | None, monitoring_file: Path
) -> Iterator[ServerProcess]:
    flags = [
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={base.resolve()}",
        f"--backend={backend}",
        "--file_system_poll_wait_seconds=0",
        f"--monitoring_config_file={monitoring_file}",
    ]
    if batching_file is not None:
        flags.append("--enable_batching")
        if batching_file.name != "default":
            flags.append(f"--batching_parameters_file={batching_file}")
    server = start_server_process(
        flags, timeout_s=STARTUP_TIMEOUT_S, env=common.bench_env(), cwd=common.REPO_ROOT
    )
    try:
        yield server
    finally:
        server.stop()


class ClientPool:
    """CLIENT_PROCESSES persistent `bench.load_client` processes (TF's import takes seconds,
    so they are started once and reused for every point)."""

    def __init__(self, count: int) -> None:
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.load_client"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=common.bench_env(),
                cwd=common.REPO_ROOT,
            )
            for _ in range(count)
        ]
        for proc in self._procs:
            self._read(proc)

    @staticmethod
    def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError(f"load client {proc.pid} exited ({proc.poll()})")
        return json.loads(line)

    @staticmethod
    def _send(proc: subprocess.Popen[str], message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    def measure(self, target: Target, clients: int, duration_s: float) -> dict[str, Any]:
        """`clients` closed loops spread over the processes, all starting at the same instant;
        with the CPU seconds the serving process spent meanwhile."""
        import psutil

        server = psutil.Process(target.pid)
        procs = self._procs[: min(clients, len(self._procs))]
        shares = [clients // len(procs) + (i < clients % len(procs)) for i in range(len(procs))]
        for proc, threads in zip(procs, shares, strict=True):
            command = {
                "protocol": target.protocol,
                "target": target.address,
                "model": MODEL_NAME,
                "threads": threads,
                "duration_s": duration_s,
            }
            self._send(proc, command)
        prepared = [self._read(proc) for proc in procs]
        if not all(p.get("prepared") for p in prepared):
            raise RuntimeError(f"load clients could not connect to {target.name}: {prepared}")
        start_at = time.time() + 0.1
        for proc in procs:
            self._send(proc, {"start_at": start_at})
        batches_before = _batch_counts(target.metrics)
        before = server.cpu_times()
        results = [self._read(proc) for proc in procs]
        after = server.cpu_times()
        batches_after = _batch_counts(target.metrics)
        latencies = [x for r in results for x in r["latencies_us"]]
        errors = sum(r["errors"] for r in results)
        first = next((r["first_error"] for r in results if r["first_error"]), "")
        cpu_s = (after.user - before.user) + (after.system - before.system)
        batches = [a - b for a, b in zip(batches_after, batches_before, strict=True)]
        return {
            "latencies_us": latencies,
            "errors": errors,
            "first_error": first,
            "cpu_s": cpu_s,
            "batches": batches,
        }

    def close(self) -> None:
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _batch_counts(address: str) -> tuple[float, float]:
    """(batches run, rows in them) so far, from the server's own batch-size metric
    (`execution_batch_size` label, TF Serving's name); (0, 0) without a metrics address."""
    if not address:
        return 0.0, 0.0
    import urllib.request

    with urllib.request.urlopen(f"http://{address}{METRICS_PATH}", timeout=30) as page:
        text = page.read().decode()
    batches = rows = 0.0
    for line in text.splitlines():
        if line.startswith(BATCH_SIZES + "{"):
            size = float(line.split('execution_batch_size="', 1)[1].split('"', 1)[0])
            count = float(line.rsplit(" ", 1)[1])
            batches, rows = batches + count, rows + size * count
    return batches, rows


def _point(samples: Sequence[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """Rounds of one (target, clients) pair merged: req/s over all rounds, latency quantiles."""
    latencies = sorted(x for s in samples for x in s["latencies_us"])
    seconds = duration_s * len(samples)
    cpu_s = sum(s["cpu_s"] for s in samples)
    out: dict[str, Any] = {
        "requests": len(latencies),
        "server_cpu_ms_per_request": 1e3 * cpu_s / len(latencies) if latencies else None,
        "requests_per_s": len(latencies) / seconds,
        "rounds_requests_per_s": [len(s["latencies_us"]) / duration_s for s in samples],
        "errors": sum(s["errors"] for s in samples),
        "first_error": next((s["first_error"] for s in samples if s["first_error"]), ""),
    }
    batches = sum(s["batches"][0] for s in samples)
    if batches:
        out["mean_batch_size"] = sum(s["batches"][1] for s in samples) / batches
    if latencies:
        out |= common.stats_ms([x / 1e6 for x in latencies])
    return out


def _calls(call: Any, repeats: int, gap_s: float) -> tuple[float, float]:
    """`call` `repeats` times, each after a `gap_s` pause: p50 wall ms and the process's CPU ms
    per call (the runtime's pool threads included)."""
    wall, cpu = [], 0.0
    for _ in range(repeats):
        if gap_s:
            time.sleep(gap_s)
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - start)
        cpu += time.process_time() - start_cpu
    return common.stats_ms(wall)["median_ms"], 1e3 * cpu / repeats


def in_process(base: Path, backend: str, quick: bool) -> dict[str, float]:
    """Batch-1 latency of the servable the server would build, called directly: back to back
    (caches warm, the runtime's threads spinning) and after 1 ms pauses (what a request finds)."""
    if backend == "onnx":
        from serving.onnx_servable import OnnxServable

        servable: Any = OnnxServable(MODEL_NAME, 1, str(base / "1"))
    else:
        from serving.servable import TFServable

        servable = TFServable(MODEL_NAME, 1, str(base / "1"))
    outputs = list(servable.signature_defs["serving_default"].outputs)
    x = common.inputs_for(1)

    def call() -> Any:
        return servable.run("serving_default", {"features": x}, outputs)

    stats = common.time_calls(call, warmup=20, repeats=100 if quick else 1000, budget_s=5.0)
    _, stats["cpu_ms"] = _calls(call, 50 if quick else 500, 0.0)
    stats["idle_gap_median_ms"], stats["idle_gap_cpu_ms"] = _calls(
        call, 50 if quick else 500, IDLE_GAP_S
    )
    return stats


def _responses(server: ServerProcess, out: Path) -> tuple[Path, Path]:
    """The real server's answers to the benchmark request, gRPC bytes and REST body, for the
    floors to send back."""
    import http.client

    from bench.load_client import grpc_caller
    from serving.client import ServingClient

    with ServingClient(server.grpc_target) as client:
        request = client.predict_request({"features": common.inputs_for(1)}, MODEL_NAME)
        grpc_bytes = client.predict_raw(request).SerializeToString()
    grpc_caller(server.grpc_target, MODEL_NAME)[1]()
    body = json.dumps({"instances": common.inputs_for(1).tolist()}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("POST", f"/v1/models/{MODEL_NAME}:predict", body)
    rest_bytes = conn.getresponse().read()
    conn.close()
    (out / "grpc_response.bin").write_bytes(grpc_bytes)
    (out / "rest_response.json").write_bytes(rest_bytes)
    return out / "grpc_response.bin", out / "rest_response.json"


def _targets(
    stack: ExitStack,
    bases: dict[str, Path],
    backends: Sequence[str],
    batching_modes: Sequence[str],
    batching_files: dict[str, Path | None],
    out: Path,
) -> list[Target]:
    """Starts every server and floor (each its own process) and names them."""
    targets: list[Target] = []
    responses: tuple[Path, Path] | None = None
    monitoring = out / "monitoring.pbtxt"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    for backend in backends:
        for mode in batching_modes:
            server = stack.enter_context(
                _server(bases[backend], backend, batching_files[mode], monitoring)
            )
            pid = server.proc.pid
            metrics = "" if mode == "off" else server.rest_target or ""
            name = f"{backend} batching={mode}"
            targets.append(Target(name, "grpc", server.grpc_target, "grpc floor", pid, metrics))
            if mode == "off":
                responses = responses or _responses(server, out)
                rest = f"127.0.0.1:{server.rest_port}"
                targets.append(Target(f"{backend} REST", "rest", rest, "http floor", pid))
    if "onnx" in backends:
        single = out / "onnx-intra1" / MODEL_NAME
        shutil.copytree(bases["onnx"], single)
        config = single / "config.pbtxt"
        config.write_text(config.read_text() + SINGLE_THREAD_PARAMETER)
        server = stack.enter_context(_server(single, "onnx", None, monitoring))
        targets.append(
            Target("onnx intra_op=1", "grpc", server.grpc_target, "grpc floor", server.proc.pid)
        )
    assert responses is not None, "batching_modes must include 'off'"
    grpc_file, rest_file = responses
    floors = [("http floor", "http", rest_file), ("grpc.aio floor", "grpc-aio", grpc_file)]
    floors.append(("grpc floor", "grpc", grpc_file))
    for name, kind, response in floors:
        address, pid = stack.enter_context(_floor(kind, response))
        targets.insert(0, Target(name, "rest" if kind == "http" else "grpc", address, "", pid))
    return targets


def run(
    params: int = SERVING_PARAMS,
    clients: Sequence[int] = CLIENTS,
    backends: Sequence[str] = ("tensorflow", "onnx"),
    batching_modes: Sequence[str] = ("off", "default", "tuned"),
    duration_s: float = 3.0,
    rounds: int = 2,
    quick: bool = False,
    client_processes: int = CLIENT_PROCESSES,
    results_dir: Path = common.RESULTS_DIR,
) -> dict[str, Any]:
    """Every target at every client count, interleaved round by round; write serving.json."""
    from exporter import export_model

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    model = common.build_mlp(params)
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp, ExitStack() as stack:
        out = Path(tmp)
        export_model(model, out / "repo", MODEL_NAME)
        bases = {
            "tensorflow": out / "repo" / "tfserving" / MODEL_NAME,
            "onnx": out / "repo" / "onnx" / MODEL_NAME,
        }
        tuned = out / "batching.pbtxt"
        tuned.write_text(TUNED_BATCHING)
        batching_files = {"off": None, "default": out / "default", "tuned": tuned}
        baseline = {b: in_process(bases[b], b, quick) for b in backends}
        for backend, stats in baseline.items():
            print(
                f"  in-process {backend:10s} batch 1: p50 {stats['median_ms']:.3f} ms"
                f" (CPU {stats['cpu_ms']:.3f} ms); after 1 ms idle: p50"
                f" {stats['idle_gap_median_ms']:.3f} ms (CPU {stats['idle_gap_cpu_ms']:.3f} ms)",
                flush=True,
            )
        targets = _targets(stack, bases, backends, batching_modes, batching_files, out)
        pool = ClientPool(client_processes)
        stack.callback(pool.close)
        for n in clients:
            for r in range(rounds):
                for target in targets[r % len(targets) :] + targets[: r % len(targets)]:
                    samples.setdefault((target.name, n), []).append(
                        pool.measure(target, n, duration_s)
                    )
            for target in targets:
                _print_point(target.name, n, _point(samples[(target.name, n)], duration_s))
    rows = [
        {
            "target": t.name,
            "protocol": t.protocol,
            "floor": t.floor,
            "clients": n,
            **_point(samples[(t.name, n)], duration_s),
        }
        for t in targets
        for n in clients
    ]
    payload = {
        "benchmark": "serving",
        "params": int(model.count_params()),
        "tuned_batching_parameters": TUNED_BATCHING,
        "duration_s": duration_s,
        "rounds": rounds,
        "client_processes": client_processes,
        "cores": os.cpu_count(),
        "in_process_batch1": baseline,
        "rows": rows,
        "derived": derive(rows, baseline),
    }
    common.write_result("serving", payload, results_dir)
    return payload


def _print_point(name: str, clients: int, point: dict[str, Any]) -> None:
    cpu = point["server_cpu_ms_per_request"]
    errors = f" ERRORS {point['errors']}: {point['first_error']}" if point["errors"] else ""
    batch = f" mean batch {point['mean_batch_size']:.2f}" if "mean_batch_size" in point else ""
    print(
        f"  {name:24s} clients={clients:2d}: {point['requests_per_s']:8.1f} req/s"
        f" p50 {point.get('median_ms', 0):7.3f} ms p99 {point.get('p99_ms', 0):7.3f} ms"
        f" server CPU/req {cpu or 0:.3f} ms{batch}{errors}",
        flush=True,
    )


def find(rows: Sequence[dict[str, Any]], target: str, clients: int) -> dict[str, Any] | None:
    """The row of one target at one client count."""
    return next((r for r in rows if r["target"] == target and r["clients"] == clients), None)


def derive(rows: Sequence[dict[str, Any]], baseline: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Every row's req/s over its floor's at the same client count, and the single-client p50
    over (floor p50 + in-process run p50)."""
    ratios: dict[str, dict[int, float]] = {}
    for row in rows:
        floor = find(rows, row["floor"], row["clients"]) if row["floor"] else None
        if floor and floor["requests_per_s"]:
            ratios.setdefault(row["target"], {})[row["clients"]] = (
                row["requests_per_s"] / floor["requests_per_s"]
            )
    p50: dict[str, float] = {}
    floor_one = find(rows, "grpc floor", 1)
    for backend, stats in baseline.items():
        one = find(rows, f"{backend} batching=off", 1)
        if one and floor_one and "median_ms" in one:
            p50[backend] = one["median_ms"] / (floor_one["median_ms"] + stats["median_ms"])
    return {"rps_over_floor": ratios, "p50_1_client_over_floor_plus_run": p50}


def ratio(payload: dict[str, Any], target: str, clients: int) -> float | None:
    """req/s of `target` over its floor's at `clients` (keys are strings once read from JSON)."""
    per = payload["derived"]["rps_over_floor"].get(target, {})
    return per.get(clients, per.get(str(clients)))


def table(payload: dict[str, Any]) -> str:
    """The whole result as Markdown: req/s, p50, p99 and the ratio to the floor per client
    count, and the serving process's CPU per request at the middle client count."""
    rows = payload["rows"]
    clients = sorted({r["clients"] for r in rows})
    mid = clients[len(clients) // 2]
    head = "| server | " + " | ".join(f"{n} cl. req/s | p50 ms | p99 ms | / floor" for n in clients)
    lines = [
        f"{head} | CPU ms/req at {mid} | mean batch at {mid} |",
        "|---|" + "---:|---:|---:|---:|" * len(clients) + "---:|---:|",
    ]
    for name in dict.fromkeys(r["target"] for r in rows):
        cells = []
        for n in clients:
            r = find(rows, name, n) or {}
            value = ratio(payload, name, n)
            cells += [
                f"{r.get('requests_per_s', 0):,.0f}",
                f"{r.get('median_ms', 0):.2f}",
                f"{r.get('p99_ms', 0):.2f}",
                "floor" if not r.get("floor") else "n/a" if value is None else f"{value:.2f}",
            ]
        cpu = (find(rows, name, mid) or {}).get("server_cpu_ms_per_request")
        cells.append("n/a" if cpu is None else f"{cpu:.2f}")
        batch = (find(rows, name, mid) or {}).get("mean_batch_size")
        cells.append("" if batch is None else f"{batch:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
