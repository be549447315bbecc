"""Bounded requests, right codes (issue 8, failures 3 and 4): every malformed request of
`tests.malformed` gets its expected code with a short message, and the server still answers a
valid request afterwards. Also: the REST connection cap (429) and expired deadlines.

One embedded server with small limits (64 KiB bodies, 1.5 s reads, 1 REST worker thread, so 4
connections) so the cases stay fast; it serves the session's test repository."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import rest
from serving.launch import ServerProcess, start_server_process
from tests import malformed
from tests.conftest import REPO_ROOT, wait_for

LIMIT = 64 * 1024
READ_TIMEOUT_S = 1.5
REST_THREADS = 1
MAX_CONNECTIONS = rest.CONNECTIONS_PER_THREAD * REST_THREADS


@pytest.fixture(scope="module")
def bounded(model_repo: Path) -> Iterator[ServerProcess]:
    server = start_server_process(
        [
            f"--model_config_file={model_repo / 'tfserving' / 'models.config'}",
            f"--rest_api_max_request_bytes={LIMIT}",
            f"--rest_api_timeout_in_ms={int(READ_TIMEOUT_S * 1000)}",
            f"--rest_api_num_threads={REST_THREADS}",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=REPO_ROOT,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stub(bounded: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(bounded.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


REST_CASES = malformed.rest_cases(LIMIT)
GRPC_CASES = malformed.grpc_cases()


def test_the_catalogue_has_at_least_40_cases() -> None:
    assert len(REST_CASES) + len(GRPC_CASES) >= 40


@pytest.mark.parametrize("case", REST_CASES, ids=[c.name for c in REST_CASES])
def test_malformed_rest_request(bounded: ServerProcess, case: malformed.RestCase) -> None:
    outcome = malformed.run_rest(bounded.rest_port, case, READ_TIMEOUT_S)
    assert outcome.got == case.expected, bounded.log_tail()
    assert outcome.short
    assert outcome.alive


@pytest.mark.parametrize("case", GRPC_CASES, ids=[c.name for c in GRPC_CASES])
def test_malformed_grpc_request(
    bounded: ServerProcess,
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    case: malformed.GrpcCase,
) -> None:
    outcome = malformed.run_grpc(stub, case)
    assert outcome.got == case.expected
    assert outcome.short
    assert outcome.alive


def test_slow_header_releases_its_thread(bounded: ServerProcess) -> None:
    """MAX_CONNECTIONS stalled headers: each is dropped after the read timeout, and then a new
    request is served (the threads came back)."""
    stalled = [
        socket.create_connection(("127.0.0.1", bounded.rest_port), timeout=30)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        for sock in stalled:
            sock.sendall(b"POST /v1/models/x:predict HTTP/1.1\r\nHo")
        for sock in stalled:
            assert sock.recv(1024) == b""  # closed by the server after READ_TIMEOUT_S
        assert malformed.rest_alive(bounded.rest_port)
    finally:
        for sock in stalled:
            sock.close()


def test_a_client_that_stops_reading_is_cut_and_holds_no_worker(bounded: ServerProcess) -> None:
    """Pipelined predicts from a client that never reads its replies: the reply write waits at
    most the timeout for progress (SO_SNDTIMEO), then the server closes the connection, and
    the blocked write never held the one REST worker: another client is served meanwhile."""
    values = ", ".join(["1.0"] * 2000)
    request = malformed.post(f'{{"instances": [{values}]}}'.encode()).replace(
        b"Connection: close\r\n", b""
    )
    with socket.create_connection(("127.0.0.1", bounded.rest_port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(0.5)
        deadline = time.monotonic() + 10 * READ_TIMEOUT_S + 20
        cut = served_meanwhile = False
        while not cut and time.monotonic() < deadline:
            try:
                sock.sendall(request)
            except TimeoutError:  # the server stopped reading: its write to us is blocked
                served_meanwhile = served_meanwhile or malformed.rest_alive(bounded.rest_port)
            except OSError:  # reset: the server closed the stalled connection
                cut = True
    assert cut, "the connection that never read was never closed"
    assert served_meanwhile, "no other request was served while the write was blocked"
    assert malformed.rest_alive(bounded.rest_port)


def _cpu_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    """Busy processes at normal priority: the machine is loaded while they run."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_a_dripped_header_is_cut_at_the_bound_under_load(bounded: ServerProcess) -> None:
    """A header sent one byte every 0.2 s never trips the per-read timeout (READ_TIMEOUT_S);
    the head deadline, counted from its first byte, closes it at READ_TIMEOUT_S even with every
    core busy. (TF Serving's libevent server has only per-read timeouts: README deviations.)"""
    head = b"POST /v1/models/x:predict HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"y" * 200
    hogs = _cpu_hogs(os.cpu_count() or 2)
    try:
        with socket.create_connection(("127.0.0.1", bounded.rest_port), timeout=10) as sock:
            first = time.monotonic()
            closed_at = None
            for byte in head:  # bounded: 200+ bytes x 0.2 s, far past the bound
                try:
                    sock.sendall(bytes([byte]))
                except OSError:  # reset after the close
                    closed_at = time.monotonic()
                    break
                ready, _, _ = select.select([sock], [], [], 0.2)
                if ready and sock.recv(1024) == b"":
                    closed_at = time.monotonic()
                    break
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)
    assert closed_at is not None, "the dripped header was never cut"
    assert READ_TIMEOUT_S - 0.05 <= closed_at - first < READ_TIMEOUT_S + 1.5
    assert malformed.rest_alive(bounded.rest_port)


