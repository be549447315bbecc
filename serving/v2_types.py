"""The Open Inference Protocol's tensor data types and their byte layout.

Names follow the protocol (`BOOL`, `UINT8`..`UINT64`, `INT8`..`INT64`, `FP16`, `FP32`, `FP64`,
`BF16`, `BYTES`); Triton's config.pbtxt spells them `TYPE_*` (`TYPE_STRING` for BYTES) and TF's
SignatureDefs as `DT_*`. Tensor bytes are what Triton's binary data extension and gRPC
`raw_input_contents` carry: little-endian, row-major, BOOL one byte per element, BYTES as a
4-byte little-endian length then the bytes, for each element. Decoding checks sizes with the
texts of Triton's core (`infer_request.cc ValidateBytesInputs`) and backends
(`backend_common.cc ValidateStringBuffer`)."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
from tensorflow.core.framework import types_pb2

from serving.errors import invalid_argument

BYTES = "BYTES"
_LENGTH = struct.Struct("<I")

# protocol name -> numpy dtype (little-endian; BYTES elements are Python bytes objects).
NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    BYTES: np.dtype(object),
}

_FROM_TF: dict[int, str] = {
    types_pb2.DT_BOOL: "BOOL",
    types_pb2.DT_UINT8: "UINT8",
    types_pb2.DT_UINT16: "UINT16",
    types_pb2.DT_UINT32: "UINT32",
    types_pb2.DT_UINT64: "UINT64",
    types_pb2.DT_INT8: "INT8",
    types_pb2.DT_INT16: "INT16",
    types_pb2.DT_INT32: "INT32",
    types_pb2.DT_INT64: "INT64",
    types_pb2.DT_HALF: "FP16",
    types_pb2.DT_FLOAT: "FP32",
    types_pb2.DT_DOUBLE: "FP64",
    types_pb2.DT_BFLOAT16: "BF16",
    types_pb2.DT_STRING: BYTES,
}


def from_tf(dtype: int) -> str | None:
    """The protocol name of a TF DataType (None: no v2 equivalent, e.g. complex)."""
    return _FROM_TF.get(dtype)


def from_config(type_name: str) -> str:
    """`TYPE_FP32` -> `FP32`, `TYPE_STRING` -> `BYTES` (Triton's DataTypeToProtocolString)."""
    name = type_name.removeprefix("TYPE_")
    return BYTES if name == "STRING" else name


def to_config(datatype: str) -> str:
    """`FP32` -> `TYPE_FP32`, `BYTES` -> `TYPE_STRING`."""
    return "TYPE_STRING" if datatype == BYTES else f"TYPE_{datatype}"


def from_numpy(dtype: np.dtype) -> str | None:
    """The protocol name of an array's dtype (ORT returns str objects for strings)."""
    if dtype.kind in "OSU":
        return BYTES
    for name, candidate in NUMPY.items():
        if candidate == dtype and name != BYTES:
            return name
    return None


def item_size(datatype: str) -> int:
    """Bytes per element (0 for BYTES, whose elements vary)."""
    return 0 if datatype == BYTES else NUMPY[datatype].itemsize


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")


def encode_bytes(values: object) -> bytes:
    """BYTES elements serialized the way Triton serializes them."""
    parts = []
    for value in np.asarray(values, dtype=object).ravel():
        data = _as_bytes(value)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def encode(array: np.ndarray, datatype: str) -> bytes:
    """An array as its tensor bytes."""
    if datatype == BYTES:
        return encode_bytes(array)
    return np.ascontiguousarray(array, dtype=NUMPY[datatype]).tobytes()


def _request(request_id: str) -> str:
    return f"[request id: {request_id or '<id_unknown>'}] "


def decode_bytes(
    data: bytes, count: int, name: str, model: str, request_id: str = ""
) -> np.ndarray:
    """`count` BYTES elements from `data`, with Triton's errors for a malformed buffer."""
    values: list[bytes] = []
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        if len(data) - offset < _LENGTH.size:
            raise invalid_argument(
                f"{_request(request_id)}incomplete string length indicator for inference input "
                f"'{name}' for model '{model}', expecting 4 bytes but only "
                f"{len(data) - offset} bytes available. Please make sure the string length "
                "indicator is in one buffer."
            )
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if len(values) + 1 > count:
            raise invalid_argument(
                f"{_request(request_id)}unexpected number of string elements {len(values) + 1} "
                f"for inference input '{name}' for model '{model}', expecting {count}"
            )
        if length > len(data) - offset:
            raise invalid_argument(
                f"incomplete string data for inference input '{name}', expecting string of "
                f"length {length} but only {len(data) - offset} bytes available"
            )
        values.append(bytes(view[offset : offset + length]))
        offset += length
    if len(values) != count:
        raise invalid_argument(
            f"{_request(request_id)}expected {count} string elements for inference input "
            f"'{name}' for model '{model}', got {len(values)}"
        )
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def decode(
    data: bytes, datatype: str, shape: tuple[int, ...], name: str, model: str, request_id: str = ""
) -> np.ndarray:
    """Tensor bytes (whose size the caller checked for fixed-size types) as an array."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if datatype == BYTES:
        return decode_bytes(data, count, name, model, request_id).reshape(shape)
    if datatype == "BOOL":
        return (np.frombuffer(data, dtype=np.uint8) != 0).reshape(shape)
    return np.frombuffer(data, dtype=NUMPY[datatype]).reshape(shape)
