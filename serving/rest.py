"""The REST front-end's HTTP server (`http_server.cc`): sockets, gzip bodies, replies.

A stdlib threading HTTP server in front of `serving.rest_api.RestApi`, which does the routing
and JSON work; `start_rest_server` runs it on a daemon thread for `--rest_api_port`. As in
`http_server.cc` it also answers CORS preflights, adds CORS headers
(`--rest_api_enable_cors_support`), processes `--rest_api_num_threads` requests at a time,
counts every request in the metrics and serves the Prometheus page (`--monitoring_config_file`).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving import metrics
from serving.rest_api import V1_PATH, RestApi, model_and_method

log = logging.getLogger(__name__)


_CORS_HEADERS = (  # http_rest_api_util.cc AddCORSHeaders
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes; with Nagle on, the delayed ACK adds ~40 ms to each.
    disable_nagle_algorithm = True
    server_version = "frozen-scalars-rest"
    api: RestApi  # set on the per-server subclass
    workers: threading.BoundedSemaphore  # --rest_api_num_threads requests at a time
    cors: bool = False  # --rest_api_enable_cors_support
    prometheus_path: str | None = None  # from --monitoring_config_file

    def _serve(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if self.prometheus_path is not None and path == self.prometheus_path:
            self._reply(200, metrics.render(), metrics.CONTENT_TYPE, cors=False)
            return
        if not V1_PATH.fullmatch(path):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        if body and self.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                self._reply(400, json.dumps({"error": "Failed to decompress gzip body"}))
                return
        with self.workers:
            start = time.monotonic()
            code, text, status = self._process(path, body)
            name, verb = model_and_method(self.command, path)
            metrics.record_request(name, verb, "REST", status, time.monotonic() - start)
        self._reply(code, text)

    def _process(self, path: str, body: bytes) -> tuple[int, str, str]:
        """(HTTP code, body, status code name) for one /v1/ request (OPTIONS: CORS preflight,
        answered whether or not CORS headers are on, as `http_server.cc` does)."""
        if self.command == "OPTIONS":
            if re.search(r"https?://", self.headers.get("Origin", "")):
                return 200, "", "OK"
            message = "Origin header is missing in CORS preflight"
            return 400, json.dumps({"error": message}, indent=4), "FAILED_PRECONDITION"
        try:
            return self.api.handle_with_status(self.command, path, body)
        except Exception as err:  # a bug in one request must still get an answer, not a reset
            log.exception("REST %s %s failed", self.command, path)
            text = json.dumps({"error": f"{type(err).__name__}: {err}"}, indent=4)
            return 500, text, "INTERNAL"

    def _reply(
        self, code: int, text: str, content_type: str = "application/json", cors: bool = True
    ) -> None:
        data = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if self.cors and cors:
            for key, value in _CORS_HEADERS:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("REST %s " + format, self.address_string(), *args)


class RestServer:
    """A running REST front-end: `.port` (the bound port), `.shutdown()` to stop and close it."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread, threads: int) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]
        self.num_threads = threads

    def shutdown(self) -> None:
        """Stop accepting, finish the serve loop, release the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_rest_server(
    core: Any,
    host: str,
    port: int,
    num_threads: int = 8,
    enable_cors: bool = False,
    prometheus_path: str | None = None,
) -> RestServer:
    """Serve the REST API for `core` on host:port (0 = any free port) from a daemon thread;
    at most `num_threads` requests are processed at once (`--rest_api_num_threads`), and the
    Prometheus page is served at `prometheus_path` when monitoring is on."""
    handler = type(
        "RestHandler",
        (_Handler,),
        {
            "api": RestApi(core),
            "workers": threading.BoundedSemaphore(num_threads),
            "cors": enable_cors,
            "prometheus_path": prometheus_path,
        },
    )
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, name=f"rest-{httpd.server_address[1]}", daemon=True
    )
    thread.start()
    return RestServer(httpd, thread, num_threads)
