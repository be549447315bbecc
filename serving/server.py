"""Process wiring: tensorflow_model_server's flags -> ServerCore + gRPC (+ REST) servers.

Like the real server, the ports open only once the initial models have loaded; the ready line
`Serving gRPC on HOST:PORT` is printed (flushed) after that, so callers can wait for it."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health

from serving import config_protos, flags, inference, metrics
from serving.batching import BatchingParameters, from_proto
from serving.bundle_config import session_bundle_config
from serving.core import ServerCore, ServerOptions
from serving.errors import ServingError, UsageError, invalid_argument
from serving.grpc_service import add_services
from serving.model_config import ModelServerConfig, config_from_flags, load_config_file
from serving.v2_grpc import add_v2_service

INT32_MAX = 2**31 - 1
STOP_GRACE_S = 5.0
_SIMPLE_ATOI = re.compile(r"^\s*[+-]?\d+\s*$")
GRPC_QUEUE_FACTOR = 4  # calls admitted per gRPC worker thread: 1 running, 3 queued

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """tensorflow_model_server's flags (see serving.flags); FlagParseError (a UsageError) on a
    value TF's parser would reject. `given_flags` names the flags the command line set."""
    parsed = flags.parse(argv)
    args = parsed.values
    args.given_flags = parsed.given
    return args


def _batching(config: config_protos.SessionBundleConfig) -> BatchingParameters | None:
    if not config.HasField("batching_parameters"):
        return None
    try:
        return from_proto(config.batching_parameters)
    except UsageError as e:
        raise invalid_argument(str(e)) from e


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
    """The ModelServerConfig and ServerOptions the flags describe (UsageError or ServingError
    with TF Serving's message if inconsistent or a file is unreadable)."""
    if args.model_config_file:
        config = load_config_file(args.model_config_file)
    elif args.model_base_path:
        config = config_from_flags(args.model_name, _absolute_base_path(args.model_base_path))
    else:
        raise UsageError(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    bundle = session_bundle_config(args)
    iterations = bundle.model_warmup_options.num_request_iterations
    options = ServerOptions(
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        backend=args.backend,
        saved_model_tags=tuple(bundle.saved_model_tags) or ("serve",),
        enable_model_warmup=bundle.enable_model_warmup,
        num_request_iterations_for_warmup=iterations.value if iterations.value > 0 else 1,
        batching=_batching(bundle),
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_micros=args.load_retry_interval_micros,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        session_config=bundle.session_config,
        remove_unused_fields_from_bundle_metagraph=(
            bundle.remove_unused_fields_from_bundle_metagraph
        ),
        enable_per_model_batching_params=bundle.enable_per_model_batching_params,
        num_load_threads=args.num_load_threads,
        enable_serialization_as_tensor_content=args.enable_serialization_as_tensor_content,
        rest_api_max_request_bytes=args.rest_api_max_request_bytes,
    )
    return config, options


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`--grpc_channel_arguments` as `parseGrpcChannelArgs` reads it: comma-separated
    `key=value`; a value `absl::SimpleAtoi` reads as an int32 is passed as an int, any other
    as a string; gRPC ignores keys it does not know."""
    result: list[tuple[str, int | str]] = []
    for entry in text.split(","):
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise UsageError(
                f"--grpc_channel_arguments entry {entry!r} is not key=value "
                "(e.g. grpc.max_connection_age_ms=2000)"
            )
        if _SIMPLE_ATOI.match(value) and -(2**31) <= int(value) < 2**31:
            result.append((key, int(value)))
        else:
            result.append((key, value))
    return result


def server_credentials(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    """`BuildServerCredentials`: ALTS, or TLS from a text SSLConfig, else None (insecure)."""
    if args.use_alts_credentials:
        log.info("Using ALTS credentials")
        return grpc.alts_server_credentials()
    if not args.ssl_config_file:
        log.info("Using InsecureServerCredentials")
        return None
    ssl = config_protos.parse_text_file(args.ssl_config_file, config_protos.SSLConfig())
    log.info("Using SSL credentials")
    if ssl.client_verify and not ssl.custom_ca:
        raise invalid_argument(
            f"{args.ssl_config_file}: client_verify needs custom_ca (the CA that signs client "
            "certificates)"
        )
    try:
        return grpc.ssl_server_credentials(
            [(ssl.server_key.encode(), ssl.server_cert.encode())],
            root_certificates=ssl.custom_ca.encode() or None,
            require_client_auth=ssl.client_verify,
        )
    except (TypeError, ValueError) as e:
        raise invalid_argument(f"{args.ssl_config_file}: {e}") from e


def _monitoring(args: argparse.Namespace) -> str | None:
    """The Prometheus path if `--monitoring_config_file` enables it (read only when REST is
    on, as in server.cc)."""
    if not args.monitoring_config_file:
        return None
    config = config_protos.parse_text_file(
        args.monitoring_config_file, config_protos.MonitoringConfig()
    )
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or metrics.DEFAULT_PATH


def _log_no_effect(args: argparse.Namespace) -> None:
    """One line for each flag given that changes nothing here."""
    for flag in flags.FLAGS:
        if flag.status == flags.NO_EFFECT and flag.name in args.given_flags:
            log.info("--%s has no effect in this server: %s", flag.name, flag.note)


@dataclass
class RunningServer:
    """A started server: the core, the bound ports, and how to stop it all."""

    core: ServerCore
    grpc_server: grpc.Server
    health: health.HealthServicer | None
    host: str
    grpc_port: int
    rest: Any = None
    rest_port: int = 0
    socket_path: str = ""
    _config_poller: threading.Thread | None = None
    _stopping: threading.Event | None = None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Graceful stop: health NOT_SERVING, in-flight calls finish, then the core stops."""
        if self._stopping is not None:
            self._stopping.set()
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        if self.rest is not None:
            self.rest.shutdown()
        self.grpc_server.stop(grace_s).wait()
        self.core.stop()


def _watch_config_file(core: ServerCore, path: str, every_s: int, stop: threading.Event) -> None:
    """`--model_config_file_poll_wait_seconds` (`PollFilesystemAndReloadConfig`): re-apply the
    file; a file that cannot be read or parsed (empty or half-written by a non-atomic rewrite)
    or a config ReloadConfig refuses is logged and the served config stays."""
    while not stop.wait(every_s):
        try:
            config = load_config_file(path)
        except (UsageError, ServingError) as e:  # server.cc logs read_status.message()
            log.error("Failed to read ModelServerConfig file: %s", getattr(e, "message", e))
            continue
        try:
            core.reload_config(config)
        except ServingError as e:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", e.message)


def _check_flags(args: argparse.Namespace) -> None:
    """`BuildAndStart`'s own checks, with its messages."""
    flags.check_values(args)
    channel_arguments(args.grpc_channel_arguments)
    if args.use_alts_credentials and args.ssl_config_file:
        raise invalid_argument(
            "Either use_alts_credentials must be false or ssl_config_file must be empty."
        )


def _grpc_server(
    args: argparse.Namespace, core: ServerCore, credentials: grpc.ServerCredentials | None
) -> tuple[grpc.Server, Any, int]:
    """The gRPC server with TF Serving's message limits and the flag's channel arguments,
    bound to the TCP port (0 without --grpc_socket_path: any free port) and/or the socket."""
    workers = args.grpc_max_threads or 4 * flags.cpu_count()
    given = channel_arguments(args.grpc_channel_arguments)
    defaults = [
        ("grpc.max_send_message_length", INT32_MAX),
        ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.so_reuseport", 0),
    ]
    overridden = {key for key, _ in given}
    options = [(k, v) for k, v in defaults if k not in overridden] + given
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        # Past this many calls in flight (running + queued) gRPC answers RESOURCE_EXHAUSTED,
        # as the C++ server does once its thread quota (--grpc_max_threads) is used up.
        maximum_concurrent_rpcs=workers * GRPC_QUEUE_FACTOR,
        options=options,
    )
    health_servicer = add_services(server, core, args.enable_grpc_healthcheck_service)
    add_v2_service(server, core)  # the Open Inference Protocol beside TF Serving's API
    addresses = []
    if args.port or not args.grpc_socket_path:
        addresses.append(f"{args.host}:{args.port}")
    if args.grpc_socket_path:
        addresses.append(f"unix:{args.grpc_socket_path}")
    port = 0
    for address in addresses:
        try:
            if credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, credentials)
        except RuntimeError as e:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE, f"Failed to BuildAndStart gRPC server: {e}"
            ) from e
        if not address.startswith("unix:"):
            port = bound
    return server, health_servicer, port


