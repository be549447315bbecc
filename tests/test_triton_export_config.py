"""The exporter's config.pbtxt declares every data type it can emit, as Triton names it."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from exporter.errors import UsageError
from exporter.onnx_format.triton import triton_config

# Every dtype a Keras/TF signature can carry into ONNX -> Triton's model_config.proto name.
EXPECTED = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "string": "TYPE_STRING",
}


def _signature(dtype: str) -> dict:
    return {
        "inputs": {"x": {"dtype": dtype, "shape": [None, 3]}},
        "outputs": {"y": {"dtype": dtype, "shape": [None]}},
    }


@pytest.mark.parametrize("dtype", list(EXPECTED))
def test_every_dtype_has_its_triton_type(dtype: str) -> None:
    config = text_format.Parse(
        triton_config("m", _signature(dtype)), model_config_pb2.ModelConfig()
    )
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 0
    (tensor_in,) = config.input
    (tensor_out,) = config.output
    names = {model_config_pb2.DataType.Name(t.data_type) for t in (tensor_in, tensor_out)}
    assert names == {EXPECTED[dtype]}
    assert list(tensor_in.dims) == [-1, 3] and list(tensor_out.dims) == [-1]


def test_a_type_triton_lacks_is_refused_naming_the_tensor() -> None:
    with pytest.raises(UsageError, match=r"output 'y' is complex64.*--formats savedmodel"):
        triton_config("m", {"inputs": {}, "outputs": {"y": {"dtype": "complex64", "shape": []}}})


def test_names_are_escaped() -> None:
    text = triton_config('odd"name', _signature("float32"))
    assert text_format.Parse(text, model_config_pb2.ModelConfig()).name == 'odd"name'
