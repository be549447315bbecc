"""The malformed-request catalogue: every case an operator's probe found (issue 8, failures 3
and 4) and its neighbours, each with the answer it must get. Shared by the reliability tests
and `bench.soak`, so the soak report counts exactly what the tests assert.

A case is sent on its own connection; the expected answer is an HTTP code (REST) or a gRPC
status (gRPC). `None` as the REST code means "the server closes the connection after its read
timeout" (a slow header); anything else must be a JSON reply with a short `error`."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

MODEL = "half_plus_two"
PREDICT = f"/v1/models/{MODEL}:predict"
SERVED = 4.0  # half_plus_two's latest version (2) at x = 2.0
MAX_ERROR_CHARS = 2048  # "short": a quoted value is cut at 256 bytes, plus the message


@dataclass(frozen=True)
class RestCase:
    name: str
    request: bytes  # the raw HTTP request
    expected: int | None


@dataclass(frozen=True)
class GrpcCase:
    name: str
    build: Callable[[], predict_pb2.PredictRequest]
    expected: grpc.StatusCode


def post(body: bytes, path: str = PREDICT, headers: dict[str, str] | None = None) -> bytes:
    """A raw POST with Content-Length set from the body unless `headers` overrides it."""
    head = {"Host": "x", "Content-Type": "application/json", "Content-Length": str(len(body))}
    head.update(headers or {})
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"POST {path} HTTP/1.1\r\n{lines}Connection: close\r\n\r\n".encode() + body


def rest_cases(limit: int) -> list[RestCase]:
    """Cases for a server started with `--rest_api_max_request_bytes=limit`."""
    big = b'{"instances": [' + b"1.0," * (limit // 4) + b"1.0]}"
    bomb = gzip.compress(b" " * (limit * 8) + b'{"instances": [1.0]}')
    deep_dims = b"[" * 70 + b"1.0" + b"]" * 70
    return [
        RestCase("body over the limit", post(big), 413),
        RestCase(
            "gzip inflating past the limit", post(bomb, headers={"Content-Encoding": "gzip"}), 413
        ),
        RestCase(
            "body that is not gzip",
            post(b"not gzip at all", headers={"Content-Encoding": "gzip"}),
            400,
        ),
        RestCase(
            "truncated gzip",
            post(
                gzip.compress(b'{"instances": [1.0]}')[:-12], headers={"Content-Encoding": "gzip"}
            ),
            400,
        ),
        RestCase(
            "Content-Length not a number", post(b"{}", headers={"Content-Length": "abc"}), 400
        ),
        RestCase("Content-Length negative", post(b"{}", headers={"Content-Length": "-5"}), 400),
        RestCase(
            "Content-Length in exponent form", post(b"{}", headers={"Content-Length": "1e3"}), 400
        ),
        RestCase("Content-Length huge", post(b"{}", headers={"Content-Length": str(2**62)}), 413),
        RestCase(
            "chunked body",
            post(
                b"2\r\n{}\r\n0\r\n\r\n",
                headers={"Transfer-Encoding": "chunked", "Content-Length": ""},
            ),
            400,
        ),
        RestCase("10,000-level nesting", post(b"[" * 10000 + b"]" * 10000), 400),
        RestCase(
            "10,000-level nesting inside instances",
            post(b'{"instances": ' + b"[" * 10000 + b"]" * 10000 + b"}"),
            400,
        ),
        RestCase("unclosed 10,000-level nesting", post(b"{" * 10000), 400),
        RestCase("70-dimensional instances", post(b'{"instances": ' + deep_dims + b"}"), 400),
        RestCase("70-dimensional inputs", post(b'{"inputs": ' + deep_dims + b"}"), 400),
        RestCase("5000-digit integer", post(b'{"instances": [' + b"9" * 5000 + b"]}"), 400),
        RestCase("400-digit integer", post(b'{"instances": [' + b"9" * 400 + b"]}"), 400),
        RestCase("5000-digit negative integer", post(b'{"inputs": [-' + b"9" * 5000 + b"]}"), 400),
        RestCase("not JSON", post(b"this is not json"), 400),
        RestCase("empty body", post(b""), 400),
        RestCase("invalid UTF-8", post(b'{"instances": ["\xff\xfe"]}'), 400),
        RestCase("root is an array", post(b"[1.0, 2.0]"), 400),
        # An object, not a list: its quote stops at 256 bytes (a single string value is
        # quoted whole, as TF Serving's writer does, so the case uses many short ones).
        RestCase(
            "instances not a list",
            post(json.dumps({"instances": {f"k{i}": "x" * 100 for i in range(200)}}).encode()),
            400,
        ),
        RestCase(
            "signature_name a big number",
            post(json.dumps({"signature_name": list(range(3000)), "instances": [1.0]}).encode()),
            400,
        ),
        RestCase("ragged instances", post(b'{"instances": [[1.0], [1.0, 2.0]]}'), 400),
        RestCase("string for a float input", post(b'{"instances": ["a"]}'), 400),
        RestCase("empty instances", post(b'{"instances": []}'), 400),
        RestCase("inputs and instances", post(b'{"inputs": [1.0], "instances": [1.0]}'), 400),
        RestCase(
            "unknown model", post(b'{"instances": [1.0]}', path="/v1/models/nope:predict"), 404
        ),
        RestCase(
            "unknown verb", post(b'{"instances": [1.0]}', path=f"/v1/models/{MODEL}:fly"), 400
        ),
        RestCase("unknown signature", post(b'{"signature_name": "nope", "instances": [1.0]}'), 400),
        RestCase(
            "classify body nested 10,000 deep",
            post(
                b'{"examples": ' + b"[" * 10000 + b"]" * 10000 + b"}",
                path=f"/v1/models/{MODEL}:classify",
            ),
            400,
        ),
        RestCase(
            "body shorter than Content-Length",
            post(b'{"instances"', headers={"Content-Length": "200"}),
            408,
        ),
        RestCase(
            "slow header (never finished)", b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHo", None
        ),
    ]


def exchange(port: int, request: bytes, timeout: float) -> tuple[int | None, str]:
    """Send one raw request; (HTTP code, body) or (None, "") if the server closed silently."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    if not data:
        return None, ""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode("utf-8", "replace")


