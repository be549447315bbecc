"""Server-side batching (`--enable_batching`): concurrent runs of one servable, signature and
output set are merged along dimension 0 into one runtime call and split back, with the
semantics of TF's shared batch scheduler and `batching_session.cc`.

One job at ~410 lines: the parameters file, the scheduler and the batching servable are one
mirror of `shared_batch_scheduler.h` + `batching_session.cc`, whose limits and error texts a
client sees; split, the parameter defaults and the queue they bound would live apart."""

from __future__ import annotations

import bisect
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf import text_format

from serving import config_protos, metrics
from serving.errors import (
    ServingError,
    UsageError,
    check_deadline,
    deadline_exceeded,
    invalid_argument,
)
from serving.servable import Servable

BatchingParametersProto = config_protos.BatchingParameters
BATCHING_PARAMS_FILE = "batching_params.pbtxt"  # per version, with per-model batching


@dataclass(frozen=True)
class BatchingParameters:
    """Effective batching settings; defaults are TF's SharedBatchScheduler defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    allowed_batch_sizes: tuple[int, ...] = ()
    thread_pool_name: str = "batch_threads"

    def __post_init__(self) -> None:
        sizes = self.allowed_batch_sizes
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise UsageError("allowed_batch_sizes entries must be monotonically increasing")
        if sizes and sizes[-1] != self.max_batch_size:
            raise UsageError(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{sizes[-1]}; expected {self.max_batch_size}"
            )
        if (
            self.max_batch_size <= 0
            or self.num_batch_threads <= 0
            or self.max_enqueued_batches <= 0
        ):
            raise UsageError(
                "max_batch_size, num_batch_threads and max_enqueued_batches must be positive"
            )


def parse_batching_parameters(text: str) -> BatchingParameters:
    """Parses a text `BatchingParameters` file; unset fields keep the scheduler defaults."""
    proto = BatchingParametersProto()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        raise UsageError(
            f"Error parsing text-format tensorflow.serving.BatchingParameters: {e}"
        ) from e
    return from_proto(proto)


def load_batching_parameters(path: str) -> BatchingParameters:
    """A `batching_params.pbtxt` (or any BatchingParameters file), read as `ParseProtoTextFile`
    reads it: ServingError with TF's code and text when unreadable or malformed."""
    proto = config_protos.parse_text_file(path, BatchingParametersProto())
    try:
        return from_proto(proto)
    except UsageError as e:
        raise invalid_argument(f"{path}: {e}") from e


def from_proto(proto: BatchingParametersProto) -> BatchingParameters:
    """The effective settings of a `BatchingParameters` message (unset: scheduler defaults)."""
    values: dict[str, object] = {
        name: getattr(proto, name).value
        for name in (
            "max_batch_size",
            "batch_timeout_micros",
            "num_batch_threads",
            "max_enqueued_batches",
        )
        if proto.HasField(name)
    }
    values["allowed_batch_sizes"] = tuple(proto.allowed_batch_sizes)
    if proto.HasField("thread_pool_name"):
        values["thread_pool_name"] = proto.thread_pool_name.value
    return BatchingParameters(**values)  # type: ignore[arg-type]


class _Task:
    """One caller's run, waiting for its slice of a batch. The wait is a lock the caller
    already holds and blocks on a second time (released by the worker): the cheapest
    one-shot wakeup CPython has, half the lock traffic of a threading.Event."""

    __slots__ = ("_done", "deadline", "error", "inputs", "outputs", "queued_at", "size")

    def __init__(
        self, inputs: Mapping[str, np.ndarray], size: int, deadline: float | None = None
    ) -> None:
        self.inputs = inputs
        self.size = size
        self.deadline = deadline  # time.monotonic() past which the caller has given up
        self.outputs: dict[str, np.ndarray] = {}
        self.error: ServingError | None = None
        self.queued_at = time.monotonic()
        self._done = threading.Lock()
        self._done.acquire()

    def finish(self) -> None:
        """Wakes the caller (outputs or error are set)."""
        self._done.release()

    def wait(self) -> None:
        """Blocks until `finish`."""
        self._done.acquire()