def start_server(args: argparse.Namespace) -> RunningServer:
    """Checks flags and config files, loads the initial models (blocking), then opens the
    ports and prints the ready lines (`Serving gRPC on ...`, `Serving REST on ...`)."""
    _check_flags(args)
    inference.set_signature_method_name_check(args.enable_signature_method_name_check)
    config, options = core_inputs(args)
    credentials = server_credentials(args)  # a bad SSL file fails before the (slow) load
    if args.thread_pool_factory_config_file:  # read and checked as server.cc does, then unused
        config_protos.parse_text_file(
            args.thread_pool_factory_config_file, config_protos.ThreadPoolFactoryConfig()
        )
    prometheus_path = _monitoring(args) if args.rest_api_port else None
    _log_no_effect(args)
    core = ServerCore(config, options)
    core.start()
    try:
        server, health_servicer, port = _grpc_server(args, core, credentials)
    except (ServingError, UsageError):
        core.stop()
        raise
    server.start()
    running = RunningServer(
        core, server, health_servicer, args.host, port, socket_path=args.grpc_socket_path
    )
    if port:
        print(f"Serving gRPC on {args.host}:{port}", flush=True)
    if args.grpc_socket_path:
        print(f"Serving gRPC on unix:{args.grpc_socket_path}", flush=True)
    if args.rest_api_port and args.rest_api_port == args.port:
        log.error(
            "server_options.http_port cannot be same as grpc_port. Please use a different port "
            "for HTTP/REST API. Skipped exporting HTTP/REST API."
        )
    elif args.rest_api_port:
        from serving.rest import start_rest_server

        try:
            running.rest = start_rest_server(
                core,
                args.host,
                args.rest_api_port,
                num_threads=args.rest_api_num_threads or 4 * flags.cpu_count(),
                enable_cors=args.rest_api_enable_cors_support,
                prometheus_path=prometheus_path,
            )
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
