"""TF Serving's metrics, as its Prometheus endpoint shows them (`--monitoring_config_file`).

The values live in prometheus_client Counters and Histograms (a private CollectorRegistry: thread
safe, labelled). The page is written the way `util/prometheus_exporter.cc` writes TF's
CollectionRegistry: metric names are TF's paths with every character outside `[a-zA-Z0-9_]`
turned into `:` (`/tensorflow/serving/request_count` -> `:tensorflow:serving:request_count`), one
`# TYPE` line per metric, counters as integers under their own name, histograms as cumulative
`_bucket{le=...}` lines ending in `+Inf`, then `_sum` and `_count`. prometheus_client's own
`generate_latest` cannot write that page: it renames every counter `<name>_total` and adds
`_created` series (`:tensorflow:serving:request_count_total`), which would break every
dashboard and alert written against TF Serving's names, so only its storage is used.

Metrics are process-wide, like TF's registry: every server in the process adds to them."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
CONTENT_TYPE = "text/plain"


def _exponential(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """`monitoring::Buckets::Exponential`: scale * growth**i for i < count (+Inf is implied)."""
    return tuple(scale * growth**i for i in range(count))


LATENCY_BUCKETS = _exponential(10, 1.8, 33)  # microseconds, ~20 minutes
EXAMPLE_BUCKETS = _exponential(1, 2, 15)
BATCH_SIZE_BUCKETS = _exponential(1, 2, 14)
QUEUING_BUCKETS = _exponential(100, 1.2, 52)


def prometheus_name(tf_name: str) -> str:
    """`GetPrometheusMetricName`: TF's metric path as a Prometheus metric name."""
    name = re.sub(r"[^a-zA-Z0-9_]", ":", tf_name)
    return "_" + name if name[:1].isdigit() else name


@dataclass(frozen=True)
class _Family:
    tf_name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None  # None: a counter


_FAMILIES = (
    _Family(
        "/tensorflow/serving/request_count",
        "The total number of requests.",
        ("model_name", "status"),
        None,
    ),
    _Family(
        "/tensorflow/serving/request_latency",
        "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
        ("model_name", "API", "entrypoint"),
        LATENCY_BUCKETS,
    ),
    _Family(
        "/tensorflow/serving/runtime_latency",
        "Distribution of wall time (in microseconds) for Tensorflow runtime.",
        ("model_name", "API", "runtime"),
        LATENCY_BUCKETS,
    ),
    _Family(
        "/tensorflow/serving/request_example_counts",
        "The number of tensorflow.Examples per request.",
        ("model",),
        EXAMPLE_BUCKETS,
    ),
    _Family(
        "/tensorflow/serving/request_example_count_total",
        "The total number of tensorflow.Examples.",
        ("model",),
        None,
    ),
    _Family(
        "/tensorflow/serving/model_warmup_latency",
        "Distribution of wall time (in microseconds) for warming up the model.",
        ("model_path", "status"),
        LATENCY_BUCKETS,
    ),
    _Family(
        "/tensorflow/serving/model_warmup_records_read",
        "Total number of warmup records read during model warmup.",
        ("model_path", "status"),
        None,
    ),
    _Family(
        "/tensorflow/cc/saved_model/load_attempt_count",
        "The number of times a SavedModel was successfully loaded.",
        ("model_path", "status"),
        None,
    ),
    _Family(
        "/tensorflow/cc/saved_model/load_latency",
        "Latency in microseconds for SavedModels that were successfully loaded.",
        ("model_path",),
        None,
    ),
    _Family(
        "/tensorflow/serving/batching_session/queuing_latency",
        "Distribution of wall time spent (in microseconds) in queuing",
        ("thread_pool_name",),
        QUEUING_BUCKETS,
    ),
    _Family(
        "/tensorflow/serving/batching_session/wrapped_run_count",
        "Total count of run calls on the wrapped session",
        (),
        None,
    ),
    _Family(
        "/tensorflow/serving/batching_session/input_batch_size",
        "Tracks the batch size distribution on the inputs.",
        (),
        BATCH_SIZE_BUCKETS,
    ),
    _Family(
        "/tensorflow/serving/batching_session/processed_batch_size",
        "Tracks the batch size distribution on processing.",
        (),
        BATCH_SIZE_BUCKETS,
    ),
    _Family(
        "/tensorflow/serving/batching_session/padding_size",
        "Tracks the padding size distribution on batches.",
        ("execution_batch_size",),
        BATCH_SIZE_BUCKETS,
    ),
)

_REGISTRY = CollectorRegistry(auto_describe=True)
_METRICS: dict[str, Counter | Histogram] = {}
for _family in _FAMILIES:
    _name = prometheus_name(_family.tf_name)
    if _family.buckets is None:
        _METRICS[_family.tf_name] = Counter(_name, _family.help, _family.labels, registry=_REGISTRY)
    else:
        _METRICS[_family.tf_name] = Histogram(
            _name, _family.help, _family.labels, registry=_REGISTRY, buckets=_family.buckets
        )
_BY_PROM_NAME = {prometheus_name(f.tf_name): f for f in _FAMILIES}
_lock = threading.Lock()  # one consistent page at a time


# Each labelled child's `inc` or `observe`, looked up once (an isinstance check against
# prometheus_client's classes goes through typing's Protocol machinery on every call).
_CELLS: dict[tuple[str, ...], Callable[[float], None]] = {}


