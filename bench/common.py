"""Shared pieces of every benchmark: the MLP under test, timing statistics, machine info,
fresh-subprocess workers and result files.

Every benchmark builds the same kind of model (dense MLP with trained `Scale`/`Offset`
scalars between the layers) so that export, latency and serving numbers describe one thing.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
INPUT_DIM = 64
DEPTH = 3  # hidden Dense layers
PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "grpcio")


def hidden_width(params: int) -> int:
    """Hidden width w so that the MLP (64 -> w x DEPTH -> 1) has about `params` weights."""
    # params ~= INPUT_DIM*w + (DEPTH-1)*w^2 + w (+ biases, ignored).
    a, b = DEPTH - 1, INPUT_DIM + 1 + DEPTH
    return max(4, round((-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)))


def build_mlp(params: int, *, train_steps: int = 2, seed: int = 0) -> Any:
    """A functional MLP of about `params` parameters whose scalars were moved by training.

    `train_steps=0` keeps the random initialisation (the >2 GB growth model is not trained:
    the optimizer state would triple its memory).
    """
    import keras
    import numpy as np

    from exporter.model.layers import Offset, Scale

    keras.utils.set_random_seed(seed)
    width = hidden_width(params)
    inputs = keras.Input((INPUT_DIM,), name="features")
    x = inputs
    for i in range(DEPTH):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
        x = Scale(1.0, name=f"scale_{i}")(x)
    x = keras.layers.Dense(1, name="head")(x)
    outputs = Offset(0.0, name="offset")(x)
    model = keras.Model(inputs, outputs, name="mlp")
    if not train_steps:
        model(np.zeros((1, INPUT_DIM), "float32"))  # Keras' exporters refuse never-called models
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        rng = np.random.default_rng(seed)
        x_train = rng.standard_normal((32 * train_steps, INPUT_DIM)).astype("float32")
        y_train = rng.standard_normal((32 * train_steps, 1)).astype("float32")
        model.fit(x_train, y_train, batch_size=32, epochs=1, verbose=0)
    return model


def weights_bytes(model: Any) -> int:
    """Bytes of every weight of `model` (what a frozen graph must carry)."""
    return int(sum(w.numpy().nbytes for w in model.weights))


def inputs_for(batch: int, seed: int = 0) -> Any:
    """A float32 (batch, INPUT_DIM) input for the benchmark MLP."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal((batch, INPUT_DIM)).astype("float32")


def stats_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Median, p99, mean and min of durations in seconds, reported in milliseconds."""
    ordered = sorted(samples_s)
    p99_index = min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[p99_index] * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "min_ms": ordered[0] * 1e3,
    }


def time_calls(
    call: Callable[[], Any], *, warmup: int, repeats: int, budget_s: float = 10.0
) -> dict[str, float]:
    """Warm `call` up, then time it `repeats` times (stopping early past `budget_s`)."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
        if start > deadline:
            break
    return stats_ms(samples)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare these numbers with their own machine."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import psutil

        ram = psutil.virtual_memory().total
    except ImportError:
        ram = None
    return {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "ram_bytes": ram,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def write_result(name: str, payload: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Write `results_dir/name.json` (with machine info) atomically; return its path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine_info(), **payload}, indent=2, default=float))
    tmp.replace(path)
    return path


def bench_env() -> dict[str, str]:
    """Environment for worker subprocesses: quiet TF, this checkout importable."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_worker(
    module: str, args: Sequence[str], timeout_s: float, rss_cap_bytes: int | None = None
) -> dict[str, Any]:
    """Run `python -m module args` in a fresh interpreter; parse the JSON on its last line.

    Fresh processes keep TF's import, graph caches and allocator high-water marks of one
    measurement out of the next. A child whose RSS passes `rss_cap_bytes` is killed and
    reported as such, so a runaway export cannot push the machine into the OOM killer.
    """
    import psutil

    cap = rss_cap_bytes or int(psutil.virtual_memory().total * 0.7)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=err,
            text=True,
            env=bench_env(),
            cwd=REPO_ROOT,
        )
        ps = psutil.Process(proc.pid)
        deadline = time.monotonic() + timeout_s
        peak, killed = 0, ""
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            if peak > cap:
                killed = f"killed: RSS {peak / 2**30:.1f} GiB passed the {cap / 2**30:.1f} GiB cap"
            elif time.monotonic() > deadline:
                killed = f"killed: still running after {timeout_s:.0f} s"
            if killed:
                proc.kill()
                break
            time.sleep(0.05)
        proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if killed:
        return {"error": killed, "observed_peak_rss_bytes": peak}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(stderr.splitlines()[-15:])
        return {"error": f"exit {proc.returncode}: {tail}", "observed_peak_rss_bytes": peak}
    return json.loads(lines[-1])


def rss_bytes() -> int:
    """Current resident set size of this process."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """High-water RSS of this process so far (ru_maxrss is in KiB on Linux)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) against log(x): 1.0 means cost grows linearly."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pairs) < 2:
        return None
    mx = statistics.fmean(p[0] for p in pairs)
    my = statistics.fmean(p[1] for p in pairs)
    den = sum((p[0] - mx) ** 2 for p in pairs)
    return sum((p[0] - mx) * (p[1] - my) for p in pairs) / den if den else None


class RssSampler:
    """Max RSS of this process over a `with` block, sampled every `interval_s` in a thread.

    ru_maxrss alone cannot isolate one phase (it keeps the high-water mark of model loading);
    sampling catches the phase's own peak, to within the sampling interval.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        import threading

        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


STACK_LAYERS = 14  # Dense(w, w) layers of the large-model stack
STACK_TOKENS = 8  # ids per example; Embedding(w, w // 8) -> Flatten gives width w


def stack_width(params: int) -> int:
    """Width w so that the stack (Embedding w x w/8, STACK_LAYERS x Dense w x w) has ~`params`."""
    per_w2 = STACK_LAYERS + 1 / STACK_TOKENS
    return max(64, round(math.sqrt(params / per_w2) / 64) * 64)


def build_stack(params: int, *, seed: int = 0) -> Any:
    """Embedding + a stack of large Dense layers (~`params`), a trained-looking scalar after each.

    Untrained (an optimizer would triple memory at 1B parameters): the scalars get distinct
    non-default values instead, so the export must carry each one's exact bits.
    """
    import keras
    import numpy as np

    from exporter.model.layers import Offset, Scale

    keras.utils.set_random_seed(seed)
    width = stack_width(params)
    ids = keras.Input((STACK_TOKENS,), dtype="int32", name="ids")
    x = keras.layers.Embedding(width, width // STACK_TOKENS, name="embedding")(ids)
    x = keras.layers.Flatten(name="flatten")(x)
    for i in range(STACK_LAYERS):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
        x = Scale(1.0 / math.sqrt(2.0), name=f"scale_{i}")(x)
    outputs = Offset(0.125, name="offset")(keras.layers.Dense(1, name="head")(x))
    model = keras.Model(ids, outputs, name="stack")
    model(np.zeros((1, STACK_TOKENS), "int32"))  # Keras' exporters refuse never-called models
    return model
