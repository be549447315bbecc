"""TF Serving's JSON -> tensor decoding for the REST predict API (`util/json_tensor.cc`
`FillPredictRequestFromJson`).

JSON documents (parsed by `serving.json_document`, rapidjson) are decoded with the signature's
dtypes into numpy (row "instances" or columnar "inputs" format), with the real server's checks
in its order, so its error texts are what a client sees. Outputs are written back by
`serving.json_outputs`; classify/regress bodies are in `serving.json_examples`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving import limits, tensor_proto
from serving.errors import ServingError, invalid_argument
from serving.json_document import format_error, json_text

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
FLOAT_TYPES = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)


# --- JSON -> numpy (json_tensor.cc FillPredictRequestFromJson) ----------------------------------


def json_type(val: Any) -> str:
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


def _type_error(val: Any, dtype: int) -> ServingError:
    return format_error(
        val, f"Type: {json_type(val)} is not of expected type: {tensor_proto.type_name(dtype)}"
    )


def is_b64_object(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def decode_b64(val: Any) -> bytes:
    if not is_b64_object(val):
        raise format_error(val, "not formatted correctly for base64 data")
    text = val["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise invalid_argument("Unable to base64 decode") from None


def _convert_scalar(val: Any, dtype: int) -> Any:
    """AddValueToTensor: one JSON leaf checked and converted for a signature dtype."""
    if isinstance(val, dict):
        if dtype == types_pb2.DT_STRING:
            return decode_b64(val)
        raise _type_error(val, dtype)
    is_number = isinstance(val, int | float) and not isinstance(val, bool)
    if dtype in FLOAT_TYPES:
        if not is_number:
            raise _type_error(val, dtype)
        # `GetFloat()` / `GetDouble()`: no precision check since TF Serving 2.5 (1e39 -> inf).
        return float(val)
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
        f"Conversion of JSON Value: {json_text(val)} to type: {tensor_proto.type_name(dtype)}",
    )


# TensorShape::MaxDimensions(): past it `Tensor::FromProto` fails ("tensor parsing error").
TF_MAX_RANK = 254


def _dense_shape(val: Any) -> list[int]:
    """GetDenseTensorShape: follow the first element of every nested list."""
    shape: list[int] = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _plain_leaves(values: list[Any], dtype: int) -> bool:
    """Whether each of a list's elements is already what `_convert_scalar` returns for it
    (floats for a float dtype, in-range ints for an integer one): one type scan instead of a
    call per element."""
    kinds = set(map(type, values))
    if dtype in FLOAT_TYPES:
        return kinds == {float}
    bounds = _INT_RANGES.get(dtype)
    return (
        bounds is not None
        and kinds == {int}
        and bounds[0] <= min(values) <= max(values) <= bounds[1]
    )


def _fill(val: Any, shape: Sequence[int], dtype: int, out: list[Any]) -> None:
    """FillTensorProto: every leaf at depth == rank, every list of the size its level expects.
    Depth first in document order, as the C++ recursion, on an explicit stack (a list may be
    nested as deep as the document parser allows)."""
    rank = len(shape)
    stack = [(val, 0)]
    while stack:
        val, level = stack.pop()
        if not isinstance(val, list):
            if level != rank:
                raise format_error(
                    val,
                    f"found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {rank}",
                )
            out.append(_convert_scalar(val, dtype))
            continue
        if level >= rank:
            raise invalid_argument(
                f"Encountered list at unexpected level: {level} expected < {rank}"
            )
        if len(val) != shape[level]:
            raise invalid_argument(
                f"Encountered list at unexpected size: {len(val)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        if level == rank - 1:
            if _plain_leaves(val, dtype):
                out.extend(val)
                continue
            for leaf in val:
                if isinstance(leaf, list):
                    raise invalid_argument(
                        f"Encountered list at unexpected level: {rank} expected < {rank}"
                    )
                out.append(_convert_scalar(leaf, dtype))
            continue
        stack.extend((item, level + 1) for item in reversed(val))


def _check_rank(name: str, rank: int) -> None:
    """The tensor's rank as `Tensor::FromProto` sees it (past TF's limit: "tensor parsing
    error"), then numpy's 64 (this server's limit)."""
    if rank > TF_MAX_RANK:
        raise invalid_argument(f"tensor parsing error: {name}")
    limits.check_rank(rank)


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


