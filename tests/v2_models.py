"""A mixed SavedModel + ONNX repository for the Open Inference Protocol tests.

Beside copies of the contract models (`tests/tfs_models.py`) it holds a `dtypes` set that
passes one `[batch, 2]` tensor of every v2 data type through Identity: ONNX models laid out as
Triton model directories (`config.pbtxt` with max_batch_size 8, dims [2]) and a SavedModel. The
ONNX twins are served under `model_platform: "onnx"` next to the SavedModels in one config."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import tensorflow as tf
from onnx import TensorProto, helper

from exporter.onnx_format.triton import triton_config
from serving import v2_types

DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)  # fmt: skip
_ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BF16": TensorProto.BFLOAT16,
    "BYTES": TensorProto.STRING,
}
_TF_TYPES = {
    "BOOL": tf.bool,
    "UINT8": tf.uint8,
    "UINT16": tf.uint16,
    "UINT32": tf.uint32,
    "UINT64": tf.uint64,
    "INT8": tf.int8,
    "INT16": tf.int16,
    "INT32": tf.int32,
    "INT64": tf.int64,
    "FP16": tf.float16,
    "FP32": tf.float32,
    "FP64": tf.float64,
    "BF16": tf.bfloat16,
    "BYTES": tf.string,
}
DTYPES_MAX_BATCH = 8
# ONNX Runtime's Python API cannot run one model with both bfloat16 and string tensors, so the
# ONNX side splits BF16 into its own model.
ONNX_DTYPES = {"dtypes_onnx": [t for t in DATATYPES if t != "BF16"], "bf16_onnx": ["BF16"]}


def identity_config(name: str, datatypes: list[str]) -> str:
    """config.pbtxt for an Identity model: max_batch_size 8, each tensor dims [2]."""

    def tensors(kind: str) -> str:
        return ",\n".join(
            f'  {{ name: "{kind}_{t}" data_type: {v2_types.to_config(t)} dims: [ 2 ] }}'
            for t in datatypes
        )

    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {DTYPES_MAX_BATCH}\n'
        f"input [\n{tensors('in')}\n]\noutput [\n{tensors('out')}\n]\n"
    )


def sample(datatype: str, rows: int = 3) -> np.ndarray:
    """A [rows, 2] array of `datatype` with values that survive the round trip exactly."""
    if datatype == "BYTES":
        values = [[f"r{i}-a".encode(), "é\x00€".encode()] for i in range(rows)]
        array = np.empty((rows, 2), dtype=object)
        array[:] = values
        return array
    if datatype == "BOOL":
        return np.arange(rows * 2).reshape(rows, 2) % 3 == 0
    base = np.arange(rows * 2).reshape(rows, 2)
    if datatype.startswith(("FP", "BF")):
        return (base * 0.5 - 1.25).astype(v2_types.NUMPY[datatype])
    info = np.iinfo(v2_types.NUMPY[datatype])
    values = [info.max - i if i % 2 == 0 else info.min + i for i in range(rows * 2)]
    return np.array(values, dtype=v2_types.NUMPY[datatype]).reshape(rows, 2)


def write_identity_onnx(model_dir: Path, datatypes: list[str]) -> None:
    """`model_dir/config.pbtxt` + `model_dir/1/model.onnx`: Identity for each data type."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]) for t in datatypes],
        "dtypes",
        [helper.make_tensor_value_info(f"in_{t}", _ONNX_TYPES[t], ["batch", 2]) for t in datatypes],
        [
            helper.make_tensor_value_info(f"out_{t}", _ONNX_TYPES[t], ["batch", 2])
            for t in datatypes
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (model_dir / "1").mkdir(parents=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    (model_dir / "config.pbtxt").write_text(identity_config(model_dir.name, datatypes))


def write_dtypes_savedmodel(version_dir: Path) -> None:
    """A TF1 SavedModel whose serving_default passes every data type through tf.identity."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        inputs = {
            f"in_{t}": v1.placeholder(_TF_TYPES[t], [None, 2], name=f"in_{t}") for t in DATATYPES
        }
        outputs = {f"out_{t}": tf.identity(inputs[f"in_{t}"], name=f"out_{t}") for t in DATATYPES}
        builder = v1.saved_model.Builder(str(version_dir))
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                "serving_default": v1.saved_model.predict_signature_def(inputs, outputs)
            },
        )
        builder.save()


def build(model_repo: Path, out: Path) -> Path:
    """The mixed repository under `out`; returns its models.config."""
    shutil.copytree(model_repo / "tfserving" / "half_plus_two", out / "half_plus_two")
    shutil.copytree(model_repo / "tfserving" / "strings", out / "strings")
    # No config.pbtxt: Triton's auto-complete (max_batch_size 4, dims [1] + empty reshape).
    shutil.copytree(model_repo / "onnx" / "half_plus_two", out / "half_plus_two_onnx")
    # The exporter's config.pbtxt (max_batch_size 0, the batch dimension in dims).
    shutil.copytree(model_repo / "onnx" / "multi_io", out / "multi_io_onnx")
    signature = {
        "inputs": {"a": {"dtype": "float32", "shape": [None, 3]},
                   "b": {"dtype": "int64", "shape": [None]}},
        "outputs": {"sum": {"dtype": "float32", "shape": [None, 3]},
                    "scaled": {"dtype": "float32", "shape": [None]}},
    }  # fmt: skip
    (out / "multi_io_onnx" / "config.pbtxt").write_text(triton_config("multi_io_onnx", signature))
    for name, datatypes in ONNX_DTYPES.items():
        write_identity_onnx(out / name, datatypes)
    write_dtypes_savedmodel(out / "dtypes_tf" / "1")
    platforms = {
        "half_plus_two": "tensorflow",
        "strings": "tensorflow",
        "dtypes_tf": "tensorflow",
        "half_plus_two_onnx": "onnx",
        "multi_io_onnx": "onnx",
        "dtypes_onnx": "onnx",
        "bf16_onnx": "onnx",
    }
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{out / name}" model_platform: "{platform}"'
        + (" model_version_policy { all {} }" if name == "half_plus_two" else "")
        + " }\n"
        for name, platform in platforms.items()
    )
    config = out / "models.config"
    config.write_text("model_config_list {\n" + entries + "}\n")
    return config
