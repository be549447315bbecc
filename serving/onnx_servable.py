"""The same Servable interface over ONNX Runtime (`--backend onnx`, `BASE/VERSION/model.onnx`).

ONNX has no SignatureDef, so one `serving_default` predict signature is synthesized from the
graph's inputs and outputs: metadata, Predict checks and REST all work unchanged. A file with
string ops in tf2onnx's `ai.onnx.contrib` domain is opened with onnxruntime-extensions, and
string tensors cross as UTF-8 text (TF's DT_STRING is bytes; ORT's Python binding takes str)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping, Sequence

import grpc
import ml_dtypes
import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving import ort_options
from serving.errors import ServingError, check_deadline, invalid_argument
from serving.ort_extensions import CUSTOM_OPS_DOMAIN, CUSTOM_OPS_LIBRARY, session_options
from serving.servable import Servable, check_readable
from serving.tensor_proto import data_type, type_name
from serving.triton_config import ModelConfig, from_onnx, read_config

ONNX_FILE = "model.onnx"
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"

_ORT_TYPES: dict[str, int] = {
    "tensor(float)": types_pb2.DT_FLOAT,
    "tensor(double)": types_pb2.DT_DOUBLE,
    "tensor(float16)": types_pb2.DT_HALF,
    "tensor(bfloat16)": types_pb2.DT_BFLOAT16,
    "tensor(int8)": types_pb2.DT_INT8,
    "tensor(int16)": types_pb2.DT_INT16,
    "tensor(int32)": types_pb2.DT_INT32,
    "tensor(int64)": types_pb2.DT_INT64,
    "tensor(uint8)": types_pb2.DT_UINT8,
    "tensor(uint16)": types_pb2.DT_UINT16,
    "tensor(uint32)": types_pb2.DT_UINT32,
    "tensor(uint64)": types_pb2.DT_UINT64,
    "tensor(bool)": types_pb2.DT_BOOL,
    "tensor(string)": types_pb2.DT_STRING,
}

# Errors raised by ONNX Runtime for bad inputs (shapes, ranks, kernel failures on the data).
_INPUT_ERRORS = (ort_state.InvalidArgument, ort_state.RuntimeException, ort_state.Fail)


def _tensor_info(arg: ort.NodeArg) -> meta_graph_pb2.TensorInfo:
    dims = [
        tensor_shape_pb2.TensorShapeProto.Dim(size=d if isinstance(d, int) else -1)
        for d in (arg.shape or [])
    ]
    return meta_graph_pb2.TensorInfo(
        name=arg.name,
        dtype=_ORT_TYPES.get(arg.type, types_pb2.DT_INVALID),
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims, unknown_rank=arg.shape is None),
    )


BF16 = "tensor(bfloat16)"
_ONNX_BFLOAT16 = 16  # TensorProto.BFLOAT16


def _bf16_value(array: np.ndarray) -> ort.OrtValue:
    """A bfloat16 OrtValue (ORT's numpy binding has no bfloat16: its bits cross as uint16)."""
    bits = np.ascontiguousarray(array, dtype=ml_dtypes.bfloat16).view(np.uint16)
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, onnx_element_type=_ONNX_BFLOAT16)


def _from_value(value: ort.OrtValue) -> np.ndarray:
    """An output OrtValue as an array; bfloat16 is copied out of the CPU buffer bit for bit."""
    if value.data_type() != BF16:
        return value.numpy()
    shape = value.shape()
    count = int(np.prod(shape, dtype=np.int64))
    bits = (ctypes.c_uint16 * count).from_address(value.data_ptr()) if count else []
    return np.array(bits, dtype=np.uint16).view(ml_dtypes.bfloat16).reshape(shape)


_LOAD_ERRORS = (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidProtobuf, RuntimeError)


def _open_session(model_file: str, config: ModelConfig | None) -> ort.InferenceSession:
    """An ORT session over `model_file` with the options Triton's backend takes from
    `config` (`serving.ort_options`); with onnxruntime-extensions when its ops need it."""
    providers = ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(
            model_file, ort_options.apply(config, ort.SessionOptions()), providers=providers
        )
    except _LOAD_ERRORS as e:
        if f"{CUSTOM_OPS_DOMAIN}:" not in str(e):
            raise ServingError(grpc.StatusCode.INTERNAL, str(e)) from e
    try:
        options = ort_options.apply(config, session_options(CUSTOM_OPS_LIBRARY))
    except ImportError as e:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{model_file} uses {CUSTOM_OPS_DOMAIN} string ops: install onnxruntime-extensions "
            "(pip install 'frozen-scalars[onnx]') to serve it",
        ) from e
    try:
        return ort.InferenceSession(model_file, options, providers=providers)
    except _LOAD_ERRORS as e:
        raise ServingError(grpc.StatusCode.INTERNAL, str(e)) from e


