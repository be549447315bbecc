"""TF Serving's REST API (`--rest_api_port`) over the stdlib HTTP server, in front of ServerCore.

Routes, JSON tensor formats, error texts and HTTP codes follow `http_rest_api_handler.cc`,
`http_rest_api_util.cc`, `util/json_tensor.cc` and `http_server.cc`, so a client written
against the real server cannot tell the difference. JSON is decoded with the signature's dtypes
into numpy and handed to the same core as gRPC, so both front-ends share every check.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import logging
import math
import re
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    input_pb2,
    regression_pb2,
)

from serving import inference, tensor_proto
from serving.errors import ServingError

log = logging.getLogger(__name__)

_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)

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

# rapidjson's GetParseError_En texts for what Python's json module reports.
_PARSE_ERRORS = {
    "Expecting value": "Invalid value.",
    "Extra data": "The document root must not be followed by other values.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Invalid control character at": "Invalid encoding in string.",
}

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_INT_RANGES = {
    types_pb2.DT_INT32: _INT32,
    types_pb2.DT_INT16: _INT32,
    types_pb2.DT_INT8: _INT32,
    types_pb2.DT_UINT8: _INT32,
    types_pb2.DT_INT64: _INT64,
    types_pb2.DT_UINT32: _UINT32,
    types_pb2.DT_UINT64: _UINT64,
}
_FLOAT_DIGITS = {types_pb2.DT_FLOAT: 24, types_pb2.DT_DOUBLE: 53}
_FLOAT_MAX = {types_pb2.DT_FLOAT: float(np.finfo(np.float32).max), types_pb2.DT_DOUBLE: math.inf}


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _status_string(err: ServingError) -> str:
    """absl Status::ToString, used where TF Serving nests one error inside another."""
    return f"{err.code.name}: {err.message}"


# --- JSON -> numpy (json_tensor.cc FillPredictRequestFromJson) ----------------------------------


def _json_type(val: Any) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _json_text(val: Any) -> str:
    """JsonValueToString: rapidjson's PrettyWriter output (4-space indent) of a value."""
    if isinstance(val, float):
        return _format_float(val, types_pb2.DT_DOUBLE)
    return json.dumps(val, indent=4, ensure_ascii=False)


def _format_error(doc: Any, *parts: str) -> ServingError:
    return _invalid(f"JSON Value: {_json_text(doc)} " + "".join(parts))


def _type_error(val: Any, dtype: int) -> ServingError:
    return _invalid(
        f"JSON Value: {_json_text(val)} Type: {_json_type(val)} is not of expected type: "
        f"{tensor_proto.type_name(dtype)}"
    )


