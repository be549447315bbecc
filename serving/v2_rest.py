"""The Open Inference Protocol's HTTP/REST binding (`/v2/...`) over `serving.open_inference`.

(method, path, headers, body) -> (HTTP code, headers, body), routed and parsed as Triton's
`http_server.cc` does: its route regexes, the JSON request fields and their error texts
(`ParseJsonTritonIO`, `ReadDataFromJson`, TritonJson's accessors), and the binary tensor data
extension (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`,
`binary_data_output`; docs/protocol/extension_binary_data.md). Errors are `{"error": "..."}`.
Where Triton answers a malformed request body with 500 (its JSON helper reports every parse
failure as INTERNAL), this binding answers 400, as KServe's server does for invalid input. One
job past ~400 lines: the routes, the request parser and the response writer share Triton's
field rules and the binary layout, and splitting them would split those."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np
from google.protobuf import json_format

from serving import v2_types
from serving.errors import ServingError, invalid_argument
from serving.open_inference import (
    DataPlane,
    InferInput,
    InferRequest,
    InferResponse,
    http_status,
)

V2_PATH = re.compile(r"/v2(?:/.*)?", re.DOTALL)
_MODEL = re.compile(
    r"/v2/models/([^/]+)(?:/versions/([0-9]+))?"
    r"(?:/(infer|generate|generate_stream|ready|config|stats|trace/setting))?"
)
_HEALTH = re.compile(r"/v2(?:/health/(live|ready))?")
# Triton's other extension routes (repository, shared memory, trace, logging, statistics).
_EXTENSIONS = re.compile(
    r"/v2/(?:repository(?:/.*)?|systemsharedmemory(?:/.*)?|cudasharedmemory(?:/.*)?"
    r"|trace/setting|logging|models/stats)"
)
_UNSUPPORTED = "(extensions: binary_tensor_data, model_configuration)"
HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
_STOI = re.compile(r"\s*[+-]?\d+")
INT32_MAX = 2**31 - 1

log = logging.getLogger(__name__)


@dataclass
class RestReply:
    """One answer: HTTP code, body, extra headers, and what the metrics count it under."""

    code: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def _json(document: Any, code: int = 200) -> RestReply:
    return RestReply(code, json.dumps(document, separators=(",", ":")).encode())


def error_reply(message: str, code: int) -> RestReply:
    """Triton's `EVBufferAddErrorJson`."""
    return _json({"error": message}, code)


def _parse_error(field: str, what: str) -> ServingError:
    """`RETURN_MSG_IF_ERR(..., "Unable to parse 'field'")` over a TritonJson accessor error."""
    return invalid_argument(f"Unable to parse '{field}': {what}")


_NOT_STRING = "attempt to access JSON non-string as string"
_NOT_ARRAY = "attempt to access JSON non-array as array"
_NOT_BOOL = "attempt to access JSON non-boolean as boolean"
_NOT_UINT = "attempt to access JSON non-unsigned-integer as unsigned-integer"
_NOT_INT = "attempt to access JSON non-signed-integer as signed-integer"
_NOT_NUMBER = "attempt to access JSON non-number as double"


