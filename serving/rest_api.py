"""TF Serving's REST request dispatcher (`http_rest_api_handler.cc`), free of HTTP plumbing.

(method, path, body) -> (HTTP code, JSON text): routes and error texts follow the real handler;
JSON is decoded by `serving.json_tensor` / `serving.json_examples` and handed to the same core
as gRPC, so both front-ends share every check. The socket side is `serving.rest`.
"""

from __future__ import annotations

import functools
import json
import re
import time
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, regression_pb2

from serving import inference, json_document, json_examples, json_outputs, json_tensor
from serving.errors import ServingError, check_deadline, invalid_argument

_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
"""Paths the API answers; the HTTP server returns its own 404 for anything else."""

# http_server.cc ToHTTPStatusCode.
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class _PathError(ServingError):
    """`ParseModelInfo` failed: TF Serving answers with the status and an empty body."""


_Route = tuple[str, str | None, str | None, str | None]
_CACHED_PATH_CHARS = 256  # longer paths are parsed each time, so the cache stays small


def _parse_route(method: str, path: str) -> _Route | None:
    """(model name, version text, label, verb) of a POST or GET route, names unquoted; None
    for a path neither route takes."""
    if method == "POST":
        match = _PREDICT_RE.fullmatch(path)
    elif method == "GET":
        match = _STATUS_RE.fullmatch(path)
    else:
        return None
    if match is None:
        return None
    name, version_text, label, verb = match.groups()
    return unquote(name) if name else "", version_text, unquote(label) if label else None, verb


_cached_route = functools.lru_cache(maxsize=1024)(_parse_route)


def _route(method: str, path: str) -> _Route | None:
    """`_parse_route`, remembered for the paths clients repeat (two regexes and two unquotes a
    request otherwise, for the metrics and for the dispatch)."""
    if len(path) > _CACHED_PATH_CHARS:
        return _parse_route(method, path)
    return _cached_route(method, path)


def model_and_method(method: str, path: str) -> tuple[str, str]:
    """What `ParseModelInfo` leaves in model_name and method for the request metrics: both
    from the POST route (`predict`/`classify`/`regress`), the name only from a GET route."""
    route = _route(method, path)
    if route is None:
        return "", ""
    name, _, _, verb = route
    return (name, verb or "") if method == "POST" else (name, "")


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before the REST deadline (<= 0: passed, the run is refused)."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    check_deadline(remaining)
    return remaining


class RestApi:
    """The request logic, independent of the HTTP plumbing: (method, path, body) -> (code, JSON)."""

    def __init__(self, core: Any) -> None:
        self.core = core
        # --rest_api_timeout_in_ms becomes the run timeout; 0 or less means none.
        timeout_ms = core.options.rest_api_timeout_in_ms
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None

    def handle_with_status(
        self, method: str, path: str, body: bytes, started: float | None = None
    ) -> tuple[int, str, str]:
        """Answer one /v1/ request: (HTTP code, JSON text, the status code name the request
        counts under: `OK`, `NOT_FOUND`); errors become `{"error": ...}` with the mapped HTTP
        code. The timeout counts from `started` (when the request arrived), so time spent reading
        and decoding counts against it and a request already past it never runs."""
        start = time.monotonic() if started is None else started
        deadline = None if self.timeout_s is None else start + self.timeout_s
        try:
            return 200, self._dispatch(method, path, body, deadline), "OK"
        except ServingError as err:
            # A path that fails ParseModelInfo returns before MakeJsonFromStatus: empty body.
            text = (
                ""
                if isinstance(err, _PathError)
                else json.dumps({"error": err.message}, indent=4, ensure_ascii=False)
            )
            return _HTTP_STATUS.get(err.code, 500), text, err.code.name

    def _dispatch(self, method: str, path: str, body: bytes, deadline: float | None) -> str:
        route = _route(method, path)
        if route is None:
            raise invalid_argument(f"Malformed request: {method} {path}")
        name, version_text, label, verb = route
        version = None
        if version_text:
            version = int(version_text)
            if version > 2**63 - 1:
                raise _PathError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Failed to convert version: {version_text} to numeric.",
                )
        if method == "POST":
            if verb == "predict":
                return self._predict(name, version, label, body, deadline)
            if verb in ("classify", "regress"):
                return self._classify_regress(verb, name, version, label, body, deadline)
            raise invalid_argument(f"Malformed request: {method} {path}")
        if not name:
            raise invalid_argument("Missing model name in request.")
        if verb == "metadata":
            return self._metadata(name, version, label)
        return self._status(name, version)

    def _predict(
        self, name: str, version: int | None, label: str | None, body: bytes, deadline: float | None
    ) -> str:
        doc = json_document.parse_json(body)
        signature_name = json_tensor.fill_signature(doc)
        servable = self.core.servable(name, version, label)
        key = signature_name or "serving_default"
        sig = servable.signature_defs.get(key)
        if sig is None:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        infos = dict(sig.inputs)
        if not infos:
            raise invalid_argument(
                f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
            )
        inputs, row_format = json_tensor.predict_inputs(doc, infos)
        outputs = inference.predict_arrays(servable, key, inputs, timeout_s=_remaining(deadline))
        return json_outputs.predict_response_json(outputs, row_format)

    def _classify_regress(
        self,
        verb: str,
        name: str,
        version: int | None,
        label: str | None,
        body: bytes,
        deadline: float | None,
    ) -> str:
        """Body -> ClassificationRequest/RegressionRequest, then the same code path as gRPC."""
        doc = json_document.parse_json(body)
        signature_name = json_tensor.fill_signature(doc)
        inp = json_examples.examples_input(doc)
        servable = self.core.servable(name, version, label)
        if verb == "classify":
            request = classification_pb2.ClassificationRequest(input=inp)
            request.model_spec.name, request.model_spec.signature_name = name, signature_name
            response = inference.classify(servable, request, _remaining(deadline))
            return json_examples.classification_json(response.result)
        request = regression_pb2.RegressionRequest(input=inp)
        request.model_spec.name, request.model_spec.signature_name = name, signature_name
        response = inference.regress(servable, request, _remaining(deadline))
        return json_examples.regression_json(response.result)

    def _status(self, name: str, version: int | None) -> str:
        response = self.core.model_status(name, version)
        return json.dumps(
            json_format.MessageToDict(response, always_print_fields_with_no_presence=True),
            indent=2,
        )

    def _metadata(self, name: str, version: int | None, label: str | None) -> str:
        servable = self.core.servable(name, version, label)
        response = self.core.model_metadata(servable)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        options = {
            "preserving_proto_field_name": True,
            "always_print_fields_with_no_presence": True,
        }
        document = {
            "model_spec": json_format.MessageToDict(response.model_spec, **options),
            "metadata": {"signature_def": json_format.MessageToDict(sig_map, **options)},
        }
        return json.dumps(document, indent=2)