def _is_b64_object(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def _decode_b64(val: Any) -> bytes:
    if not _is_b64_object(val):
        raise _invalid(f"JSON Value: {_json_text(val)} not formatted correctly for base64 data")
    text = val["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise _invalid("Unable to base64 decode") from None


def _convert_scalar(val: Any, dtype: int) -> Any:
    """AddValueToTensor: one JSON leaf checked and converted for a signature dtype."""
    if isinstance(val, dict):
        if dtype == types_pb2.DT_STRING:
            return _decode_b64(val)
        raise _type_error(val, dtype)
    is_number = isinstance(val, int | float) and not isinstance(val, bool)
    if dtype in _FLOAT_DIGITS:
        if not is_number:
            raise _type_error(val, dtype)
        if not _lossless(val, dtype):
            name = "float" if dtype == types_pb2.DT_FLOAT else "double"
            raise _invalid(
                f"Cannot convert JSON value: {_json_text(val)} to {name} without loss of precision."
            )
        return val
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        if not (isinstance(val, int) and not isinstance(val, bool) and lo <= val <= hi):
            raise _type_error(val, dtype)
        return val
    if dtype == types_pb2.DT_STRING:
        if not isinstance(val, str):
            raise _type_error(val, dtype)
        return val.encode("utf-8")
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(val, bool):
            raise _type_error(val, dtype)
        return val
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {_json_text(val)} to type: {tensor_proto.type_name(dtype)}",
    )


def _lossless(val: float | int, dtype: int) -> bool:
    """IsLosslessDecimal: integers must fit the mantissa, decimals the finite range."""
    if isinstance(val, float) and not math.isfinite(val):
        return True
    if isinstance(val, int) and -(2**63) <= val < 2**64:
        return abs(val) <= (1 << _FLOAT_DIGITS[dtype]) - 1
    limit = _FLOAT_MAX[dtype]
    return -limit <= float(val) <= limit


def _dense_shape(val: Any) -> list[int]:
    """GetDenseTensorShape: follow the first element of every nested list."""
    shape: list[int] = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fill(val: Any, level: int, shape: Sequence[int], dtype: int, out: list[Any]) -> None:
    """FillTensorProto: every leaf at depth == rank, every list of the size its level expects."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise _invalid(
                f"JSON Value: {_json_text(val)} found at incorrect level: {level + 1} in the JSON "
                f"DOM. Expected at level: {rank}"
            )
        out.append(_convert_scalar(val, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(val)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    if level == rank - 1:
        for leaf in val:
            if isinstance(leaf, list):
                raise _invalid(f"Encountered list at unexpected level: {rank} expected < {rank}")
            out.append(_convert_scalar(leaf, dtype))
        return
    for item in val:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(values: list[Any], shape: Sequence[int], dtype: int) -> np.ndarray:
    np_dtype = tensor_proto.numpy_dtype(dtype)
    if np_dtype == np.dtype(object):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr.reshape(shape)
    if dtype in (types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8):
        # int_val carries int32; Tensor::FromProto narrows with a C cast.
        return np.array(values, dtype=np.int32).astype(np_dtype).reshape(shape)
    return np.array(values, dtype=np_dtype).reshape(shape)


def _tensor(val: Any, dtype: int) -> tuple[np.ndarray, list[int]]:
    shape = _dense_shape(val)
    values: list[Any] = []
    _fill(val, 0, shape, dtype, values)
    return _to_array(values, shape, dtype), shape


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _instances(
    instances: list[Any], infos: dict[str, meta_graph_pb2.TensorInfo]
) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: stack rows (values, or objects for several inputs)."""
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )

    def is_element_object(v: Any) -> bool:
        return isinstance(v, dict) and not _is_b64_object(v)

    objects = is_element_object(instances[0])
    names = sorted(infos)
    rows: dict[str, list[np.ndarray]] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add(item: Any, name: str) -> None:
        if name not in infos:
            raise _invalid(f"JSON object: does not have named input: {name}")
        arr, shape = _tensor(item, infos[name].dtype)
        if name not in sizes:
            sizes[name], shapes[name] = arr.size, shape
        elif sizes[name] != arr.size:
            raise _invalid(f"Expecting tensor size: {sizes[name]} but got: {arr.size}")
        elif shapes[name] != shape:
            raise _invalid(
                f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}"
            )
        rows.setdefault(name, []).append(arr)

    for i, elem in enumerate(instances):
        if objects:
            if not is_element_object(elem):
                raise _invalid(f"Expecting object but got list at item {i} of input list")
            for key, item in elem.items():
                try:
                    add(item, key)
                except ServingError as err:
                    raise _invalid(
                        f"Failed to process element: {i} key: {key} of 'instances' list. "
                        f"Error: {_status_string(err)}"
                    ) from None
            if set(elem) != set(names):
                raise _invalid(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{_json_text(elem)} keys must be equal to: {','.join(names)}"
                )
        else:
            if is_element_object(elem):
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(elem, names[0])
            except ServingError as err:
                raise _invalid(
                    f"Failed to process element: {i} of 'instances' list. "
                    f"Error: {_status_string(err)}"
                ) from None
    return {name: np.stack(parts) for name, parts in rows.items()}