def test_connections_past_the_cap_get_429(bounded: ServerProcess) -> None:
    held = [
        socket.create_connection(("127.0.0.1", bounded.rest_port), timeout=30)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        answer: dict[str, object] = {}

        def refused() -> bool:
            answer["code"], answer["body"] = malformed.exchange(
                bounded.rest_port, malformed.post(b'{"instances": [1.0]}'), timeout=30
            )
            return answer["code"] == 429

        wait_for(refused, "a connection past the cap to be answered 429", timeout=10)
        assert "rest_api_num_threads" in answer["body"]
    finally:
        for sock in held:
            sock.close()
    wait_for(
        lambda: malformed.rest_alive(bounded.rest_port),
        "REST to recover after the held connections",
        timeout=2 * READ_TIMEOUT_S + 10,
    )


def test_expired_grpc_deadline_is_not_run(model_repo: Path) -> None:
    """A run whose deadline already passed answers DEADLINE_EXCEEDED and never reaches the
    session (run_count stays put); a live one runs."""
    from serving.errors import ServingError
    from serving.servable import TFServable

    path = model_repo / "tfserving" / malformed.MODEL / "1"
    servable = TFServable(malformed.MODEL, 1, str(path))
    x = {"x": np.array([2.0], np.float32)}
    with pytest.raises(ServingError) as err:
        servable.run("serving_default", x, ["y"], timeout_s=-0.5)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servable.run_count == 0
    out = servable.run("serving_default", x, ["y"], timeout_s=10.0)
    assert out["y"].tolist() == [3.0] and servable.run_count == 1


def test_expired_task_is_dropped_from_its_batch(model_repo: Path) -> None:
    """A batched task whose caller gave up while queued is answered DEADLINE_EXCEEDED; the
    batch runs only the live ones."""
    from serving.batching import BatchingParameters, BatchScheduler
    from serving.errors import ServingError
    from serving.servable import TFServable

    path = model_repo / "tfserving" / malformed.MODEL / "1"
    inner = TFServable(malformed.MODEL, 1, str(path))
    scheduler = BatchScheduler(
        BatchingParameters(batch_timeout_micros=300_000, num_batch_threads=1)
    )
    try:
        with pytest.raises(ServingError) as err:
            scheduler.submit(
                inner, "serving_default", {"x": np.array([1.0], np.float32)}, ["y"], timeout_s=0.05
            )
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert inner.run_count == 0
        out = scheduler.submit(
            inner, "serving_default", {"x": np.array([2.0], np.float32)}, ["y"], timeout_s=10.0
        )
        assert out["y"].tolist() == [3.0] and inner.run_count == 1
    finally:
        scheduler.stop()


def test_grpc_sheds_load_past_its_queue(model_repo: Path) -> None:
    """With one gRPC thread, at most GRPC_QUEUE_FACTOR calls are admitted; a burst beyond that
    is answered RESOURCE_EXHAUSTED at once instead of piling up, and admitted calls succeed."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.server import GRPC_QUEUE_FACTOR, parse_args, start_server

    args = parse_args(
        [
            "--port=0",
            "--rest_api_port=0",
            "--grpc_max_threads=1",
            f"--model_name={malformed.MODEL}",
            f"--model_base_path={model_repo / 'tfserving' / malformed.MODEL}",
        ]
    )
    running = start_server(args)
    burst = 8 * GRPC_QUEUE_FACTOR
    x = np.ones(800_000, np.float32)  # calls overlap; responses stay under 4 MB
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            from tensorflow_serving.apis import predict_pb2

            from serving.client import make_tensor_proto

            request = predict_pb2.PredictRequest()
            request.model_spec.name = malformed.MODEL
            request.inputs["x"].CopyFrom(make_tensor_proto(x))

            def call(_: int) -> grpc.StatusCode:
                try:
                    stub.Predict(request, timeout=60)
                    return grpc.StatusCode.OK
                except grpc.RpcError as err:
                    return err.code()

            with ThreadPoolExecutor(burst) as pool:
                codes = list(pool.map(call, range(burst)))
    finally:
        running.stop(grace_s=0)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert 1 <= codes.count(grpc.StatusCode.OK) < burst
