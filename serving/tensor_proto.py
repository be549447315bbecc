"""TensorProto <-> numpy, with the decode rules of TF's `Tensor::FromProto` and the typed-field
encoding of `Tensor::AsProtoField` (what TF Serving's Predict answers with by default), or the
raw `tensor_content` encoding of `Tensor::AsProtoTensorContent` (what clients send).

The one TensorProto codec of the project: the server (`serving.inference`) and the client
(`serving.client`) both use it, so both sides agree on dtypes and fill rules."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import limits

DataType = int

# dtype enum -> (numpy dtype, typed repeated field). Half and bfloat16 travel as uint16 bit
# patterns in half_val; complex numbers as (re, im) pairs.
_FIELDS: dict[DataType, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val"),
    types_pb2.DT_BFLOAT16: (np.dtype(ml_dtypes.bfloat16), "half_val"),
    types_pb2.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val"),
    types_pb2.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val"),
}

# numpy dtype -> the first DataType decoding to it (DT_INT32 for int32, not a narrower alias).
_BY_NUMPY: dict[np.dtype, DataType] = {}
for _enum, (_np_dtype, _) in _FIELDS.items():
    _BY_NUMPY.setdefault(_np_dtype, _enum)

# TF's DataTypeString names, used verbatim in runtime messages ("Expects arg[0] to be float ...").
TF_TYPE_NAMES: dict[DataType, str] = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_UINT16: "uint16",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT64: "uint64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_BFLOAT16: "bfloat16",
    types_pb2.DT_COMPLEX64: "complex64",
    types_pb2.DT_COMPLEX128: "complex128",
}


class TensorParseError(ValueError):
    """The TensorProto would be rejected by `Tensor::FromProto` (bad dtype, shape or content)."""


def numpy_dtype(dtype: DataType) -> np.dtype:
    """The numpy dtype a TF DataType decodes to; raises TensorParseError if unsupported."""
    try:
        return _FIELDS[dtype][0]
    except KeyError:
        raise TensorParseError(f"unsupported dtype {dtype}") from None


def data_type(array: np.ndarray) -> DataType:
    """The TF DataType of a numpy array (object/bytes/str arrays are DT_STRING)."""
    kind = array.dtype
    if kind.byteorder not in ("=", "|"):
        kind = kind.newbyteorder("=")
    if kind.kind in "OSU":
        return types_pb2.DT_STRING
    enum = _BY_NUMPY.get(kind)
    if enum is not None:
        return enum
    for enum, (np_dtype, _) in _FIELDS.items():
        if np_dtype == kind:
            return enum
    raise TensorParseError(f"unsupported numpy dtype {kind}")


def type_name(dtype: DataType) -> str:
    """TF's short name of a dtype ("float", "double", ...)."""
    return TF_TYPE_NAMES.get(dtype, types_pb2.DataType.Name(dtype).removeprefix("DT_").lower())


def _shape(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise TensorParseError("unknown rank")
    dims = tuple(d.size for d in shape.dim)
    if any(d < 0 for d in dims):
        raise TensorParseError("negative dimension")
    if len(dims) > limits.MAX_TENSOR_RANK or limits.declared_elements(dims) > limits.INT64_MAX:
        raise TensorParseError("shape too large")
    return dims


def decode(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decodes like `Tensor::FromProto`: tensor_content must be exactly N*sizeof(T) bytes; typed
    values beyond N are dropped, fewer than N repeat the last one, none means zeros."""
    np_dtype = numpy_dtype(proto.dtype)
    shape = _shape(proto)
    count = limits.declared_elements(shape)
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            raise TensorParseError("tensor_content is not supported for strings")
        if len(proto.tensor_content) != count * np_dtype.itemsize:
            raise TensorParseError("tensor_content size mismatch")
        # tensor_content is little-endian on the wire, whatever the host's byte order.
        little = np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<"))
        return little.astype(np_dtype, copy=False).reshape(shape)
    field = _FIELDS[proto.dtype][1]
    raw = getattr(proto, field)
    complex_pairs = proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128)
    given = len(raw) // 2 if complex_pairs else len(raw)
    if count > given and count > limits.MAX_FILL_ELEMENTS:
        # Tensor::FromProto would allocate it all from a few bytes of request; refuse instead.
        raise TensorParseError(f"shape declares {count} elements but {given} values were sent")
    if complex_pairs:
        pairs = np.asarray(raw, dtype=np.float64)
        values = (pairs[0::2] + 1j * pairs[1::2]).astype(np_dtype) if len(pairs) else pairs
    elif proto.dtype == types_pb2.DT_STRING:
        values = np.empty(len(raw), dtype=object)
        values[:] = list(raw)
    elif field == "half_val":
        values = np.asarray(raw, dtype=np.uint16).view(np_dtype)
    else:
        values = np.asarray(raw).astype(np_dtype, copy=False)
    return _fill(values, count, np_dtype).reshape(shape)


def _fill(values: np.ndarray, count: int, np_dtype: np.dtype) -> np.ndarray:
    n = len(values)
    if n >= count:
        return values[:count]
    if n == 0:
        if np_dtype == np.dtype(object):
            out = np.empty(count, dtype=object)
            out[:] = b""
            return out
        return np.zeros(count, dtype=np_dtype)
    return np.concatenate([values, np.repeat(values[-1:], count - n)])


def encode(array: np.ndarray, *, content: bool = False) -> tensor_pb2.TensorProto:
    """Encodes like `Tensor::AsProtoField` (dtype, full tensor_shape, every element typed) or,
    with `content=True`, like `AsProtoTensorContent`: numeric values as raw little-endian bytes
    (one memcpy instead of a Python loop), strings still in string_val."""
    return encode_into(tensor_pb2.TensorProto(), array, content=content)


def encode_into(
    proto: tensor_pb2.TensorProto, array: np.ndarray, *, content: bool = False
) -> tensor_pb2.TensorProto:
    """`encode` written into an existing (empty) TensorProto, e.g. a response's map entry, which
    saves building a second message and copying it over."""
    array = np.asarray(array)
    dtype = data_type(array)
    proto.dtype = dtype
    proto.tensor_shape.SetInParent()  # present even for a scalar, as AsProtoField writes it
    dims = proto.tensor_shape.dim
    for d in array.shape:
        dims.add(size=d)
    field = _FIELDS[dtype][1]
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.ravel()
        )
    elif content:
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        proto.tensor_content = np.ascontiguousarray(little).tobytes()
    elif field == "half_val":
        proto.half_val.extend(array.ravel().view(np.uint16).tolist())
    elif field in ("scomplex_val", "dcomplex_val"):
        flat = array.ravel()
        pairs = np.empty(flat.size * 2, dtype=np.float64)
        pairs[0::2], pairs[1::2] = flat.real, flat.imag
        getattr(proto, field).extend(pairs.tolist())
    else:
        getattr(proto, field).extend(array.ravel().tolist())
    return proto
