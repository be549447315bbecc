"""The REST front-end's HTTP server (`http_server.cc`): sockets, gzip bodies, replies.

A stdlib threading HTTP server in front of `serving.rest_api.RestApi`, which does the routing
and JSON work; `start_rest_server` runs it on a daemon thread for `--rest_api_port`.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving.rest_api import V1_PATH, RestApi

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes; with Nagle on, the delayed ACK adds ~40 ms to each.
    disable_nagle_algorithm = True
    server_version = "frozen-scalars-rest"
    api: RestApi  # set on the per-server subclass

    def _serve(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if not V1_PATH.fullmatch(path):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        if body and self.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                self._reply(400, json.dumps({"error": "Failed to decompress gzip body"}))
                return
        try:
            code, text = self.api.handle(self.command, path, body)
        except Exception as err:  # a bug in one request must still get an answer, not a reset
            log.exception("REST %s %s failed", self.command, path)
            code, text = 500, json.dumps({"error": f"{type(err).__name__}: {err}"}, indent=4)
        self._reply(code, text)

    def _reply(self, code: int, text: str) -> None:
        data = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("REST %s " + format, self.address_string(), *args)


class RestServer:
    """A running REST front-end: `.port` (the bound port), `.shutdown()` to stop and close it."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]

    def shutdown(self) -> None:
        """Stop accepting, finish the serve loop, release the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_rest_server(core: Any, host: str, port: int) -> RestServer:
    """Serve the REST API for `core` on host:port (0 = any free port) from a daemon thread."""
    handler = type("RestHandler", (_Handler,), {"api": RestApi(core)})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, name=f"rest-{httpd.server_address[1]}", daemon=True
    )
    thread.start()
    return RestServer(httpd, thread)