def _columnar(val: Any, infos: dict[str, meta_graph_pb2.TensorInfo]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: one value for one input, or an object keyed by input name."""
    if not isinstance(val, dict) or _is_b64_object(val):
        if len(infos) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name, info = next(iter(infos.items()))
        return {name: _tensor(val, info.dtype)[0]}
    tensors: dict[str, np.ndarray] = {}
    for name in sorted(infos):
        if name not in val:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor(val[name], infos[name].dtype)[0]
    return tensors


def _parse_json(body: bytes) -> Any:
    """ParseJson: rapidjson's wording for empty and malformed documents; the root is an object."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _invalid(
            f"JSON Parse error: Invalid encoding in string. at offset: {err.start}"
        ) from None
    if not text.strip():
        raise _invalid(f"JSON Parse error: The document is empty. at offset: {len(text)}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise _invalid(
            f"JSON Parse error: {_rapidjson_message(err)} at offset: {err.pos}"
        ) from None
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def _rapidjson_message(err: json.JSONDecodeError) -> str:
    if err.msg == "Expecting ',' delimiter":
        opener = _innermost_open(err.doc, err.pos)
        if opener == "{":
            return "Missing a comma or '}' after an object member."
        return "Missing a comma or ']' after an array element."
    return _PARSE_ERRORS.get(err.msg, err.msg + ".")


