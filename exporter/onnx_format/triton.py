"""Triton's `config.pbtxt` for the ONNX model, written from Triton's own ModelConfig proto.

`tritonclient`'s `model_config_pb2` is Triton's `model_config.proto`; `text_format` writes it
with proper escaping. Data types go TF dtype -> Open Inference Protocol name -> `TYPE_*` through
`serving.v2_types`, the table the server's v2 front-end reads, so both agree on every type.
A type Triton has none for (complex, resource, variant) is refused before conversion, naming
the tensor and the way out, not as a KeyError after parity passed.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from exporter.errors import UsageError
from serving import v2_types

TRITON_CONFIG = "config.pbtxt"


def triton_data_type(dtype: str) -> int | None:
    """Triton's DataType for a TF dtype name (`float32` -> TYPE_FP32), None when it has none."""
    try:
        datatype = v2_types.from_tf(tf.as_dtype(dtype).as_datatype_enum)
    except TypeError:
        return None
    return (
        None if datatype is None else model_config_pb2.DataType.Value(v2_types.to_config(datatype))
    )


def check_triton_types(signature: dict[str, dict[str, dict]]) -> None:
    """UsageError for the first input or output Triton cannot declare."""
    for kind in ("inputs", "outputs"):
        for tensor, spec in signature[kind].items():
            if triton_data_type(spec["dtype"]) is None:
                raise UsageError(
                    f"{kind[:-1]} {tensor!r} is {spec['dtype']}, which Triton's config.pbtxt "
                    "has no data type for: cast it in the model (e.g. to float32), or pass "
                    "--formats savedmodel."
                )


def triton_config(name: str, signature: dict[str, dict[str, dict]]) -> str:
    """Triton `config.pbtxt` for the ONNX model: platform onnxruntime_onnx, dynamic batch.

    `max_batch_size: 0` keeps the batch dimension explicit (-1) in every tensor's dims, which
    matches the ONNX graph exactly. A scalar gets `dims: [ 1 ]`: Triton refuses empty dims
    (`ValidateIOShape`) and accepts only 1s for a scalar (the ONNX Runtime backend's
    `ValidateInputs`).
    """
    check_triton_types(signature)
    config = model_config_pb2.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=0)
    for kind, field in (("inputs", config.input), ("outputs", config.output)):
        for tensor, spec in signature[kind].items():
            entry: Any = field.add(name=tensor, data_type=triton_data_type(spec["dtype"]))
            entry.dims.extend([-1 if d is None else int(d) for d in spec["shape"]] or [1])
    return text_format.MessageToString(config)