def _member(obj: Any, name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """A required member of `kind` (`MemberAsString`/`MemberAsArray` and their errors)."""
    if not isinstance(obj, dict) or name not in obj:
        raise _parse_error(name, f"attempt to access non-existing object member '{name}'")
    value = obj[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _parse_error(name, what)
    return value


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _flatten(data: list[Any]) -> list[Any]:
    """Nested JSON arrays in row-major order (Triton's helper recurses the same way)."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _json_tensor(name: str, datatype: str, count: int, data: list[Any]) -> bytes:
    """`ReadDataFromJson`: typed JSON values as tensor bytes."""
    if datatype in ("FP16", "BF16"):
        raise invalid_argument(
            f"receiving {datatype} data via JSON is not supported. Please use the binary data "
            f"format for input {name}"
        )
    if datatype not in v2_types.NUMPY:
        raise invalid_argument(f"invalid datatype for input {name}")
    values = _flatten(data)
    if datatype == "BOOL":
        ok, what = all(isinstance(v, bool) for v in values), _NOT_BOOL
    elif datatype.startswith("UINT"):
        ok, what = all(_is_uint(v) for v in values), _NOT_UINT
    elif datatype.startswith("INT"):
        ok = all(
            isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63 for v in values
        )
        what = _NOT_INT
    elif datatype == v2_types.BYTES:
        ok, what = all(isinstance(v, str) for v in values), _NOT_STRING
    else:
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        what = _NOT_NUMBER
    if not ok:
        raise _parse_error("data", what)
    if len(values) != count:
        raise invalid_argument("Failed to parse 'data' field: shape does not match true shape")
    if datatype == v2_types.BYTES:
        return v2_types.encode_bytes(values)
    # Integers wrap to the target width as Triton's C++ casts do.
    wide = np.uint64 if datatype.startswith("UINT") else np.int64
    source = np.array(values, dtype=wide if datatype[0] in "UI" else None)
    return v2_types.encode(source.astype(v2_types.NUMPY[datatype]), datatype)


def _header_length(headers: Mapping[str, str], content_length: int) -> int:
    """`GetInferenceHeaderLength`: the JSON's length (the whole body if the header is absent)."""
    text = headers.get(HEADER_LENGTH)
    if text is None:
        return content_length
    match = _STOI.match(text)
    if match is None:
        raise invalid_argument(f"Unable to parse {HEADER_LENGTH}, got: {text}")
    value = int(match.group())
    if not -(2**31) <= value <= INT32_MAX:
        raise invalid_argument(
            f"Unable to parse {HEADER_LENGTH}, value is out of range [ -2147483648, 2147483647 ]"
            f", got: {text}"
        )
    if value < 0 or value > content_length:
        raise invalid_argument(
            f"inference header size should be in range (0, {content_length}), got: {text}"
        )
    return value


def _parameters(doc: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`ParseJsonTritonParams`: the request parameters and the default output kind."""
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise invalid_argument("failed to get request params.")
    binary = False
    for key, value in params.items():
        if key == "binary_data_output":
            if not isinstance(value, bool):
                raise _parse_error(key, _NOT_BOOL)
            binary = value
        elif key in ("timeout", "priority") and not _is_uint(value):
            raise _parse_error(key, _NOT_UINT)
        elif key.startswith("triton_"):
            raise invalid_argument(
                "parameter keys starting with 'triton_' are reserved for Triton usage and should "
                "not be specified."
            )
    return params, binary


def _inputs(doc: dict[str, Any], binary: memoryview, model: str) -> list[InferInput]:
    """`ParseJsonTritonIO` for the inputs: JSON `data` or the next `binary_data_size` bytes."""
    items = _member(doc, "inputs", list, _NOT_ARRAY)
    inputs: list[InferInput] = []
    offset = 0
    for item in items:
        params = item.get("parameters", {}) if isinstance(item, dict) else {}
        params = params if isinstance(params, dict) else {}
        fields = [
            f
            for f, present in (
                ("'data'", isinstance(item, dict) and "data" in item),
                ("'binary_data_size'", "binary_data_size" in params),
                ("'shared_memory_region'", "shared_memory_region" in params),
            )
            if present
        ]
        if len(fields) != 1:
            raise invalid_argument(
                "Input must set only one of the following fields: 'data', 'binary_data_size' in "
                "'parameters', 'shared_memory_region' in 'parameters'. But"
                + (" set " + " ".join(fields) if fields else " no field is set")
            )
        name = _member(item, "name", str, _NOT_STRING)
        datatype = _member(item, "datatype", str, _NOT_STRING)
        dims = _member(item, "shape", list, _NOT_ARRAY)
        if not all(_is_uint(d) for d in dims):
            raise _parse_error("shape", _NOT_UINT)
        shape = tuple(dims)
        if "shared_memory_region" in params:
            raise invalid_argument(
                f"Unable to find system shared memory region: "
                f"'{params['shared_memory_region']}' (this server has no shared memory extension)"
            )
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not _is_uint(size):
                raise _parse_error("binary_data_size", _NOT_UINT)
            available = len(binary) - offset
            if size > available:
                raise invalid_argument(
                    f"unexpected size for input '{name}', expecting {size - available} additional "
                    f"bytes for model '{model}'"
                )
            data = bytes(binary[offset : offset + size])
            offset += size
        else:
            count = int(np.prod(shape, dtype=object)) if shape else 1
            data = (
                b""
                if count == 0
                else _json_tensor(name, datatype, count, _member(item, "data", list, _NOT_ARRAY))
            )
        inputs.append(InferInput(name, datatype, shape, data))
    if offset != len(binary):
        raise invalid_argument(f"unexpected additional input data for model '{model}'")
    return inputs


def _outputs(doc: dict[str, Any], default_binary: bool) -> tuple[list[str], dict[str, bool]]:
    """The requested outputs and which of them go back as binary data."""
    if "outputs" not in doc:
        return [], {}
    items = _member(doc, "outputs", list, _NOT_ARRAY)
    names: list[str] = []
    binary: dict[str, bool] = {}
    for item in items:
        name = _member(item, "name", str, _NOT_STRING)
        params = item.get("parameters", {})
        params = params if isinstance(params, dict) else {}
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in params:
                raise invalid_argument(
                    f"output '{name}' asks for '{unsupported}', which this server does not "
                    "support (extensions: binary_tensor_data, model_configuration)"
                )
        flag = params.get("binary_data", default_binary)
        if not isinstance(flag, bool):
            raise _parse_error("binary_data", _NOT_BOOL)
        names.append(name)
        binary[name] = flag
    return names, binary


def parse_infer(
    model: str, version: str, headers: Mapping[str, str], body: bytes
) -> tuple[InferRequest, dict[str, bool], bool]:
    """An infer body as an InferRequest, the per-output binary choice and the default one."""
    length = _header_length(headers, len(body))
    if length == 0:  # a raw binary request: the body is the single input; outputs binary
        return InferRequest(model, version, raw_input=body), {}, True
    try:
        doc = json.loads(body[:length])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = getattr(e, "pos", getattr(e, "start", 0))
        reason = getattr(e, "msg", str(e))
        raise invalid_argument(
            f"failed to parse the request JSON buffer: {reason} at {where}"
        ) from None
    if not isinstance(doc, dict):
        raise _parse_error("inputs", "attempt to access non-existing object member 'inputs'")
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise _parse_error("id", _NOT_STRING)
    params, default_binary = _parameters(doc)
    inputs = _inputs(doc, memoryview(body)[length:], model)
    outputs, binary = _outputs(doc, default_binary)
    request = InferRequest(model, version, request_id, inputs, outputs, params)
    return request, binary, default_binary


def _json_data(name: str, datatype: str, array: np.ndarray) -> list[Any]:
    """`WriteDataToJson`: a flat list of the output's values."""
    if datatype in ("FP16", "BF16"):
        raise invalid_argument(
            f"sending {datatype} data via JSON is not supported. Please use the binary data "
            "format for output"
        )
    flat = array.ravel()
    if datatype == v2_types.BYTES:
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
        except UnicodeDecodeError:
            raise invalid_argument(
                f"output '{name}' holds bytes that are not UTF-8 text: request it with "
                "'binary_data': true"
            ) from None
    if datatype in ("FP32", "FP64"):
        return flat.astype(np.float64).tolist()
    return flat.tolist()


def response_reply(
    response: InferResponse, binary: Mapping[str, bool], default_binary: bool
) -> RestReply:
    """`FinalizeResponse`: the JSON header, then binary outputs in output order."""
    document: dict[str, Any] = {}
    if response.id:
        document["id"] = response.id
    document["model_name"] = response.model
    document["model_version"] = str(response.version)
    outputs, chunks = [], []
    for out in response.outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.shape),
        }
        if binary.get(out.name, default_binary):
            data = out.data()
            entry["parameters"] = {"binary_data_size": len(data)}
            if data:
                chunks.append(data)
        else:
            entry["data"] = _json_data(out.name, out.datatype, out.array)
        outputs.append(entry)
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return RestReply(200, header)
    return RestReply(
        200, header + b"".join(chunks), BINARY_TYPE, ((HEADER_LENGTH, str(len(header))),)
    )


def _config_json(config: Any) -> dict[str, Any]:
    """`ModelConfigToJson`: proto field names, int64 values as JSON numbers."""
    document = json_format.MessageToDict(config, preserving_proto_field_name=True)

    def numbers(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        if isinstance(value, list):
            return [numbers(v) for v in value]
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
        return value

    return numbers(document)


class V2Rest:
    """The `/v2` routes of one server (`serving.rest` hands every `/v2...` path here)."""

    def __init__(self, core: Any, timeout_s: float | None) -> None:
        self.plane = DataPlane(core)
        self.timeout_s = timeout_s

    def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, remaining_s: Any
    ) -> RestReply:
        """One request; `remaining_s()` is the time left before the REST deadline (or None)."""
        try:
            return self._route(method, path, headers, body, remaining_s)
        except ServingError as e:
            return error_reply(e.message, http_status(e))
        except Exception as e:  # a bug in one request must still get an answer, not a reset
            log.exception("REST %s %s failed", method, path)
            return error_reply(f"{type(e).__name__}: {e}", 500)

    def _route(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, remaining_s: Any
    ) -> RestReply:
        if _EXTENSIONS.fullmatch(path):  # checked first, as Triton checks /v2/models/stats
            return error_reply(f"{path} is not supported by this server {_UNSUPPORTED}", 501)
        match = _MODEL.fullmatch(path)
        if match:
            name, version, kind = unquote(match.group(1)), match.group(2) or "", match.group(3)
            wanted = "POST" if kind == "infer" else "GET"
            if kind not in (None, "ready", "config", "infer"):
                return error_reply(f"'{kind}' is not supported by this server {_UNSUPPORTED}", 501)
            if method != wanted:
                return error_reply("Method Not Allowed", 405)
            if kind == "infer":
                self.plane.servable(name, version)  # Triton looks the model up first
                request, binary, default_binary = parse_infer(name, version, headers, body)
                response = self.plane.infer(request, remaining_s(), "REST")
                return response_reply(response, binary, default_binary)
            if kind == "ready":
                self.plane.model_ready(name, version)
                return _json({"name": name, "ready": True})
            if kind == "config":
                return _json(_config_json(self.plane.model_config(name, version)))
            return _json(self.plane.model_metadata(name, version))
        health = _HEALTH.fullmatch(path)
        if health is None:
            return error_reply("Not Found", 404)
        if method != "GET":
            return error_reply("Method Not Allowed", 405)
        kind = health.group(1)
        if kind == "live":
            return _json({"live": self.plane.live()})
        if kind == "ready":
            ready = self.plane.ready()
            return _json({"ready": ready}, 200 if ready else 400)
        return _json(self.plane.server_metadata())
