"""The REST front-end's HTTP server (`http_server.cc`): sockets, gzip bodies, replies.

A stdlib threading HTTP server in front of `serving.rest_api.RestApi`, which does the routing
and JSON work; `start_rest_server` runs it on a daemon thread for `--rest_api_port`. Request
heads are read by `serving.http_head` (the stdlib's answers, without `email`'s parser on the
common form), the socket under its timeouts by `serving.http_io`, and each reply is one write. As in
`http_server.cc` it also answers CORS preflights, adds CORS headers
(`--rest_api_enable_cors_support`), processes `--rest_api_num_threads` requests at a time,
counts every request in the metrics and serves the Prometheus page (`--monitoring_config_file`).
Bounded like a production front-end: at most CONNECTIONS_PER_THREAD x `--rest_api_num_threads`
connections at once (more get 429, as gRPC sheds past its own queue), a read timeout on each
read, a deadline on the whole request head counted from its first byte (a header dripped a byte
at a time is closed at `--rest_api_timeout_in_ms`, however loaded the machine), and
`--rest_api_max_request_bytes` on the body and on its gzip inflation (413). Every refusal is a
short JSON reply, never a reset. A path outside /v1/ gets libevent's own 404 page, as
`http_server.cc`'s dispatcher leaves it to `evhttp_send_error`.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import queue
import re
import socket
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving import http_head, http_io, metrics
from serving.rest_api import V1_PATH, RestApi, model_and_method
from serving.v2_rest import V2_PATH, V2Rest

log = logging.getLogger(__name__)

# A refused body is still read (up to this much) so the client sees the reply, not a reset.
DRAIN_LIMIT = 256 * 1024 * 1024
# Open connections per REST worker thread: one being served, the rest reading or waiting.
CONNECTIONS_PER_THREAD = 4
_CHUNK = 1 << 16
# libevent's `evhttp_send_error` page (its ERR_FORMAT, sent by `evhttp_send_page_` as text/html
# and closed): what TF Serving sends for a path no dispatcher takes (404) and for requests its
# HTTP layer refuses before any handler runs.
_LIBEVENT_ERROR = (
    "<HTML><HEAD>\n<TITLE>{code} {phrase}</TITLE>\n</HEAD><BODY>\n<H1>{phrase}</H1>\n"
    "</BODY></HTML>\n"
)


class _Refusal(Exception):
    """A request refused before the API sees it: HTTP code and a short message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflates a gzip body, refusing (413) once the output passes `limit` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise _Refusal(400, "Failed to decompress gzip body") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise _Refusal(
            413,
            f"Decompressed request body exceeds the limit of {limit} bytes "
            "(--rest_api_max_request_bytes)",
        )
    if not inflater.eof:
        raise _Refusal(400, "Failed to decompress gzip body")
    return data


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
    v2: V2Rest  # the Open Inference Protocol's /v2 routes
    workers: _Tokens  # --rest_api_num_threads requests at a time
    cors: bool = False  # --rest_api_enable_cors_support
    prometheus_path: str | None = None  # from --monitoring_config_file
    max_request_bytes: int  # set on the per-server subclass
    # StreamRequestHandler applies this to the socket: a stalled header or body read times out;
    # the whole request head must also arrive within it, counted from its first byte.
    timeout: float | None = None
    _reader: http_io.HeadDeadlineReader

    def setup(self) -> None:
        super().setup()
        http_io.prepare(self.connection, self.timeout)
        self._reader = http_io.HeadDeadlineReader(self.connection, self.timeout, self.timeout)
        self.rfile = io.BufferedReader(self._reader)
        self.wfile = http_io.Writer(self.connection)

    def handle_one_request(self) -> None:
        self._reader.start_head()
        super().handle_one_request()

    def parse_request(self) -> bool:
        words = http_head.common_request_line(self.raw_requestline)
        parsed = super().parse_request() if words is None else self._parse_common(words)
        self._reader.end_head()
        return parsed

    def _parse_common(self, words: list[str]) -> bool:
        """`parse_request` for a request line it would accept as it stands: the same state
        and the same 431 refusals, headers read by `http_head` instead of `email`."""
        self.command, self.path, self.request_version = words
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.close_connection = self.request_version != "HTTP/1.1"
        try:
            self.headers = http_head.read_headers(self.rfile, self.MessageClass)
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err)
            )
            return False
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expect = self.headers.get("Expect", "").lower()
        if expect == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _body(self) -> bytes:
        """The request body within the limits; raises _Refusal otherwise."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise _Refusal(400, "Chunked request bodies are not supported: send Content-Length")
        text = self.headers.get("Content-Length") or "0"
        if not text.strip().isdigit():
            self.close_connection = True
            raise _Refusal(400, f"Invalid Content-Length header: {text[:64]!r}")
        length = int(text)
        if length > self.max_request_bytes:
            self._discard(length)
            raise _Refusal(
                413,
                f"Request body of {length} bytes exceeds the limit of "
                f"{self.max_request_bytes} bytes (--rest_api_max_request_bytes)",
            )
        try:
            body = self.rfile.read(length) if length > 0 else b""
        except TimeoutError:
            self.close_connection = True
            raise _Refusal(408, "Timed out reading the request body") from None
        if len(body) < length:
            self.close_connection = True
            raise _Refusal(400, f"Request body ended after {len(body)} of {length} bytes")
        if body and self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = _gunzip(body, self.max_request_bytes)
        return body

    def _discard(self, length: int) -> None:
        """Reads and drops a refused body so the reply reaches the client; then closes."""
        self.close_connection = True
        left = length if length <= DRAIN_LIMIT else 0
        while left > 0:
            chunk = self.rfile.read(min(_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)

    def _serve(self) -> None:
        started = self._reader.first_byte_at or time.monotonic()  # the REST deadline's start
        path = self.path.split("?", 1)[0]
        try:
            body = self._body()
        except _Refusal as refusal:
            self._reply(refusal.code, json.dumps({"error": refusal.message}, indent=4))
            return
        if self.prometheus_path is not None and path == self.prometheus_path:
            self._reply(200, metrics.render(), metrics.CONTENT_TYPE, cors=False)
            return
        if V2_PATH.fullmatch(path):
            with self.workers:
                reply = self.v2.handle(
                    self.command, path, self.headers, body, lambda: self._remaining(started)
                )
            self._reply(reply.code, reply.body, reply.content_type, headers=reply.headers)
            return
        if not V1_PATH.fullmatch(path):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with self.workers:
            start = time.monotonic()
            code, text, status = self._process(path, body, started)
            name, verb = model_and_method(self.command, path)
            metrics.record_request(name, verb, "REST", status, time.monotonic() - start)
        self._reply(code, text)

    def _process(self, path: str, body: bytes, started: float) -> tuple[int, str, str]:
        """(HTTP code, body, status code name) for one /v1/ request (OPTIONS: CORS preflight,
        answered whether or not CORS headers are on, as `http_server.cc` does). The REST
        deadline counts from `started`, when the request arrived."""
        if self.command == "OPTIONS":
            if re.search(r"https?://", self.headers.get("Origin", "")):
                return 200, "", "OK"
            message = "Origin header is missing in CORS preflight"
            return 400, json.dumps({"error": message}, indent=4), "FAILED_PRECONDITION"
        try:
            return self.api.handle_with_status(self.command, path, body, started)
        except Exception as err:  # a bug in one request must still get an answer, not a reset
            log.exception("REST %s %s failed", self.command, path)
            text = json.dumps({"error": f"{type(err).__name__}: {err}"}, indent=4)
            return 500, text, "INTERNAL"

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """An error the HTTP layer answers itself (a path outside /v1/, a bad request line, an
        unknown method), as libevent's `evhttp_send_error` writes it."""
        phrase = HTTPStatus(code).phrase
        self.close_connection = True
        if not self.request_version.startswith("HTTP/1."):
            self.request_version = "HTTP/1.1"  # an unparsed version still gets a status line
        page = _LIBEVENT_ERROR.format(code=int(code), phrase=phrase)
        self._reply(code, page, "text/html", cors=False)

    def _remaining(self, started: float) -> float | None:
        """Seconds left of `--rest_api_timeout_in_ms`, counted from the request's arrival."""
        timeout = self.v2.timeout_s
        return None if timeout is None else started + timeout - time.monotonic()

    def _reply(
        self,
        code: int,
        text: str | bytes,
        content_type: str = "application/json",
        cors: bool = True,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """What `send_response` + `send_header`s + `end_headers` + a body write send (status
        line, Server, Date, the headers, Content-Length), as one write: one send, not two."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        self.log_request(code)
        if self.request_version == "HTTP/0.9":  # no status line, no headers
            self.wfile.write(data)
            return
        phrase = self.responses[code][0] if code in self.responses else ""
        lines = [
            f"{self.protocol_version} {int(code)} {phrase}",
            f"Server: {self.version_string()}",
            f"Date: {http_head.http_date()}",
            f"Content-Type: {content_type}",
        ]
        lines += [f"{key}: {value}" for key, value in headers]
        if self.cors and cors:
            lines += [f"{key}: {value}" for key, value in _CORS_HEADERS]
        lines.append(f"Content-Length: {len(data)}")
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):  # formatting the line costs even when dropped
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("REST %s " + format, self.address_string(), *args)


class _BoundedHTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most CONNECTIONS_PER_THREAD x `num_threads` at once; the
    next gets a 429."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, num_threads: int) -> None:
        super().__init__(address, handler)
        self.num_threads = num_threads
        self.max_connections = CONNECTIONS_PER_THREAD * num_threads
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """RESOURCE_EXHAUSTED's HTTP code, written from the accept loop (small, non-blocking)."""
        body = json.dumps(
            {
                "error": f"Too many concurrent connections: {self.max_connections} are open "
                f"({CONNECTIONS_PER_THREAD} x --rest_api_num_threads={self.num_threads})"
            },
            indent=4,
        ).encode()
        head = (
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            request.setblocking(False)
            request.send(head + body)
        except OSError as err:
            log.debug("REST refusal not delivered: %s", err)
        self.shutdown_request(request)


class _Tokens:
    """`count` requests at a time: `with tokens:` takes one while it runs. A C queue, not a
    threading.BoundedSemaphore, whose Python-level Condition cost ~4 % of a request's GIL time."""

    def __init__(self, count: int) -> None:
        self._queue: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(count):
            self._queue.put(None)

    def __enter__(self) -> None:
        self._queue.get()

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)


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
    Prometheus page is served at `prometheus_path` when monitoring is on. Bodies are capped by
    `--rest_api_max_request_bytes`; header and body reads time out after
    `--rest_api_timeout_in_ms`."""
    options = core.options
    timeout_ms = options.rest_api_timeout_in_ms
    handler = type(
        "RestHandler",
        (_Handler,),
        {
            "api": RestApi(core),
            "v2": V2Rest(core, timeout_ms / 1000 if timeout_ms > 0 else None),
            "workers": _Tokens(num_threads),
            "cors": enable_cors,
            "prometheus_path": prometheus_path,
            "max_request_bytes": options.rest_api_max_request_bytes,
            "timeout": timeout_ms / 1000 if timeout_ms > 0 else None,
        },
    )
    httpd = _BoundedHTTPServer((host, port), handler, num_threads)
    thread = threading.Thread(
        target=httpd.serve_forever, name=f"rest-{httpd.server_address[1]}", daemon=True
    )
    thread.start()
    return RestServer(httpd, thread, num_threads)
