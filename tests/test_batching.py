"""Server-side batching: parameters file, merge/split/padding semantics, and merged Session runs
over real gRPC with per-request errors kept per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.batching import (
    BatchingParameters,
    BatchingServable,
    BatchScheduler,
    parse_batching_parameters,
)
from serving.errors import ServingError, UsageError
from serving.servable import Servable
from tests.serving_helpers import build_frozen, predict_request, publish, rpc_error, running

INVALID = grpc.StatusCode.INVALID_ARGUMENT


class Doubler(Servable):
    """A pure-numpy Servable that records the batch sizes it was run with."""

    def __init__(self, rows_out: int | None = None) -> None:
        super().__init__("doubler", 1, "")
        self.batches: list[int] = []
        self._rows_out = rows_out
        self._lock = threading.Lock()

    def run(
        self,
        signature_key: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self._lock:
            self.batches.append(len(x))
        self._count_run()
        y = x * 2 if self._rows_out is None else np.zeros((self._rows_out, 1), x.dtype)
        return {"y": y}


def _concurrently(calls: int, fn: object) -> list[object]:
    """Runs fn(i) for i in range(calls) at once; returns results or raised ServingErrors."""

    def guarded(i: int) -> object:
        try:
            return fn(i)  # type: ignore[operator]
        except ServingError as e:
            return e

    with ThreadPoolExecutor(max_workers=calls) as pool:
        return list(pool.map(guarded, range(calls)))


# --- parameters ----------------------------------------------------------------------------


def test_parse_batching_parameters() -> None:
    params = parse_batching_parameters(
        """
        max_batch_size { value: 8 }
        batch_timeout_micros { value: 1000 }
        num_batch_threads { value: 2 }
        max_enqueued_batches { value: 3 }
        allowed_batch_sizes: 4
        allowed_batch_sizes: 8
        thread_pool_name { value: "pool" }
        """
    )
    assert params == BatchingParameters(8, 1000, 2, 3, (4, 8), "pool")
    defaults = parse_batching_parameters("")
    assert (defaults.max_batch_size, defaults.batch_timeout_micros) == (1000, 0)
    assert defaults.max_enqueued_batches == 10 and defaults.num_batch_threads >= 1


def test_bad_batching_parameters() -> None:
    with pytest.raises(UsageError, match="Last entry in allowed_batch_sizes must match"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    with pytest.raises(UsageError, match="monotonically increasing"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: [8, 4, 8]")
    with pytest.raises(UsageError, match="Error parsing text-format"):
        parse_batching_parameters("max_batch_size: oops")


# --- scheduler semantics -------------------------------------------------------------------


@pytest.fixture
def scheduler() -> Iterator[BatchScheduler]:
    params = BatchingParameters(
        max_batch_size=8,
        batch_timeout_micros=300_000,
        num_batch_threads=1,
        allowed_batch_sizes=(4, 8),
    )
    sched = BatchScheduler(params)
    yield sched
    sched.stop()


def test_merges_pads_to_allowed_size_and_splits(scheduler: BatchScheduler) -> None:
    doubler = Doubler()
    results = _concurrently(
        3, lambda i: scheduler.submit(doubler, "sig", {"x": np.full((1, 2), i, np.float32)}, ["y"])
    )
    assert doubler.batches == [4]  # 3 rows merged into one run, padded to the allowed size 4
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 2), 2 * i, np.float32))


def test_full_batch_runs_without_waiting_for_timeout() -> None:
    """A batch closes when it is full (shared_batch_scheduler.h): four 2-row tasks make one run of
    8 rows, although the timeout (an hour) would hold an unfilled batch far past the test."""
    sched = BatchScheduler(
        BatchingParameters(
            max_batch_size=8, batch_timeout_micros=3_600_000_000, num_batch_threads=1
        )
    )
    doubler = Doubler()
    try:
        results = _concurrently(
            4, lambda i: sched.submit(doubler, "sig", {"x": np.full((2, 1), i, np.float32)}, ["y"])
        )
    finally:
        sched.stop()
    assert doubler.batches == [8]  # one Session run, eight rows
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((2, 1), 2 * i, np.float32))


def test_zero_timeout_runs_what_is_queued_at_once() -> None:
    """batch_timeout_micros 0: a lone task is run at once, alone, not held for company."""
    sched = BatchScheduler(
        BatchingParameters(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1)
    )
    doubler = Doubler()
    try:
        out = sched.submit(doubler, "sig", {"x": np.ones((3, 1), np.float32)}, ["y"])
    finally:
        sched.stop()
    assert doubler.batches == [3]  # one run of exactly the queued rows
    np.testing.assert_array_equal(out["y"], np.full((3, 1), 2.0, np.float32))


def test_task_errors(scheduler: BatchScheduler) -> None:
    doubler = Doubler()
    cases = {
        "Task size 9 is larger than maximum input batch size 8": {"x": np.zeros((9, 1))},
        "Batching Run() input tensors must have at least one dimension": {"x": np.float32(1)},
        "Batching Run() input tensors must have equal 0th-dimension size": {
            "x": np.zeros((2, 1)),
            "z": np.zeros((3, 1)),
        },
    }
    for message, inputs in cases.items():
        with pytest.raises(ServingError) as info:
            scheduler.submit(doubler, "sig", inputs, ["y"])
        assert (info.value.code, info.value.message) == (INVALID, message)
    assert doubler.batches == []


def test_bad_batched_output_fails_every_task_of_the_batch(scheduler: BatchScheduler) -> None:
    broken = Doubler(rows_out=1)
    results = _concurrently(
        2, lambda i: scheduler.submit(broken, "sig", {"x": np.zeros((1, 1), np.float32)}, ["y"])
    )
    assert all(isinstance(r, ServingError) for r in results)
    assert results[0].message.startswith("Batched output tensor's 0th dimension does not equal")


def test_batching_servable_keeps_the_servable_interface(scheduler: BatchScheduler) -> None:
    doubler = Doubler()
    wrapped = BatchingServable(doubler, scheduler)
    assert (wrapped.name, wrapped.version, wrapped.signature_defs) == ("doubler", 1, {})
    out = wrapped.run("sig", {"x": np.ones((1, 1), np.float32)}, ["y"])
    np.testing.assert_array_equal(out["y"], [[2.0]])
    assert (wrapped.run_count, doubler.run_count) == (1, 1)


# --- over gRPC with a real Session ---------------------------------------------------------


@pytest.fixture(scope="module")
def batched_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batched")
    source = build_frozen(root / "src", 0.0)
    base = root / "b"
    base.mkdir()
    publish(source, base, 1)
    (root / "batching.config").write_text(
        "max_batch_size { value: 16 }\n"
        "batch_timeout_micros { value: 20000 }\n"
        "num_batch_threads { value: 1 }\n"
        "max_enqueued_batches { value: 100 }\n"
    )
    return base


def test_concurrent_predicts_share_session_runs(batched_base: Path) -> None:
    flags = (
        f"--model_base_path={batched_base}",
        "--model_name=b",
        "--enable_batching",
        f"--batching_parameters_file={batched_base.parent / 'batching.config'}",
    )
    requests = 32
    with running(*flags) as client:

        def call(i: int) -> object:
            x = np.full((1, 3), i, np.float32)
            if i % 8 == 7:  # a wrong dtype: fails alone, never the batch it would have joined
                x = x.astype(np.float64)
            try:
                response = client.predict.Predict(predict_request("b", x), timeout=30)
            except grpc.RpcError as e:
                return (e.code(), e.details())
            return list(response.outputs["y"].float_val)

        with ThreadPoolExecutor(max_workers=requests) as pool:
            results = list(pool.map(call, range(requests)))
        for i, result in enumerate(results):
            if i % 8 == 7:
                assert result == (INVALID, "Expects arg[0] to be float but double is provided")
            else:
                assert result == [6.0 * i], (i, result)
        servable = client.server.core.servable("b")
        assert isinstance(servable, BatchingServable)
        assert servable.run_count == requests
        assert servable.inner.run_count < requests  # merged: fewer Session runs than requests

        too_big = predict_request("b", np.ones((17, 3), np.float32))
        assert rpc_error(client.predict.Predict, too_big) == (
            INVALID,
            "Task size 17 is larger than maximum input batch size 16",
        )


class Gate(Doubler):
    """A Doubler whose first run blocks until released, recording the thread of each run."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.first_running = threading.Event()
        self.release = threading.Event()

    def run(self, signature_key: str, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str],
            timeout_s: float | None = None) -> dict[str, np.ndarray]:  # fmt: skip
        self.threads.append(threading.current_thread().name)
        if len(self.threads) == 1:
            self.first_running.set()
            assert self.release.wait(timeout=60)
        return super().run(signature_key, inputs, output_keys, timeout_s)