def _add(tf_name: str, value: float, *labels: str) -> None:
    add = _CELLS.get((tf_name, *labels))
    if add is None:
        metric = _METRICS[tf_name]
        cell = metric.labels(*labels) if labels else metric
        add = _CELLS.setdefault(
            (tf_name, *labels), cell.inc if isinstance(cell, Counter) else cell.observe
        )
    add(value)


def _micros(seconds: float) -> float:
    return max(0.0, seconds) * 1e6


def record_request(model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
    """`RecordModelRequestCount` always; `RecordRequestLatency` for OK requests only.
    `status` is the code name (`OK`, `INVALID_ARGUMENT`, ...); `api` the method (`Predict` on
    gRPC, `predict` on REST, empty for REST status and metadata)."""
    _add("/tensorflow/serving/request_count", 1, model_name, status)
    if status == "OK":
        _add("/tensorflow/serving/request_latency", _micros(seconds), model_name, api, entrypoint)


def record_runtime(model_name: str, api: str, seconds: float) -> None:
    """`RecordRuntimeLatency`: time inside the runtime (`TF1`, the classic session)."""
    _add("/tensorflow/serving/runtime_latency", _micros(seconds), model_name, api, "TF1")


def record_examples(model_name: str, count: int) -> None:
    """`RecordRequestExampleCount` (MultiInference)."""
    _add("/tensorflow/serving/request_example_counts", count, model_name)
    _add("/tensorflow/serving/request_example_count_total", count, model_name)


def record_warmup(model_path: str, status: str, seconds: float, records: int) -> None:
    """A warmup replay of one version: latency and records read, by path and status."""
    _add("/tensorflow/serving/model_warmup_latency", _micros(seconds), model_path, status)
    _add("/tensorflow/serving/model_warmup_records_read", records, model_path, status)


def record_load(model_path: str, ok: bool, seconds: float) -> None:
    """One SavedModel load attempt (`success`/`fail`); latency is summed for successes."""
    _add(
        "/tensorflow/cc/saved_model/load_attempt_count", 1, model_path, "success" if ok else "fail"
    )
    if ok:
        _add("/tensorflow/cc/saved_model/load_latency", _micros(seconds), model_path)


def record_batch(
    thread_pool: str, tasks: Sequence[tuple[float, int]], size: int, padded: int
) -> None:
    """One merged run of the batching session: each task's (queuing seconds, rows), then the
    processed batch size and the padding."""
    for seconds, rows in tasks:
        _add("/tensorflow/serving/batching_session/queuing_latency", _micros(seconds), thread_pool)
        _add("/tensorflow/serving/batching_session/input_batch_size", rows)
    _add("/tensorflow/serving/batching_session/wrapped_run_count", 1)
    _add("/tensorflow/serving/batching_session/processed_batch_size", padded)
    _add("/tensorflow/serving/batching_session/padding_size", padded - size, str(padded))


def _label_text(labels: dict[str, str], names: Sequence[str]) -> list[str]:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return [f'{re.sub(r"[^a-zA-Z0-9]", "_", n)}="{escape(labels[n])}"' for n in names]


def _number(value: float) -> str:
    """`absl::StrCat(double)`: six significant digits, no trailing zeros."""
    return f"{value:g}"


def render() -> str:
    """The page `PrometheusExporter::GeneratePage` writes, metrics sorted by TF name."""
    lines: list[str] = []
    with _lock:
        collected = {m.name: m for m in _REGISTRY.collect()}
    for family in sorted(_FAMILIES, key=lambda f: f.tf_name):
        name = prometheus_name(family.tf_name)
        if family.buckets is None:
            # prometheus_client keeps a counter under its name without `_total`.
            metric = collected[name.removesuffix("_total")]
            lines.append(f"# TYPE {name} counter")
            for s in metric.samples:
                if s.name == metric.name + "_total":
                    labels = ",".join(_label_text(s.labels, family.labels))
                    lines.append(f"{name}{{{labels}}} {int(s.value)}")
            continue
        metric = collected[name]
        lines.append(f"# TYPE {name} histogram")
        series: dict[tuple[str, ...], dict[str, object]] = {}
        for s in metric.samples:
            key = tuple(s.labels.get(n, "") for n in family.labels)
            entry = series.setdefault(key, {"buckets": [], "sum": 0.0, "count": 0})
            if s.name == name + "_bucket":
                entry["buckets"].append(s.value)  # type: ignore[attr-defined]
            elif s.name == name + "_sum":
                entry["sum"] = s.value
            elif s.name == name + "_count":
                entry["count"] = int(s.value)
        bounds = [*(_number(b) for b in family.buckets), "+Inf"]
        for key, entry in series.items():
            labels = _label_text(dict(zip(family.labels, key, strict=True)), family.labels)
            prefix = ",".join(labels) + ("," if labels else "")
            for bound, cumulative in zip(bounds, entry["buckets"], strict=True):  # type: ignore[arg-type]
                lines.append(f'{name}_bucket{{{prefix}le="{bound}"}} {int(cumulative)}')
            lines.append(f"{name}_sum{{{','.join(labels)}}} {_number(float(entry['sum']))}")  # type: ignore[arg-type]
            lines.append(f"{name}_count{{{','.join(labels)}}} {entry['count']}")
    return "\n".join(lines) + "\n"
