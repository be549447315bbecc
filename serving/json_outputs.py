"""TF Serving's tensor -> JSON writing for the REST predict API (`util/json_tensor.cc`
`MakeJsonFromTensors`): "predictions" rows or "outputs" columns, laid out as rapidjson's
PrettyWriter lays them out, each float written as `WriteDecimal` writes it (`%g` if it
round-trips, else max_digits10). The texts are made from each output array at once: a float
tensor's `%g` texts are checked for the round trip by one numpy parse instead of a numpy
scalar per value (2x faster on a 32x100 output)."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from serving import tensor_proto
from serving.errors import invalid_argument
from serving.json_tensor import FLOAT_TYPES

_FLOAT32 = struct.Struct("f")


def _as_float32(val: float) -> float:
    """`np.float32(val)` as a Python float (a C cast to float, 4x faster than numpy's scalar);
    past float32's range it is infinite, as numpy's cast is."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(val))[0]
    except OverflowError:
        return math.copysign(math.inf, val)


def format_float(val: float, dtype: int) -> str:
    """WriteDecimal: `%g` if it round-trips, else max_digits10; `.0` on whole numbers."""
    if math.isnan(val):
        return "NaN"
    if math.isinf(val):
        return "-Infinity" if val < 0 else "Infinity"
    text = f"{val:g}"
    if dtype == types_pb2.DT_DOUBLE:
        if float(text) != val:
            text = f"{val:.17g}"
    elif _as_float32(float(text)) != _as_float32(val):
        text = f"{val:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


_INT_TYPES = frozenset(
    (
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_INT64,
        types_pb2.DT_UINT32,
        types_pb2.DT_UINT64,
    )
)
_FEW = 8  # below this many values, format_float per value beats numpy's fixed costs


def _float_texts(array: np.ndarray, values: list[float], dtype: int) -> list[str]:
    """`format_float` of every value, the round-trip check done in one numpy parse of all the
    `%g` texts (numpy's string parse is the one `np.float32(text)` / `float(text)` does)."""
    if len(values) < _FEW:
        return [format_float(v, dtype) for v in values]
    texts = [f"{v:g}" for v in values]
    flat = array.reshape(-1)
    finite = np.isfinite(flat)
    back = np.array(texts, dtype=flat.dtype)
    digits = ".17g" if dtype == types_pb2.DT_DOUBLE else ".9g"
    for i in np.flatnonzero((back != flat) & finite).tolist():
        texts[i] = format(values[i], digits)
    texts = [t if "." in t or "e" in t else t + ".0" for t in texts]
    for i in np.flatnonzero(~finite).tolist():
        texts[i] = format_float(values[i], dtype)
    return texts


def _texts(name: str, array: np.ndarray) -> list[str]:
    """AddSingleValueAndAdvance for every element of a tensor, in row-major order."""
    dtype = tensor_proto.data_type(array)
    values = array.reshape(-1).tolist()
    if dtype in FLOAT_TYPES:
        return _float_texts(array, values, dtype)
    if dtype in _INT_TYPES:
        return [str(v) for v in values]
    if dtype == types_pb2.DT_BOOL:
        return ["true" if v else "false" for v in values]
    if dtype == types_pb2.DT_STRING:
        if name.endswith("_bytes"):
            return [
                json.dumps({"b64": base64.b64encode(_as_bytes(v)).decode("ascii")}) for v in values
            ]
        return [
            json.dumps(_as_bytes(v).decode("utf-8", "replace"), ensure_ascii=False) for v in values
        ]
    # Any other type (half, bfloat16, complex, ...) fails on its first value, as
    # AddSingleValueAndAdvance's default case: a tensor with no elements still writes `[]`.
    if values:
        raise invalid_argument(
            f"Failed to write JSON value for tensor type: {tensor_proto.type_name(dtype)}"
        )
    return []


def _as_bytes(v: Any) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def _nested(texts: list[str], shape: Sequence[int]) -> str:
    """AddTensorValues: row-major element texts as nested JSON lists of `shape`, a bare value
    for a scalar."""
    if not shape:
        return texts[0]
    if len(shape) == 1:
        return "[" + ", ".join(texts) + "]"
    step = len(texts) // shape[0] if shape[0] else 0
    inner = shape[1:]
    parts = (_nested(texts[i * step : (i + 1) * step], inner) for i in range(shape[0]))
    return "[" + ", ".join(parts) + "]"


def _rows(name: str, array: np.ndarray, batch: int) -> list[str]:
    """One tensor's JSON text for each of its `batch` rows (dimension 0)."""
    texts = _texts(name, array)
    step = len(texts) // batch if batch else 0
    inner = array.shape[1:]
    return [_nested(texts[i * step : (i + 1) * step], inner) for i in range(batch)]


def _row_json(outputs: dict[str, np.ndarray]) -> str:
    batch = -1
    arrays = {name: np.asarray(outputs[name]) for name in sorted(outputs)}
    for name, array in arrays.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and batch != array.shape[0]:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        rows = _rows(name, array, batch)
    else:
        columns = {json.dumps(name): _rows(name, array, batch) for name, array in arrays.items()}
        rows = [
            "{" + ", ".join(f"{key}: {values[i]}" for key, values in columns.items()) + "}"
            for i in range(batch)
        ]
    return '{\n    "predictions": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"


def _columnar_json(outputs: dict[str, np.ndarray]) -> str:
    parts = {}
    for name, a in outputs.items():
        array = np.asarray(a)
        parts[name] = _nested(_texts(name, array), array.shape)
    if len(parts) == 1:
        (value,) = parts.values()
        return '{\n    "outputs": ' + value + "\n}"
    fields = ",\n        ".join(f"{json.dumps(n)}: {parts[n]}" for n in sorted(parts))
    return '{\n    "outputs": {\n        ' + fields + "\n    }\n}"


def predict_response_json(outputs: dict[str, np.ndarray], row_format: bool) -> str:
    """MakeJsonFromTensors: "predictions" rows for a row-format request, else "outputs"."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    return _row_json(outputs) if row_format else _columnar_json(outputs)