def _innermost_open(text: str, pos: int) -> str:
    """The bracket that encloses `pos` (strings skipped), to word a missing-comma error."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


# --- numpy -> JSON (json_tensor.cc MakeJsonFromTensors) -----------------------------------------


def _format_float(val: float, dtype: int) -> str:
    """WriteDecimal: `%g` if it round-trips, else max_digits10; `.0` on whole numbers."""
    if math.isnan(val):
        return "NaN"
    if math.isinf(val):
        return "-Infinity" if val < 0 else "Infinity"
    text = f"{val:g}"
    if dtype == types_pb2.DT_DOUBLE:
        if float(text) != val:
            text = f"{val:.17g}"
    elif np.float32(text) != np.float32(val):
        text = f"{val:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _scalar_writer(name: str, array: np.ndarray) -> Any:
    """AddSingleValueAndAdvance for one tensor: a function from an element to its JSON text."""
    dtype = tensor_proto.data_type(array)
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_HALF):
        return lambda v: _format_float(float(v), types_pb2.DT_FLOAT)
    if dtype == types_pb2.DT_DOUBLE:
        return lambda v: _format_float(float(v), types_pb2.DT_DOUBLE)
    if dtype in (
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_INT64,
        types_pb2.DT_UINT32,
        types_pb2.DT_UINT64,
    ):
        return lambda v: str(int(v))
    if dtype == types_pb2.DT_BOOL:
        return lambda v: "true" if v else "false"
    if dtype == types_pb2.DT_STRING:
        if name.endswith("_bytes"):
            return lambda v: json.dumps({"b64": base64.b64encode(_as_bytes(v)).decode("ascii")})
        return lambda v: json.dumps(_as_bytes(v).decode("utf-8", "replace"), ensure_ascii=False)
    raise _invalid(f"Failed to write JSON value for tensor type: {tensor_proto.type_name(dtype)}")


def _as_bytes(v: Any) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def _values_json(array: Any, write: Any) -> str:
    """AddTensorValues: nested JSON lists for an array, a bare value for a scalar."""
    if not isinstance(array, np.ndarray):  # an element of an object (string) array
        return write(array)
    if array.ndim == 0:
        return write(array.item() if array.dtype != object else array[()])
    if array.ndim == 1:
        return "[" + ", ".join(write(v) for v in array.tolist()) + "]"
    return "[" + ", ".join(_values_json(sub, write) for sub in array) + "]"


def _row_json(outputs: dict[str, np.ndarray]) -> str:
    batch = -1
    for name in sorted(outputs):
        array = np.asarray(outputs[name])
        if array.ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and batch != array.shape[0]:
            raise _invalid(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    writers = {name: _scalar_writer(name, np.asarray(a)) for name, a in outputs.items()}
    rows = []
    for i in range(batch):
        if len(outputs) > 1:
            fields = ", ".join(
                f"{json.dumps(name)}: {_values_json(np.asarray(outputs[name])[i], writers[name])}"
                for name in sorted(outputs)
            )
            rows.append("{" + fields + "}")
        else:
            ((name, array),) = outputs.items()
            rows.append(_values_json(np.asarray(array)[i], writers[name]))
    return '{\n    "predictions": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"


def _columnar_json(outputs: dict[str, np.ndarray]) -> str:
    parts = {
        name: _values_json(np.asarray(a), _scalar_writer(name, np.asarray(a)))
        for name, a in outputs.items()
    }
    if len(parts) == 1:
        (value,) = parts.values()
        return '{\n    "outputs": ' + value + "\n}"
    fields = ",\n        ".join(f"{json.dumps(n)}: {parts[n]}" for n in sorted(parts))
    return '{\n    "outputs": {\n        ' + fields + "\n    }\n}"


# --- classify / regress (json_tensor.cc FillClassifyRegressRequestFromJson) ---------------------

_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add_feature_value(val: Any, name: str, feature: feature_pb2.Feature) -> None:
    """AddValueToFeature: the first value fixes the feature's kind; later ones must agree."""

    def kind_is(kind: str) -> None:
        current = feature.WhichOneof("kind")
        if current not in (None, kind):
            raise _invalid(
                f"Unexpected element type in feature: {name} expecting type: "
                f"{_KIND_NAMES[current]}"
            )

    if val is None or isinstance(val, list) or (isinstance(val, dict) and not _is_b64_object(val)):
        raise _invalid(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(val)}"
        )
    if isinstance(val, bool):
        kind_is("int64_list")
        feature.int64_list.value.append(int(val))
    elif isinstance(val, dict):
        kind_is("bytes_list")
        feature.bytes_list.value.append(_decode_b64(val))
    elif isinstance(val, str):
        kind_is("bytes_list")
        feature.bytes_list.value.append(val.encode("utf-8"))
    elif isinstance(val, float) or not -(2**63) <= val < 2**64:
        kind_is("float_list")
        if not _lossless(val, types_pb2.DT_FLOAT):
            raise _invalid(
                f"Cannot convert JSON value: {_json_text(val)} to float without loss of precision."
            )
        feature.float_list.value.append(float(val))
    else:
        kind_is("int64_list")
        if val > 2**63 - 1:
            raise _invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(val)


def _example(val: Any, example: example_pb2.Example) -> None:
    """MakeExampleFromJsonObject: {feature: value | [values]}."""
    if not isinstance(val, dict):
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(val)}")
    for name, content in val.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def _examples_input(doc: dict[str, Any]) -> input_pb2.Input:
    """The `Input` of a classify/regress body: optional `context`, required `examples`."""
    inp = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _example(doc["context"], inp.example_list_with_context.context)
    if "examples" not in doc:
        # Sic: the real server says "classify" for regress requests too.
        raise _format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    target = inp.example_list_with_context if has_context else inp.example_list
    for item in examples:
        _example(item, target.examples.add())
    return inp


def _classification_json(result: classification_pb2.ClassificationResult) -> str:
    if not result.classifications:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    rows = [
        "[" + ", ".join(
            f"[{json.dumps(c.label, ensure_ascii=False)}, "
            f"{_format_float(c.score, types_pb2.DT_FLOAT)}]"
            for c in classifications.classes
        ) + "]"
        for classifications in result.classifications
    ]
    return '{\n    "results": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"


def _regression_json(result: regression_pb2.RegressionResult) -> str:
    if not result.regressions:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    values = ", ".join(_format_float(r.value, types_pb2.DT_FLOAT) for r in result.regressions)
    return '{\n    "results": [' + values + "]\n}"