def test_a_batch_runnable_at_once_runs_in_the_submitting_thread_within_the_thread_bound() -> None:
    """Timeout 0 and a free slot: the lone task runs at once in its caller's thread. While that
    run holds the only slot (num_batch_threads 1), later tasks queue and merge into one batch
    that a batch thread runs when the slot frees: never two runs at once."""
    sched = BatchScheduler(
        BatchingParameters(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1)
    )
    gate = Gate()
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="caller")
    try:
        first = pool.submit(sched.submit, gate, "sig", {"x": np.ones((1, 1), np.float32)}, ["y"])
        assert gate.first_running.wait(timeout=60)
        later = [
            pool.submit(sched.submit, gate, "sig", {"x": np.full((1, 1), i, np.float32)}, ["y"])
            for i in range(3)
        ]
        deadline = time.monotonic() + 60
        while sum(t.size for b in sched._open.values() for t in b.tasks) < 3:
            assert time.monotonic() < deadline, "the three tasks never queued"
            time.sleep(0.001)
        gate.release.set()
        np.testing.assert_array_equal(first.result(timeout=60)["y"], [[2.0]])
        for i, future in enumerate(later):
            np.testing.assert_array_equal(future.result(timeout=60)["y"], [[2.0 * i]])
    finally:
        gate.release.set()
        pool.shutdown()
        sched.stop()
    assert gate.batches == [1, 3]  # the queued three merged, run after the first
    assert gate.threads[0].startswith("caller") and gate.threads[1].startswith("batch-")
