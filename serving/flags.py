"""tensorflow_model_server's command line: its 48 flags (TF Serving 2.21 `main.cc`, same order,
types and defaults) parsed the way `tensorflow::Flags::Parse` parses them, plus what each one
does in this server (`STATUS`, rendered as the README's table).

TF's parser takes `--name=value` and, for booleans, a bare `--name` or `--name=true|false|1|0`
(case-insensitive); a value it cannot read fails the whole parse ("Couldn't interpret value <v>
for flag <name>."). An argument that matches no flag is not an error there: the binary prints
`unknown argument: <arg>` and the usage, then starts anyway. This parser does the same, and also
takes `--name value` (the next argument as the value), which scripts written for other flag
libraries use. Nothing here imports TensorFlow, so `--help` and `--version` return at once.

One job past ~400 lines: the flag table, its parser and its README rendering are one mirror of
`main.cc`; split, a flag added in one place would be missing from the others."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from serving.errors import UsageError

# What a flag does here.
WORKS = "works"  # does what it does in TF Serving
NO_EFFECT = "no effect"  # accepted; when set, logs one line saying it changes nothing here
EXTENSION = "extension"  # this server's own flag, not tensorflow_model_server's

TF_SERVING_VERSION = "2.21.0"  # the release whose main.cc, flags and messages this follows
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_INT = re.compile(r"^\s*[+-]?\d+$")  # sscanf("%d%c") accepts leading space and a sign only
_BOOL = {"true": True, "1": True, "false": False, "0": False}


def cpu_count() -> int:
    """`port::NumSchedulableCPUs()`: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Flag:
    """One flag: TF's type name (int32, int64, float, bool, string), default, status, note."""

    name: str
    type: str
    default: object
    status: str
    note: str


