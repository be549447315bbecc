"""The floors the serving benchmark compares the embedded server with: a bare grpcio server and
a bare `http.server`, each answering the real Predict response bytes without doing any work.

`python -m bench.floors grpc|grpc-aio|http RESPONSE_FILE` serves on a free 127.0.0.1 port and
prints `Serving on 127.0.0.1:PORT`. The gRPC floor is what `python -m serving` is built on
(a sync `grpc.server` with a thread pool; `grpc-aio` is the asyncio server) registered at
PredictionService/Predict with bytes in and bytes out, so a client using the official stubs
cannot tell it from the model server except by speed. The HTTP floor is the stdlib threading
HTTP/1.1 server the REST front end is built on, with the same socket handling (keep-alive,
TCP_NODELAY), answering every POST with the recorded JSON body. Neither imports TensorFlow.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
SERVICE = "tensorflow.serving.PredictionService"
GRPC_THREADS = 8  # the floor of the issue: "bare grpcio echo, 8 threads"


def _handlers(response: bytes) -> grpc.GenericRpcHandler:
    def predict(request: bytes, context: object) -> bytes:
        return response

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Predict": grpc.unary_unary_rpc_method_handler(predict)}
    )


def _aio_handlers(response: bytes) -> grpc.GenericRpcHandler:
    async def predict(request: bytes, context: object) -> bytes:
        return response

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Predict": grpc.unary_unary_rpc_method_handler(predict)}
    )


def serve_grpc(response: bytes, done: threading.Event) -> None:
    """The sync floor: grpc.server on a GRPC_THREADS thread pool."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_THREADS))
    server.add_generic_rpc_handlers((_handlers(response),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"Serving on 127.0.0.1:{port}", flush=True)
    done.wait()
    server.stop(0).wait()


def serve_grpc_aio(response: bytes, done: threading.Event) -> None:
    """The asyncio floor: grpc.aio.server, handlers on the event loop."""

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_aio_handlers(response),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"Serving on 127.0.0.1:{port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, done.wait)
        await server.stop(0)

    asyncio.run(main())


def serve_http(response: bytes, done: threading.Event) -> None:
    """The HTTP floor: ThreadingHTTPServer, HTTP/1.1 keep-alive, TCP_NODELAY, fixed reply."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response)))
            self.end_headers()
            self.wfile.write(response)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    print(f"Serving on 127.0.0.1:{httpd.server_address[1]}", flush=True)
    done.wait()
    httpd.shutdown()
    httpd.server_close()


KINDS = {"grpc": serve_grpc, "grpc-aio": serve_grpc_aio, "http": serve_http}


def main(argv: list[str]) -> int:
    """Serve one floor until SIGTERM/SIGINT."""
    if len(argv) != 2 or argv[0] not in KINDS:
        print(f"usage: python -m bench.floors {{{'|'.join(KINDS)}}} RESPONSE_FILE", file=sys.stderr)
        return 2
    response = Path(argv[1]).read_bytes()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    KINDS[argv[0]](response, done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