def _tensor(
    dims: list[int], dtype: int = types_pb2.DT_FLOAT, **values: object
) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)  # type: ignore[arg-type]


def _predict(
    x: tensor_pb2.TensorProto | None, model: str = MODEL, **spec: str
) -> Callable[[], predict_pb2.PredictRequest]:
    def build() -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        for key, value in spec.items():
            setattr(request.model_spec, key, value)
        if x is not None:
            request.inputs["x"].CopyFrom(x)
        return request

    return build


def grpc_cases() -> list[GrpcCase]:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return [
        GrpcCase("shape [2^24, 6] without values", _predict(_tensor([2**24, 6])), invalid),
        GrpcCase("shape [2^27, 6] without values", _predict(_tensor([2**27, 6])), invalid),
        GrpcCase("shape [2^40, 6] without values", _predict(_tensor([2**40, 6])), invalid),
        GrpcCase(
            "shape [2^24, 6] with one value",
            _predict(_tensor([2**24, 6], float_val=[1.0])),
            invalid,
        ),
        GrpcCase("shape overflowing int64", _predict(_tensor([2**62, 2**62])), invalid),
        GrpcCase(
            "string shape [2^30] without values",
            _predict(_tensor([2**30], types_pb2.DT_STRING)),
            invalid,
        ),
        GrpcCase("70 dimensions", _predict(_tensor([1] * 70, float_val=[1.0])), invalid),
        GrpcCase("negative dimension", _predict(_tensor([-3], float_val=[1.0])), invalid),
        GrpcCase(
            "tensor_content of the wrong size",
            _predict(_tensor([4], tensor_content=struct.pack("<3f", 1, 2, 3))),
            invalid,
        ),
        GrpcCase(
            "double for a float input",
            _predict(_tensor([1], types_pb2.DT_DOUBLE, double_val=[1.0])),
            invalid,
        ),
        GrpcCase("unknown dtype", _predict(_tensor([1], types_pb2.DT_VARIANT)), invalid),
        GrpcCase("no inputs", _predict(None), invalid),
        GrpcCase(
            "unknown model",
            _predict(_tensor([1], float_val=[1.0]), model="nope"),
            grpc.StatusCode.NOT_FOUND,
        ),
        GrpcCase(
            "unknown signature",
            _predict(_tensor([1], float_val=[1.0]), signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ]


def rest_alive(port: int) -> bool:
    """A valid REST predict answers 200 with the right value."""
    code, body = exchange(port, post(b'{"instances": [2.0]}'), timeout=30)
    return code == 200 and json.loads(body)["predictions"] == [SERVED]


def grpc_alive(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> bool:
    """A valid gRPC predict answers with the right value."""
    response = stub.Predict(_predict(_tensor([1], float_val=[2.0]))(), timeout=30)
    return np.allclose(np.asarray(response.outputs["y"].float_val), [SERVED])


@dataclass
class Outcome:
    name: str
    expected: object
    got: object
    short: bool
    alive: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.expected == self.got and self.short and self.alive


def run_rest(port: int, case: RestCase, read_timeout_s: float) -> Outcome:
    """One REST case on its own connection, then a liveness probe."""
    start = time.monotonic()
    got, body = exchange(port, case.request, timeout=read_timeout_s + 30)
    short = True
    if got is not None:
        try:
            short = len(json.loads(body)["error"]) <= MAX_ERROR_CHARS if got != 200 else True
        except (ValueError, KeyError):
            short = got == 404 and len(body) <= MAX_ERROR_CHARS  # the HTTP server's own 404
    return Outcome(case.name, case.expected, got, short, rest_alive(port), time.monotonic() - start)


def run_grpc(stub: prediction_service_pb2_grpc.PredictionServiceStub, case: GrpcCase) -> Outcome:
    """One gRPC case, then a liveness probe."""
    start = time.monotonic()
    try:
        stub.Predict(case.build(), timeout=30)
        got, short = grpc.StatusCode.OK, True
    except grpc.RpcError as err:
        got, short = err.code(), len(err.details() or "") <= MAX_ERROR_CHARS
    return Outcome(case.name, case.expected, got, short, grpc_alive(stub), time.monotonic() - start)