def _flags() -> tuple[Flag, ...]:
    cpus4 = 4 * cpu_count()
    f = Flag
    return (
        f(
            "port",
            "int32",
            8500,
            WORKS,
            "gRPC port; 0 disables TCP gRPC (then --grpc_socket_path is required)",
        ),
        f("grpc_socket_path", "string", "", WORKS, "the same gRPC services on `unix:<path>`"),
        f(
            "rest_api_port",
            "int32",
            0,
            WORKS,
            "REST port; 0 (the default) disables REST; must differ from --port",
        ),
        f(
            "rest_api_num_threads",
            "int32",
            cpus4,
            WORKS,
            "REST worker threads (requests served "
            "at once); 4 open connections per thread, more get 429",
        ),
        f(
            "rest_api_timeout_in_ms",
            "int32",
            30000,
            WORKS,
            "REST request deadline; also bounds each read and the request head (from its "
            "first byte)",
        ),
        f(
            "rest_api_enable_cors_support",
            "bool",
            False,
            WORKS,
            "CORS headers on REST responses, OPTIONS preflight",
        ),
        f("enable_batching", "bool", False, WORKS, "server-side batching"),
        f(
            "allow_version_labels_for_unavailable_models",
            "bool",
            False,
            WORKS,
            "labels may name versions not loaded yet",
        ),
        f("batching_parameters_file", "string", "", WORKS, "text BatchingParameters"),
        f(
            "enable_per_model_batching_parameters",
            "bool",
            False,
            WORKS,
            "`batching_params.pbtxt` in a version's directory sets that model's queue",
        ),
        f("model_config_file", "string", "", WORKS, "text ModelServerConfig"),
        f("model_config_file_poll_wait_seconds", "int32", 0, WORKS, "re-read the config file"),
        f("model_name", "string", "default", WORKS, "single-model name"),
        f("model_base_path", "string", "", WORKS, "single-model base path"),
        f("num_load_threads", "int32", 0, WORKS, "loader threads; 0 loads one version at a time"),
        f(
            "num_unload_threads",
            "int32",
            0,
            NO_EFFECT,
            "unloading drops references; there is no unload work to spread over threads",
        ),
        f("max_num_load_retries", "int32", 5, WORKS, "retries after a failed load"),
        f("load_retry_interval_micros", "int64", 60_000_000, WORKS, "wait between retries"),
        f(
            "file_system_poll_wait_seconds",
            "int32",
            1,
            WORKS,
            "version polling interval (fractions of a second are accepted too)",
        ),
        f("flush_filesystem_caches", "bool", True, NO_EFFECT, "no file-system caches to flush"),
        f(
            "tensorflow_session_parallelism",
            "int64",
            0,
            WORKS,
            "intra and inter op threads of each model's session",
        ),
        f(
            "tensorflow_session_config_file",
            "string",
            "",
            WORKS,
            "text ConfigProto for each "
            "model's session (the parallelism flags override its thread counts)",
        ),
        f("tensorflow_intra_op_parallelism", "int64", 0, WORKS, "session intra-op threads"),
        f("tensorflow_inter_op_parallelism", "int64", 0, WORKS, "session inter-op threads"),
        f(
            "use_alts_credentials",
            "bool",
            False,
            WORKS,
            "gRPC ALTS server credentials (handshakes succeed only on Google Cloud)",
        ),
        f(
            "ssl_config_file",
            "string",
            "",
            WORKS,
            "text SSLConfig: TLS (and client certificates) on gRPC",
        ),
        f(
            "platform_config_file",
            "string",
            "",
            WORKS,
            "text PlatformConfigMap; the "
            "`tensorflow` platform's SavedModelBundleSourceAdapterConfig sets the session and "
            "bundle options",
        ),
        f(
            "per_process_gpu_memory_fraction",
            "float",
            0.0,
            WORKS,
            "set in the session config as TF Serving does; without a GPU it changes nothing",
        ),
        f("saved_model_tags", "string", "serve", WORKS, "MetaGraph tag set"),
        f(
            "grpc_channel_arguments",
            "string",
            "",
            WORKS,
            "`key=value,...` gRPC server arguments (int when the value parses as one)",
        ),
        f("grpc_max_threads", "int32", cpus4, WORKS, "gRPC worker threads"),
        f(
            "enable_model_warmup",
            "bool",
            True,
            WORKS,
            "replay assets.extra/tf_serving_warmup_requests",
        ),
        f(
            "num_request_iterations_for_warmup",
            "int32",
            0,
            WORKS,
            "times each warmup record is replayed (used when > 0)",
        ),
        f("version", "bool", False, WORKS, "print the versions and exit"),
        f(
            "monitoring_config_file",
            "string",
            "",
            WORKS,
            "text MonitoringConfig: Prometheus metrics on the REST port",
        ),
        f(
            "remove_unused_fields_from_bundle_metagraph",
            "bool",
            True,
            WORKS,
            "drop the graph and other unused fields from the MetaGraphDef kept after load",
        ),
        f(
            "prefer_tflite_model",
            "bool",
            False,
            NO_EFFECT,
            "TF Lite models are not served; the SavedModel is used (TF Serving's fallback)",
        ),
        f("num_tflite_pools", "int32", cpu_count(), NO_EFFECT, "no TF Lite"),
        f("num_tflite_interpreters_per_pool", "int32", 1, NO_EFFECT, "no TF Lite"),
        f(
            "enable_signature_method_name_check",
            "bool",
            False,
            WORKS,
            "Predict checks the signature's method_name",
        ),
        f(
            "xla_cpu_compilation_enabled",
            "bool",
            False,
            NO_EFFECT,
            "XLA JIT follows TensorFlow's Python default",
        ),
        f("xla_gpu_compilation_enabled", "bool", False, NO_EFFECT, "no GPU"),
        f(
            "enable_profiler",
            "bool",
            True,
            NO_EFFECT,
            "no tensorflow.ProfilerService on the gRPC port",
        ),
        f(
            "thread_pool_factory_config_file",
            "string",
            "",
            NO_EFFECT,
            "parsed and checked as a "
            "ThreadPoolFactoryConfig; no thread-pool factory is registered (as in the stock "
            "binary)",
        ),
        f(
            "mixed_precision",
            "string",
            "",
            WORKS,
            "`bfloat16` turns on the session's oneDNN "
            "bfloat16 auto-mixed-precision rewrite; other values log TF Serving's warning",
        ),
        f("skip_initialize_tpu", "bool", False, NO_EFFECT, "no TPU"),
        f(
            "enable_grpc_healthcheck_service",
            "bool",
            False,
            WORKS,
            "grpc.health.v1 with `ModelService`, `PredictionService` and `` SERVING",
        ),
        f(
            "enable_serialization_as_tensor_content",
            "bool",
            False,
            WORKS,
            "Predict responses carry tensor_content instead of typed value fields",
        ),
    )


FLAGS: tuple[Flag, ...] = _flags()
EXTENSION_FLAGS: tuple[Flag, ...] = (
    Flag(
        "host",
        "string",
        "127.0.0.1",
        EXTENSION,
        "address both servers bind; TF Serving "
        "binds every interface (pass `--host=0.0.0.0` for that)",
    ),
    Flag(
        "backend",
        "string",
        "tensorflow",
        EXTENSION,
        "`tensorflow` or `onnx` (ONNX Runtime over model.onnx in each version directory)",
    ),
    Flag(
        "rest_api_max_request_bytes",
        "int64",
        4 * 1024 * 1024,
        EXTENSION,
        "largest REST "
        "body, and largest gzip inflation of one (413 past it); gRPC's 4 MiB receive default",
    ),
)
_BY_NAME = {flag.name: flag for flag in (*FLAGS, *EXTENSION_FLAGS)}


class FlagParseError(UsageError):
    """A flag value TF's parser would not accept (the binary prints usage and exits)."""


