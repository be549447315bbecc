"""Process wiring: tensorflow_model_server's flags -> ServerCore + gRPC (+ REST) servers.

Like the real server, the ports open only once the initial models have loaded; the ready line
`Serving gRPC on HOST:PORT` is printed (flushed) after that, so callers can wait for it."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health

from serving.batching import BatchingParameters, parse_batching_parameters
from serving.core import (
    ModelServerConfig,
    ServerCore,
    ServerOptions,
    config_from_flags,
    load_config_file,
)
from serving.errors import ServingError, UsageError
from serving.grpc_service import add_services

INT32_MAX = 2**31 - 1
STOP_GRACE_S = 5.0

log = logging.getLogger(__name__)


def _flag_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """tensorflow_model_server's flag names (plus `--backend` and `--host`)."""
    p = argparse.ArgumentParser(prog="python -m serving", description=__doc__)

    def boolean(name: str, default: bool, help_text: str) -> None:
        p.add_argument(
            name, type=_flag_bool, nargs="?", const=True, default=default, help=help_text
        )

    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 picks a free one)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port; 0 disables REST")
    p.add_argument("--host", default="127.0.0.1", help="address to bind both servers to")
    p.add_argument("--model_name", default="default")
    p.add_argument("--model_base_path", default="")
    p.add_argument("--model_config_file", default="")
    p.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0)
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1)
    boolean("--enable_batching", False, "merge concurrent requests into one run")
    p.add_argument("--batching_parameters_file", default="")
    p.add_argument("--grpc_max_threads", type=int, default=0, help="0 = 4 x cores")
    boolean("--enable_model_warmup", True, "replay assets.extra/tf_serving_warmup_requests")
    p.add_argument("--num_request_iterations_for_warmup", type=int, default=1)
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000)
    p.add_argument("--saved_model_tags", default="serve")
    p.add_argument("--max_num_load_retries", type=int, default=5)
    p.add_argument("--load_retry_interval_micros", type=int, default=60_000_000)
    boolean("--allow_version_labels_for_unavailable_models", False, "labels for loading versions")
    boolean("--enable_grpc_healthcheck_service", True, "grpc.health.v1 (always served here)")
    p.add_argument("--backend", choices=("tensorflow", "onnx"), default="tensorflow")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parses flags; argparse exits with code 2 on bad usage."""
    return build_parser().parse_args(list(argv))


def _batching(args: argparse.Namespace) -> BatchingParameters | None:
    if args.batching_parameters_file and not args.enable_batching:
        raise UsageError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if not args.enable_batching:
        return None
    if not args.batching_parameters_file:
        return BatchingParameters()
    try:
        with open(args.batching_parameters_file, encoding="utf-8") as f:
            return parse_batching_parameters(f.read())
    except OSError as e:
        raise UsageError(f"Could not read batching parameters file: {e}") from e


def _absolute_base_path(base_path: str) -> str:
    """Resolve a relative `--model_base_path` against the working directory.

    tensorflow_model_server rejects relative base paths; the embedded server resolves the
    flag (not config-file entries, which stay strict) and says so, since a path typed on the
    command line is unambiguous.
    """
    if "://" in base_path or os.path.isabs(base_path):
        return base_path
    resolved = os.path.abspath(base_path)
    print(
        f"note: --model_base_path={base_path} resolved to {resolved} "
        "(tensorflow_model_server itself requires an absolute path)",
        file=sys.stderr,
        flush=True,
    )
    return resolved


def core_inputs(args: argparse.Namespace) -> tuple[ModelServerConfig, ServerOptions]:
    """The ModelServerConfig and ServerOptions the flags describe (UsageError if inconsistent)."""
    if args.model_config_file:
        config = load_config_file(args.model_config_file)
    elif args.model_base_path:
        config = config_from_flags(args.model_name, _absolute_base_path(args.model_base_path))
    else:
        raise UsageError(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    options = ServerOptions(
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        backend=args.backend,
        saved_model_tags=tuple(t for t in args.saved_model_tags.split(",") if t),
        enable_model_warmup=args.enable_model_warmup,
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        batching=_batching(args),
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_micros=args.load_retry_interval_micros,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
    )
    return config, options


@dataclass
class RunningServer:
    """A started server: the core, the bound ports, and how to stop it all."""

    core: ServerCore
    grpc_server: grpc.Server
    health: health.HealthServicer
    host: str
    grpc_port: int
    rest: Any = None
    rest_port: int = 0
    _config_poller: threading.Thread | None = None
    _stopping: threading.Event | None = None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Graceful stop: health NOT_SERVING, in-flight calls finish, then the core stops."""
        if self._stopping is not None:
            self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self.rest is not None:
            self.rest.shutdown()
        self.grpc_server.stop(grace_s).wait()
        self.core.stop()


def _watch_config_file(core: ServerCore, path: str, every_s: int, stop: threading.Event) -> None:
    """`--model_config_file_poll_wait_seconds`: re-apply the file; errors are only logged."""
    while not stop.wait(every_s):
        try:
            core.reload_config(load_config_file(path))
        except (UsageError, ServingError) as e:
            log.error("Failed to reload model config %s: %s", path, e)


def start_server(args: argparse.Namespace) -> RunningServer:
    """Loads the initial models (blocking), then opens the ports and prints the ready line."""
    config, options = core_inputs(args)
    core = ServerCore(config, options)
    core.start()
    workers = args.grpc_max_threads or 4 * (os.cpu_count() or 1)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_send_message_length", INT32_MAX),
            ("grpc.max_receive_message_length", INT32_MAX),
            ("grpc.so_reuseport", 0),
        ],
    )
    health_servicer = add_services(server, core)
    try:
        port = server.add_insecure_port(f"{args.host}:{args.port}")
    except RuntimeError as e:
        core.stop()
        raise ServingError(grpc.StatusCode.UNAVAILABLE, f"Failed to bind gRPC port: {e}") from e
    server.start()
    running = RunningServer(core, server, health_servicer, args.host, port)
    print(f"Serving gRPC on {args.host}:{port}", flush=True)
    if args.rest_api_port:
        from serving.rest import start_rest_server

        try:
            running.rest = start_rest_server(core, args.host, args.rest_api_port)
        except OSError as e:
            running.stop(grace_s=0)
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"Failed to bind REST port: {e}") from e
        running.rest_port = getattr(running.rest, "port", args.rest_api_port)
        print(f"Serving REST on {args.host}:{running.rest_port}", flush=True)
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        running._stopping = threading.Event()
        running._config_poller = threading.Thread(
            target=_watch_config_file,
            args=(
                core,
                args.model_config_file,
                args.model_config_file_poll_wait_seconds,
                running._stopping,
            ),
            daemon=True,
        )
        running._config_poller.start()
    return running


def serve(args: argparse.Namespace) -> int:
    """Runs until SIGTERM/SIGINT, then stops gracefully; returns the process exit code."""
    try:
        running = start_server(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except ServingError as e:
        print(f"Failed to start server. Error: {e}", file=sys.stderr, flush=True)
        return 1
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    running.stop()
    return 0
