"""Benchmark 3: the embedded server under closed-loop load, gRPC and REST, TF and ONNX backends.

For each backend and batching setting a fresh `python -m serving` subprocess serves this
project's export of the benchmark MLP; 1, 4, 8 and 16 client threads (one channel or HTTP
connection each) send batch-1 Predict requests back to back for a fixed time. The in-process
`Servable.run` of the same backend is timed first: gRPC p50 / in-process p50 is the server's
own overhead. Clients and server share this machine's cores, as they would on one host.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common
from serving.launch import start_server_process

CLIENTS = (1, 4, 8, 16)
BACKENDS = ("tensorflow", "onnx")
PROTOCOLS = ("grpc", "rest")
MODEL_NAME = "mlp"
STARTUP_TIMEOUT_S = 120.0
# TF Serving's CPU advice: no added wait (batches form while the runtime is busy), one batch
# thread per core, a queue deep enough for every client.
BATCHING_PARAMETERS = """\
max_batch_size { value: 64 }
batch_timeout_micros { value: 0 }
num_batch_threads { value: 2 }
max_enqueued_batches { value: 64 }
"""


@dataclass(frozen=True)
class Endpoints:
    """A running embedded server's ports."""

    grpc_target: str
    rest_port: int


@contextmanager
def embedded_server(
    base_path: Path, backend: str, batching_file: Path | None
) -> Iterator[Endpoints]:
    """Start `python -m serving` on free ports (serving.launch), stop it after."""
    flags = [
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={base_path.resolve()}",
        f"--backend={backend}",
        "--file_system_poll_wait_seconds=0",
    ]
    if batching_file is not None:
        flags += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    server = start_server_process(
        flags, timeout_s=STARTUP_TIMEOUT_S, env=common.bench_env(), cwd=common.REPO_ROOT
    )
    try:
        yield Endpoints(server.grpc_target, server.rest_port)
    finally:
        server.stop()


def _grpc_caller(target: str, batch: Any) -> tuple[Callable[[], Any], Callable[[], None]]:
    """One channel; the request is built once so the client measures the server, not protobuf."""
    from serving.client import ServingClient, make_ndarray

    client = ServingClient(target)
    request = client.predict_request({"features": batch}, MODEL_NAME)

    def call() -> Any:
        response = client.predict_raw(request)
        return {k: make_ndarray(v) for k, v in response.outputs.items()}

    return call, client.close


def _rest_caller(port: int, batch: Any) -> tuple[Callable[[], Any], Callable[[], None]]:
    """One keep-alive HTTP/1.1 connection posting the row-format body TF Serving documents."""
    body = json.dumps({"instances": batch.tolist()}).encode()
    path = f"/v1/models/{MODEL_NAME}:predict"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call() -> Any:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST {response.status}: {data[:200]!r}")
        return json.loads(data)

    return call, conn.close


def closed_loop(
    make_caller: Callable[[], tuple[Callable[[], Any], Callable[[], None]]],
    clients: int,
    duration_s: float,
    warmup: int = 5,
) -> dict[str, float]:
    """`clients` threads calling back to back for `duration_s`: latency stats and requests/s."""
    callers = [make_caller() for _ in range(clients)]
    for call, _ in callers:
        for _ in range(warmup):
            call()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        call = callers[i][0]
        start_gate.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at[0]:
                return
            try:
                call()
            except (RuntimeError, OSError) as err:
                errors.append(str(err))
                return
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + duration_s
    start_gate.wait()
    for t in threads:
        t.join(timeout=duration_s + 60)
    elapsed = time.perf_counter() - began
    for _, close in callers:
        close()
    flat = [x for per in latencies for x in per]
    stats = common.stats_ms(flat) if flat else {"n": 0}
    return {
        **stats,
        "clients": clients,
        "duration_s": elapsed,
        "requests_per_s": len(flat) / elapsed,
        "errors": len(errors),
    }


def in_process(base: Path, backend: str, quick: bool) -> dict[str, float]:
    """Batch-1 latency of the servable the server would build, called directly."""
    if backend == "onnx":
        from serving.onnx_servable import OnnxServable

        servable: Any = OnnxServable(MODEL_NAME, 1, str(base / "1"))
    else:
        from serving.servable import TFServable

        servable = TFServable(MODEL_NAME, 1, str(base / "1"))
    outputs = list(servable.signature_defs["serving_default"].outputs)
    x = common.inputs_for(1)
    return common.time_calls(
        lambda: servable.run("serving_default", {"features": x}, outputs),
        warmup=20,
        repeats=100 if quick else 1000,
        budget_s=5.0,
    )