# --- request handling ----------------------------------------------------------------------------


def _signature_name(doc: dict[str, Any]) -> str:
    """FillSignature: optional, but a string when present."""
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _format_error(
            doc, "not formatted correctly. 'signature_name' key must be a string value."
        )
    return signature_name



class RestApi:
    """The request logic, independent of the HTTP plumbing: (method, path, body) -> (code, JSON)."""

    def __init__(self, core: Any) -> None:
        self.core = core
        # --rest_api_timeout_in_ms becomes the run timeout; 0 or less means none.
        timeout_ms = core.options.rest_api_timeout_in_ms
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        """Answer one /v1/ request; errors become `{"error": ...}` with the mapped HTTP code."""
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as err:
            return _HTTP_STATUS.get(err.code, 500), json.dumps(
                {"error": err.message}, indent=4, ensure_ascii=False
            )

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        malformed = _invalid(f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICT_RE.fullmatch(path)
        elif method == "GET":
            match = _STATUS_RE.fullmatch(path)
        else:
            raise malformed
        if match is None:
            raise malformed
        name, version_text, label, verb = match.groups()
        name = unquote(name) if name else ""
        version = None
        if version_text:
            version = int(version_text)
            if version > 2**63 - 1:
                raise _invalid(f"Failed to convert version: {version_text} to numeric.")
        label = unquote(label) if label else None
        if method == "POST":
            if verb == "predict":
                return self._predict(name, version, label, body)
            if verb in ("classify", "regress"):
                return self._classify_regress(verb, name, version, label, body)
            raise malformed
        if not name:
            raise _invalid("Missing model name in request.")
        if verb == "metadata":
            return self._metadata(name, version, label)
        return self._status(name, version)

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes) -> str:
        doc = _parse_json(body)
        signature_name = _signature_name(doc)
        servable = self.core.servable(name, version, label)
        key = signature_name or "serving_default"
        sig = servable.signature_defs.get(key)
        if sig is None:
            raise _invalid(f'Serving signature name: "{key}" not found in signature def')
        infos = dict(sig.inputs)
        if not infos:
            raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
        if "instances" in doc:
            if "inputs" in doc:
                raise _format_error(
                    doc,
                    "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                    "keys to exist ",
                )
            instances = doc["instances"]
            if not isinstance(instances, list):
                raise _format_error(doc, "Excepting 'instances' to be an list/array")
            if not instances:
                raise _format_error(doc, "No values in 'instances' array")
            inputs, row_format = _instances(instances, infos), True
        elif "inputs" in doc:
            inputs, row_format = _columnar(doc["inputs"], infos), False
        else:
            raise _invalid("Missing 'inputs' or 'instances' key")
        outputs = self.core.predict_arrays(servable, key, inputs, timeout_s=self.timeout_s)
        if not outputs:
            raise _invalid("Cannot convert empty tensor map to JSON")
        return _row_json(outputs) if row_format else _columnar_json(outputs)

    def _classify_regress(
        self, verb: str, name: str, version: int | None, label: str | None, body: bytes
    ) -> str:
        """Body -> ClassificationRequest/RegressionRequest, then the same code path as gRPC."""
        doc = _parse_json(body)
        signature_name = _signature_name(doc)
        inp = _examples_input(doc)
        servable = self.core.servable(name, version, label)
        if verb == "classify":
            request = classification_pb2.ClassificationRequest(input=inp)
            request.model_spec.name, request.model_spec.signature_name = name, signature_name
            response = inference.classify(servable, request, self.timeout_s)
            return _classification_json(response.result)
        request = regression_pb2.RegressionRequest(input=inp)
        request.model_spec.name, request.model_spec.signature_name = name, signature_name
        return _regression_json(inference.regress(servable, request, self.timeout_s).result)

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
        if not _V1_RE.fullmatch(path):
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