def ort_strings(value: np.ndarray) -> np.ndarray:
    """A string tensor as ORT's Python binding reads it: str objects (UTF-8), not bytes.

    ORT converts each element of an object array with str(), so b"a" would arrive as "b'a'".
    Raises UnicodeDecodeError for bytes that are not UTF-8. Other arrays pass unchanged.
    """
    if value.dtype != object:
        return value
    text = [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.ravel()]
    return np.array(text, dtype=object).reshape(value.shape)


def _as_ort_feed(name: str, value: np.ndarray) -> np.ndarray:
    """String tensors as str objects, or TF Serving's INVALID_ARGUMENT for non-UTF-8 bytes."""
    try:
        return ort_strings(value)
    except UnicodeDecodeError as e:
        raise invalid_argument(
            f"input {name!r} holds bytes that are not UTF-8 text ({e.reason} at byte {e.start}); "
            "ONNX Runtime string tensors carry text: send UTF-8 strings"
        ) from e


class OnnxServable(Servable):
    """An ONNX Runtime InferenceSession with a synthesized `serving_default` signature."""

    def __init__(self, name: str, version: int, path: str) -> None:
        super().__init__(name, version, path)
        model_file = os.path.join(path, ONNX_FILE)
        if not check_readable(model_file):
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"ONNX model file does not exist at: {model_file}"
            )
        # Triton's reading of BASE/config.pbtxt: the session's options, then (v2 protocol) the
        # config checked against this model.
        model_dir = os.path.dirname(os.path.normpath(path))
        config = read_config(model_dir)
        self._session = _open_session(model_file, config)
        self.model_config = from_onnx(
            model_dir,
            config,
            self._session.get_inputs(),
            self._session.get_outputs(),
        )
        signature = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
        for arg in self._session.get_inputs():
            signature.inputs[arg.name].CopyFrom(_tensor_info(arg))
        for arg in self._session.get_outputs():
            signature.outputs[arg.name].CopyFrom(_tensor_info(arg))
        self.signature_defs = {DEFAULT_SIGNATURE: signature}
        # Sorted feed names give the arg[i] index of dtype errors, as in a TF Session.
        self._feed_types = sorted((i.name, i.dtype) for i in signature.inputs.values())
        args = [*self._session.get_inputs(), *self._session.get_outputs()]
        self._bf16 = any(a.type == BF16 for a in args)

    def _check_dtypes(self, inputs: Mapping[str, np.ndarray]) -> None:
        """ONNX Runtime's own dtype errors differ; report TF's `Expects arg[i]` message instead."""
        for index, (name, expected) in enumerate(self._feed_types):
            got = data_type(inputs[name])
            if got != expected:
                raise invalid_argument(
                    f"Expects arg[{index}] to be {type_name(expected)} "
                    f"but {type_name(got)} is provided"
                )

    def run(
        self,
        signature_key: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """One InferenceSession.run; the deadline is not enforced by ONNX Runtime."""
        check_deadline(timeout_s)
        self._check_dtypes(inputs)
        feeds = {name: _as_ort_feed(name, value) for name, value in inputs.items()}
        self._count_run()
        try:
            if self._bf16:
                results = self._run_bound(feeds, output_keys)
            else:
                results = self._session.run(list(output_keys), feeds)
        except _INPUT_ERRORS as e:
            raise invalid_argument(str(e)) from e
        return {k: np.asarray(v) for k, v in zip(output_keys, results, strict=True)}

    def _run_bound(self, feeds: Mapping[str, np.ndarray], output_keys: Sequence[str]) -> list:
        """A run through an IOBinding, the only way ORT's Python API moves bfloat16 tensors
        (it binds no string tensors: a model with both cannot run here)."""
        binding = self._session.io_binding()
        for name, value in feeds.items():
            if value.dtype == object:
                raise invalid_argument(
                    f"input {name!r}: ONNX Runtime's Python binding cannot run a model with both "
                    "bfloat16 and string tensors"
                )
            if value.dtype == ml_dtypes.bfloat16:
                binding.bind_ortvalue_input(name, _bf16_value(value))
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in output_keys:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return [_from_value(v) for v in binding.get_outputs()]