def _convert(flag: Flag, text: str) -> object:
    """TF's per-type conversion; None when the text is not a value of that type."""
    if flag.type == "bool":
        return _BOOL.get(text.lower())
    if flag.type == "string":
        return text
    if flag.type == "float" or flag.name == "file_system_poll_wait_seconds":
        try:
            return float(text)
        except ValueError:
            return None
    if not _INT.match(text):
        return None
    low, high = INT32 if flag.type == "int32" else INT64
    value = int(text)
    return value if low <= value <= high else None


def defaults() -> argparse.Namespace:
    """Every flag at its default."""
    return argparse.Namespace(**{f.name: f.default for f in (*FLAGS, *EXTENSION_FLAGS)})


@dataclass
class ParsedFlags:
    """The flag values, which flags were given, and the arguments no flag matched."""

    values: argparse.Namespace
    given: list[str]
    unknown: list[str]
    help: bool = False


def parse(argv: Sequence[str]) -> ParsedFlags:
    """`tensorflow::Flags::Parse` over `argv` (program name excluded), plus `--name value`.

    Raises FlagParseError with TF's message for a value of the wrong type; the first such
    error is reported (TF logs each, then fails)."""
    values = defaults()
    given: list[str] = []
    unknown: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            unknown.extend(args[i - 1 :])
            break
        name, has_value, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        flag = _BY_NAME.get(name)
        if flag is None:
            unknown.append(arg)
            continue
        if not has_value:
            if flag.type == "bool":
                # A bare boolean is true; `--flag true|false` is also read as its value.
                if i < len(args) and args[i].lower() in _BOOL:
                    text = args[i]
                    i += 1
                else:
                    text = "true"
            elif i < len(args) and not args[i].startswith("--"):
                text = args[i]
                i += 1
            else:
                unknown.append(arg)  # TF's parser: `--name` without a value names no flag
                continue
        value = _convert(flag, text)
        if value is None:
            raise FlagParseError(f"Couldn't interpret value {text} for flag {name}.")
        setattr(values, name, value)
        given.append(name)
    return ParsedFlags(values, given, unknown, help=bool(unknown) and unknown[0] == "--help")


def _display_default(flag: Flag) -> str:
    if flag.type == "bool":
        return "true" if flag.default else "false"
    if flag.type == "string":
        return f'"{flag.default}"'
    if flag.type == "float":
        return f"{flag.default:f}"
    return str(flag.default)


def usage(program: str) -> str:
    """`tensorflow::Flags::Usage`: one tab-separated line per flag."""
    lines = [f"usage: {program}", "Flags:"]
    for flag in (*FLAGS, *EXTENSION_FLAGS):
        shown = f"--{flag.name}={_display_default(flag)}"
        lines.append(f"\t{shown:<33}\t{flag.type}\t{flag.note}")
    return "\n".join(lines) + "\n"


def version_text() -> str:
    """What `--version` prints: the TF Serving release followed and TF's version (from the
    installed distribution, so TensorFlow itself is not imported)."""
    try:
        ours = metadata.version("frozen-scalars")
    except metadata.PackageNotFoundError:
        ours = "source"
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = "not installed"
    return (
        f"TensorFlow ModelServer: {TF_SERVING_VERSION}+frozen-scalars.{ours}\n"
        f"TensorFlow Library: {tf_version}\n"
    )


def check_values(values: argparse.Namespace) -> None:
    """Rejects thread and pool counts below zero before anything starts: the real binary
    aborts on them (TF's ThreadPool and gRPC's resource quota CHECK-fail); one line naming the
    flag. Negative session parallelism stays allowed (TF reads it as "run in the caller")."""
    for name in (
        "rest_api_num_threads",
        "grpc_max_threads",
        "num_load_threads",
        "num_unload_threads",
        "num_tflite_pools",
        "num_tflite_interpreters_per_pool",
    ):
        value = getattr(values, name)
        if value < 0:
            raise FlagParseError(
                f"--{name}={value} is negative; expected 0 (auto/default) or a positive count"
            )
    if values.rest_api_max_request_bytes <= 0:
        raise FlagParseError(
            f"--rest_api_max_request_bytes={values.rest_api_max_request_bytes}: expected a "
            "positive number of bytes"
        )
    if values.backend not in ("tensorflow", "onnx"):
        raise FlagParseError(f"--backend={values.backend}: expected tensorflow or onnx")


def status_table() -> str:
    """The README's table: every flag, its default and what it does here."""
    per_cpu = {
        "grpc_max_threads": "4 × CPUs",
        "rest_api_num_threads": "4 × CPUs",
        "num_tflite_pools": "CPUs",
    }
    rows = ["| flag | type | default | status | here |", "| --- | --- | --- | --- | --- |"]
    for flag in (*FLAGS, *EXTENSION_FLAGS):
        default = per_cpu.get(flag.name, f"`{_display_default(flag)}`")
        rows.append(f"| `--{flag.name}` | {flag.type} | {default} | {flag.status} | {flag.note} |")
    return "\n".join(rows) + "\n"