def _values(val: Any, dtype: int) -> tuple[list[Any], list[int]]:
    """One JSON value's elements (checked and converted) and its dense shape."""
    shape = _dense_shape(val)
    values: list[Any] = []
    _fill(val, shape, dtype, values)
    return values, shape


def _tensor(name: str, val: Any, dtype: int) -> np.ndarray:
    values, shape = _values(val, dtype)
    _check_rank(name, len(shape))
    return _to_array(values, shape, dtype)


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _plain_rows(
    instances: list[Any], infos: dict[str, meta_graph_pb2.TensorInfo]
) -> dict[str, np.ndarray] | None:
    """The common row-format body, one input whose instances are equally long flat lists of
    values already in their final type, as one [batch, width] tensor without walking each
    element; None for anything else, which `_instances` walks with TF's checks and errors."""
    ((name, info),) = infos.items()
    first = instances[0]
    width = len(first) if type(first) is list else 0
    if not width or not all(type(row) is list and len(row) == width for row in instances):
        return None
    flat = [v for row in instances for v in row]
    if not _plain_leaves(flat, info.dtype):
        return None
    return {name: _to_array(flat, [len(instances), width], info.dtype)}


def _instances(
    instances: list[Any], infos: dict[str, meta_graph_pb2.TensorInfo]
) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: stack rows (values, or objects for several inputs)."""
    if len(infos) == 1:
        plain = _plain_rows(instances, infos)
        if plain is not None:
            return plain
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )

    def is_element_object(v: Any) -> bool:
        return isinstance(v, dict) and not is_b64_object(v)

    objects = is_element_object(instances[0])
    names = sorted(infos)
    rows: dict[str, list[list[Any]]] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add(item: Any, name: str) -> None:
        if name not in infos:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        values, shape = _values(item, infos[name].dtype)
        if name not in sizes:
            sizes[name], shapes[name] = len(values), shape
        elif sizes[name] != len(values):
            raise invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {len(values)}")
        elif shapes[name] != shape:
            raise invalid_argument(
                f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}"
            )
        rows.setdefault(name, []).append(values)

    for i, elem in enumerate(instances):
        if objects:
            if not is_element_object(elem):
                raise invalid_argument(f"Expecting object but got list at item {i} of input list")
            for key, item in elem.items():
                try:
                    add(item, key)
                except ServingError as err:
                    raise invalid_argument(
                        f"Failed to process element: {i} key: {key} of 'instances' list. "
                        f"Error: {err}"
                    ) from None
            if set(elem) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{json_text(elem)} keys must be equal to: {','.join(names)}"
                )
        else:
            if is_element_object(elem):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {i} of input list"
                )
            try:
                add(elem, names[0])
            except ServingError as err:
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. Error: {err}"
                ) from None
    tensors = {}
    for name, parts in rows.items():  # the batch is one more dimension
        _check_rank(name, len(shapes[name]) + 1)
        flat = [v for part in parts for v in part]
        tensors[name] = _to_array(flat, [len(parts), *shapes[name]], infos[name].dtype)
    return tensors


def _columnar(val: Any, infos: dict[str, meta_graph_pb2.TensorInfo]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: one value for one input, or an object keyed by input name."""
    if not isinstance(val, dict) or is_b64_object(val):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name, info = next(iter(infos.items()))
        return {name: _tensor(name, val, info.dtype)}
    tensors: dict[str, np.ndarray] = {}
    for name in sorted(infos):
        if name not in val:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor(name, val[name], infos[name].dtype)
    return tensors


def fill_signature(doc: dict[str, Any]) -> str:
    """FillSignature: optional, but a string when present."""
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise format_error(
            doc, "not formatted correctly. 'signature_name' key must be a string value."
        )
    return signature_name


def predict_inputs(
    doc: dict[str, Any], infos: dict[str, meta_graph_pb2.TensorInfo]
) -> tuple[dict[str, np.ndarray], bool]:
    """FillPredictRequestFromJson: the input tensors, and whether the body used row format."""
    if "instances" in doc:
        if "inputs" in doc:
            raise format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                "keys to exist ",
            )
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error(doc, "No values in 'instances' array")
        return _instances(instances, infos), True
    if "inputs" in doc:
        return _columnar(doc["inputs"], infos), False
    raise invalid_argument("Missing 'inputs' or 'instances' key")