def run(
    params: int = 3_000_000,
    clients: Sequence[int] = CLIENTS,
    backends: Sequence[str] = BACKENDS,
    protocols: Sequence[str] = PROTOCOLS,
    batching_modes: Sequence[bool] = (False, True),
    duration_s: float = 2.5,
    quick: bool = False,
    results_dir: Path = common.RESULTS_DIR,
) -> dict[str, Any]:
    """All (backend, batching, protocol, clients) points; write serving.json."""
    from exporter import export_model

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    model = common.build_mlp(params)
    batch = common.inputs_for(1)
    rows: list[dict[str, Any]] = []
    baseline: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        out = Path(tmp)
        export_model(model, out / "repo", MODEL_NAME)
        bases = {
            "tensorflow": out / "repo" / "tfserving" / MODEL_NAME,
            "onnx": out / "repo" / "onnx" / MODEL_NAME,
        }
        batching_file = out / "batching.pbtxt"
        batching_file.write_text(BATCHING_PARAMETERS)
        for backend in backends:
            baseline[backend] = in_process(bases[backend], backend, quick)
            print(
                f"  in-process {backend:10s} batch 1: p50 {baseline[backend]['median_ms']:.3f} ms",
                flush=True,
            )
            for batching in batching_modes:
                with embedded_server(
                    bases[backend], backend, batching_file if batching else None
                ) as ends:
                    for protocol in protocols:
                        for n in clients:

                            def make(protocol: str = protocol) -> Any:
                                if protocol == "grpc":
                                    return _grpc_caller(ends.grpc_target, batch)
                                return _rest_caller(ends.rest_port, batch)

                            point = closed_loop(make, n, duration_s)
                            row = {
                                "backend": backend,
                                "batching": batching,
                                "protocol": protocol,
                                **point,
                            }
                            rows.append(row)
                            on = "on " if batching else "off"
                            print(
                                f"  serve {backend:10s} batching={on} {protocol:4s} clients={n:2d}:"
                                f" p50 {point.get('median_ms', 0):7.3f} ms"
                                f" p99 {point.get('p99_ms', 0):7.3f} ms"
                                f" {point['requests_per_s']:8.1f} req/s",
                                flush=True,
                            )
    payload = {
        "benchmark": "serving",
        "params": int(model.count_params()),
        "batching_parameters": BATCHING_PARAMETERS,
        "duration_s": duration_s,
        "cores": os.cpu_count(),
        "in_process_batch1": baseline,
        "rows": rows,
        "derived": derive(rows, baseline),
    }
    common.write_result("serving", payload, results_dir)
    return payload


def _find(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def derive(rows: Sequence[dict[str, Any]], baseline: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The ratios the targets are stated in, per backend."""
    derived: dict[str, Any] = {}
    for backend, base in baseline.items():
        one = _find(rows, backend=backend, batching=False, protocol="grpc", clients=1)
        one_b = _find(rows, backend=backend, batching=True, protocol="grpc", clients=1)
        eight_b = _find(rows, backend=backend, batching=True, protocol="grpc", clients=8)
        eight = _find(rows, backend=backend, batching=False, protocol="grpc", clients=8)
        rest_one = _find(rows, backend=backend, batching=False, protocol="rest", clients=1)
        derived[backend] = {
            "grpc_p50_over_in_process": one["median_ms"] / base["median_ms"] if one else None,
            "rest_p50_over_in_process": (
                rest_one["median_ms"] / base["median_ms"] if rest_one else None
            ),
            "rps_8_batching_over_1_unbatched": (
                eight_b["requests_per_s"] / one["requests_per_s"] if eight_b and one else None
            ),
            "rps_8_batching_over_1_batching": (
                eight_b["requests_per_s"] / one_b["requests_per_s"] if eight_b and one_b else None
            ),
            "rps_8_unbatched_over_1_unbatched": (
                eight["requests_per_s"] / one["requests_per_s"] if eight and one else None
            ),
        }
    return derived