@dataclass
class _Batch:
    key: tuple
    servable: Servable
    signature_key: str
    output_keys: tuple[str, ...]
    deadline: float
    params: BatchingParameters
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0


def _task_size(inputs: Mapping[str, np.ndarray]) -> int:
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop() if sizes else 0


def _drop_expired(batch: _Batch) -> None:
    """Answers DEADLINE_EXCEEDED to tasks whose callers gave up while queued."""
    now = time.monotonic()
    live = []
    for task in batch.tasks:
        if task.deadline is not None and task.deadline <= now:
            task.error = deadline_exceeded()
            task.finish()
        else:
            live.append(task)
    batch.tasks = live
    batch.size = sum(t.size for t in live)


class BatchScheduler:
    """A shared scheduler: one queue per (servable, signature, outputs, input layout), at most
    `num_batch_threads` batches running at once; a batch closes when full or
    `batch_timeout_micros` after it opened, and is padded with copies of its first row up to the
    next allowed batch size.

    A batch that may run at once (full, or `batch_timeout_micros: 0`) while a run slot is free
    and no older batch waits is run by the thread that submitted its last task, as the scheduler
    thread TF would wake for it would run it at once: the batch is the same, and a Python thread
    handoff each way (0.2-0.4 ms of server CPU under load, docs/performance.md) is saved. Batches
    that wait (for company, or for a slot) are run by the `num_batch_threads` workers."""

    def __init__(self, params: BatchingParameters) -> None:
        self.params = params
        self._cond = threading.Condition()
        self._open: dict[tuple, _Batch] = {}
        self._ready: deque[_Batch] = deque()
        self._queued: dict[tuple, int] = {}  # closed batches waiting, per queue
        self._idle = 0  # workers waiting on the condition
        self._running = 0  # batches running, by workers or by submitting threads
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        servable: Servable,
        signature_key: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
        timeout_s: float | None = None,
        queue: BatchingParameters | None = None,
    ) -> dict[str, np.ndarray]:
        """Queues one run and blocks until its batch has run; errors stay with their batch.
        A task whose deadline passes while it waits is dropped from its batch, not run.
        `queue` is the model's own queue settings (`--enable_per_model_batching_parameters`);
        the worker threads are always the shared ones."""
        check_deadline(timeout_s)
        params = queue or self.params
        size = _task_size(inputs)
        if size > params.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {params.max_batch_size}"
            )
        layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        key = (id(servable), signature_key, tuple(output_keys), layout)
        task = _Task(inputs, size, None if timeout_s is None else time.monotonic() + timeout_s)
        with self._cond:
            if self._stopped:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "Batch scheduler is shutting down")
            batch = self._open.get(key)
            # A worker is woken only when there is something new for it: a batch closed, or
            # one opened (whose timeout may come before the one it waits for).
            wake = batch is None
            if batch is not None and batch.size + size > params.max_batch_size:
                self._close(batch)
                batch, wake = None, True
            if batch is None:
                queued = self._queued.get(key, 0)
                if queued + 1 > params.max_enqueued_batches:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                deadline = time.monotonic() + params.batch_timeout_micros / 1e6
                batch = _Batch(key, servable, signature_key, tuple(output_keys), deadline, params)
                self._open[key] = batch
            batch.tasks.append(task)
            batch.size += size
            if batch.size >= params.max_batch_size:
                self._close(batch)
                wake = True
            slot_free = self._running < self.params.num_batch_threads
            if slot_free and not self._ready and params.batch_timeout_micros == 0:
                self._close(batch)  # schedulable at once: this thread takes it now
            run_here = slot_free and bool(self._ready) and self._ready[0] is batch
            if run_here:
                self._take()
                self._running += 1
            elif wake and self._idle:
                self._cond.notify()
        if run_here:
            self._run_batch(batch)
        else:
            task.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def stop(self) -> None:
        """Runs what is queued, then ends the workers."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    def _close(self, batch: _Batch) -> None:
        del self._open[batch.key]
        self._ready.append(batch)
        self._queued[batch.key] = self._queued.get(batch.key, 0) + 1

    def _take(self) -> _Batch:
        batch = self._ready.popleft()
        left = self._queued[batch.key] - 1
        if left:
            self._queued[batch.key] = left
        else:
            del self._queued[batch.key]
        return batch

    def _next_batch(self) -> _Batch | None:
        """The next batch to run: a closed one, else the open batch whose timeout expired
        first (`batch_timeout_micros: 0`: any non-empty open batch at once). An idle worker
        waits for the earliest timeout or a new task; a worker that takes a batch while more
        work is waiting wakes the next one, so `num_batch_threads` batches run side by side."""
        with self._cond:
            while True:
                if self._running >= self.params.num_batch_threads and not self._stopped:
                    self._idle += 1
                    self._cond.wait()  # a run slot frees: `_run_batch` notifies
                    self._idle -= 1
                    continue
                if not self._ready:
                    now = time.monotonic()
                    earliest = min(self._open.values(), key=lambda b: b.deadline, default=None)
                    if earliest is not None and (earliest.deadline <= now or self._stopped):
                        self._close(earliest)
                    elif earliest is None and self._stopped:
                        self._cond.notify_all()
                        return None
                    else:
                        self._idle += 1
                        self._cond.wait(None if earliest is None else earliest.deadline - now)
                        self._idle -= 1
                        continue
                batch = self._take()
                self._running += 1
                if self._idle and (self._ready or self._open):
                    self._cond.notify()
                return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run_batch(batch)

    def _run_batch(self, batch: _Batch) -> None:
        """Runs a taken batch and hands each task its rows or the error; frees the run slot."""
        try:
            _drop_expired(batch)
            if not batch.tasks:
                return
            try:
                outputs = self._run(batch)
            except Exception as e:  # every task gets an answer, whatever the runtime raised
                error = (
                    e
                    if isinstance(e, ServingError)
                    else ServingError(grpc.StatusCode.INTERNAL, f"batched run failed: {e}")
                )
                for task in batch.tasks:
                    task.error = error
                    task.finish()
                return
            offset = 0
            for task in batch.tasks:
                task.outputs = {k: v[offset : offset + task.size] for k, v in outputs.items()}
                offset += task.size
                task.finish()
        finally:
            with self._cond:
                self._running -= 1
                if self._idle and (self._ready or self._open or self._stopped):
                    self._cond.notify()

    @staticmethod
    def _padded_size(size: int, params: BatchingParameters) -> int:
        sizes = params.allowed_batch_sizes
        if not sizes:
            return size
        return sizes[bisect.bisect_left(sizes, size)]

    def _run(self, batch: _Batch) -> dict[str, np.ndarray]:
        padded = self._padded_size(batch.size, batch.params)
        now = time.monotonic()
        metrics.record_batch(
            self.params.thread_pool_name,
            [(now - t.queued_at, t.size) for t in batch.tasks],
            batch.size,
            padded,
        )
        tasks = batch.tasks
        if len(tasks) == 1 and padded == batch.size:
            merged = dict(tasks[0].inputs)
        else:
            merged = {}
            for alias in tasks[0].inputs:
                parts = [t.inputs[alias] for t in tasks]
                if padded > batch.size:
                    parts.append(np.repeat(parts[0][:1], padded - batch.size, axis=0))
                merged[alias] = np.concatenate(parts)
        outputs = batch.servable.run(batch.signature_key, merged, batch.output_keys)
        for array in outputs.values():
            if array.ndim == 0 or array.shape[0] != padded:
                raise invalid_argument(
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                    "dimension sizes of the input tensors"
                )
        return outputs


class BatchingServable(Servable):
    """A Servable whose runs go through the shared scheduler; `inner` is the real runtime."""

    def __init__(
        self,
        inner: Servable,
        scheduler: BatchScheduler,
        queue: BatchingParameters | None = None,
    ) -> None:
        super().__init__(inner.name, inner.version, inner.path)
        self.inner = inner
        self.signature_defs = inner.signature_defs
        self.model_config = inner.model_config
        self._scheduler = scheduler
        self._queue = queue

    def run(
        self,
        signature_key: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Counts the request, then waits for its slice of a merged run."""
        self._count_run()
        return self._scheduler.submit(
            self.inner, signature_key, inputs, output_keys, timeout_s, queue=self._queue
        )
