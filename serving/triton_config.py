"""What Triton's `config.pbtxt` says about a served version, read and checked as Triton does.

For an ONNX version the model directory's `config.pbtxt` (Triton's `inference.ModelConfig`, the
proto tritonclient ships) is parsed with protobuf's text format as Triton's `ReadTextProto`
does, auto-completed where it is silent (`model_config_utils.cc AutoCompleteBackendFields`,
the ONNX Runtime backend's `AutoCompleteMaxBatch` / `AutoCompleteIO`, default max batch size 4),
normalized (`version_policy` latest 1), validated (`ValidateModelConfig`,
`ValidateModelIOConfig`) and compared with the model ONNX Runtime loaded (the backend's
`ValidateInputs` / `ValidateOutputs` / `CompareDimsSupported`) with Triton's error texts, so a
config.pbtxt that Triton would refuse fails this load too. The model is inspected through the
ONNX Runtime session's inputs and outputs, never the onnx package.

A SavedModel version gets the config Triton's TensorFlow backend would derive from its
`serving_default` signature: platform `tensorflow_savedmodel`, no batching dimension, the
signature's aliases, dtypes and shapes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2
from tritonclient.grpc import model_config_pb2

from serving import v2_types
from serving.errors import ServingError, invalid_argument

ModelConfig = model_config_pb2.ModelConfig
CONFIG_FILE = "config.pbtxt"
ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
ONNX_FILE = "model.onnx"
SAVEDMODEL_PLATFORM = "tensorflow_savedmodel"
TF_BACKEND = "tensorflow"
DEFAULT_MAX_BATCH_SIZE = 4  # tritonserver --backend-config=default-max-batch-size
WILDCARD = -1
_PLATFORM_BACKENDS = {
    ONNX_PLATFORM: ONNX_BACKEND,
    SAVEDMODEL_PLATFORM: TF_BACKEND,
    "tensorflow_graphdef": TF_BACKEND,
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
}

_ORT_TYPES = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(bfloat16)": "TYPE_BF16",
    "tensor(string)": "TYPE_STRING",
}


@dataclass(frozen=True)
class ModelSpec:
    """A version's Triton ModelConfig, plus the SavedModel inputs of unknown rank (any shape)."""

    config: Any  # inference.ModelConfig
    any_rank: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class _Tensor:
    """What ONNX Runtime says about one graph input or output."""

    name: str
    type_name: str  # TYPE_* ("TYPE_INVALID" if Triton has no such type)
    dims: tuple[int, ...]


def _shape_text(dims: Sequence[int]) -> str:
    """Triton's `ShapeToString`: `[-1,3]`."""
    return "[" + ",".join(str(d) for d in dims) + "]"


def _ort_tensors(args: Sequence[Any]) -> dict[str, _Tensor]:
    return {
        a.name: _Tensor(
            a.name,
            _ORT_TYPES.get(a.type, "TYPE_INVALID"),
            tuple(d if isinstance(d, int) else WILDCARD for d in (a.shape or [])),
        )
        for a in args
    }


def read_config(model_dir: str) -> ModelConfig | None:
    """`ReadTextProto` of the model directory's config.pbtxt; None when there is none (Triton
    then auto-completes)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    config = ModelConfig()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ServingError(
            grpc.StatusCode.INTERNAL, f"failed to read text proto from {path}: {e.strerror}"
        ) from e
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ServingError(
            grpc.StatusCode.INTERNAL, f"failed to read text proto from {path}: {e}"
        ) from e
    return config


def _backend_fields(config: ModelConfig, directory_name: str) -> None:
    """`AutoCompleteBackendFields` for a version directory holding model.onnx."""
    if not config.name:
        config.name = directory_name
    if not config.platform and not config.backend:
        config.backend = ONNX_BACKEND
    if config.platform == ONNX_PLATFORM and not config.backend:
        config.backend = ONNX_BACKEND
    if config.backend == ONNX_BACKEND:
        config.platform = config.platform or ONNX_PLATFORM
        config.default_model_filename = config.default_model_filename or ONNX_FILE
    if not config.HasField("version_policy"):  # NormalizeModelConfig
        config.version_policy.latest.num_versions = 1


def _validate(config: ModelConfig, directory_name: str) -> None:
    """`ValidateModelConfig`, the directory-name rule, and this server's one runtime."""
    name = config.name
    if not config.backend:
        raise invalid_argument(f"unexpected platform type '{config.platform}' for {name}")
    expected = _PLATFORM_BACKENDS.get(config.platform)
    if config.backend in _PLATFORM_BACKENDS.values() and config.backend != expected:
        raise invalid_argument(
            f"unexpected 'platform' and 'backend' pair, got:{config.platform}, {config.backend}"
        )
    if config.max_batch_size < 0:
        raise invalid_argument(f"'max_batch_size' must be non-negative value for {name}")
    for size in config.dynamic_batching.preferred_batch_size:
        if size <= 0:
            raise invalid_argument(f"dynamic batching preferred size must be positive for {name}")
        if size > config.max_batch_size:
            raise invalid_argument(
                f"dynamic batching preferred size must be <= max batch size for {name}"
            )
    if name != directory_name:
        raise invalid_argument(
            f"unexpected directory name '{directory_name}' for model '{name}', directory name "
            "must equal model name"
        )
    if config.backend != ONNX_BACKEND:
        raise invalid_argument(
            f"model '{name}' declares backend '{config.backend}' (platform "
            f"'{config.platform}') but its version is an ONNX model: set platform: "
            f'"{ONNX_PLATFORM}" in {CONFIG_FILE}'
        )
    if config.default_model_filename != ONNX_FILE:
        raise invalid_argument(
            f"model '{name}' names default_model_filename '{config.default_model_filename}'; "
            f"this server loads {ONNX_FILE}: remove the field or rename the file"
        )


def _io_shape(io: Any, kind: str, name: str, max_batch_size: int) -> None:
    """`ValidateIOShape` (+ the ' for NAME' suffix `ValidateModelIOConfig` appends)."""
    if not io.name:
        raise invalid_argument(f"model {kind} must specify 'name' for {name}")
    prefix = f"model {kind} '{io.name}' "
    if io.data_type == model_config_pb2.TYPE_INVALID:
        raise invalid_argument(f"{prefix}must specify 'data_type' for {name}")
    if not io.dims:
        raise invalid_argument(f"{prefix}must specify 'dims' for {name}")
    if io.HasField("reshape") and not io.reshape.shape and max_batch_size == 0:
        raise invalid_argument(
            f"{prefix}cannot have empty reshape for non-batching model as scalar tensors are "
            f"not supported for {name}"
        )
    for dim in (*io.dims, *io.reshape.shape):
        if dim < 1 and dim != WILDCARD:
            raise invalid_argument(
                f"{prefix}dimension must be integer >= 1, or -1 to indicate a variable-size "
                f"dimension for {name}"
            )


def _autocomplete(
    config: ModelConfig, inputs: Mapping[str, _Tensor], outputs: Mapping[str, _Tensor]
) -> None:
    """The ONNX Runtime backend's `AutoCompleteConfig`, for a config without inputs or outputs."""
    if config.input and config.output:
        return
    batching = all(t.dims and t.dims[0] == WILDCARD for t in (*inputs.values(), *outputs.values()))
    if batching:
        if config.max_batch_size == 0:
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        if config.max_batch_size > 1 and not config.HasField("sequence_batching"):
            config.dynamic_batching.SetInParent()
    elif config.max_batch_size != 0:
        raise invalid_argument(
            f"autofill failed for model '{config.name}': model does not support batching while "
            "non-zero max_batch_size is specified"
        )
    for ios, tensors in ((config.input, inputs), (config.output, outputs)):
        if ios:
            continue
        for tensor in tensors.values():  # graph order
            io = ios.add(
                name=tensor.name, data_type=model_config_pb2.DataType.Value(tensor.type_name)
            )
            io.dims.extend(tensor.dims[1:] if config.max_batch_size > 0 else tensor.dims)
            if not io.dims:
                io.dims.append(1)
                if config.max_batch_size > 0:
                    io.reshape.SetInParent()


def _compare_dims(
    name: str, tensor: str, model: Sequence[int], dims: Sequence[int], max_batch: int, exact: bool
) -> None:
    """The ONNX Runtime backend's `CompareDimsSupported`."""
    if max_batch > 0:
        if not model or model[0] != WILDCARD:
            raise invalid_argument(
                f"model '{name}', tensor '{tensor}': for the model to support batching the shape "
                "should have at least 1 dimension and the first dimension must be -1; but shape "
                f"expected by the model is {_shape_text(model)}"
            )
        full = [WILDCARD, *dims]
        if not _dims_match(model, full, exact):
            raise invalid_argument(
                f"model '{name}', tensor '{tensor}': the model expects {len(model)} dimensions "
                f"(shape {_shape_text(model)}) but the model configuration specifies "
                f"{len(full)} dimensions (an initial batch dimension because max_batch_size > 0 "
                f"followed by the explicit tensor shape, making complete shape "
                f"{_shape_text(full)})"
            )
    elif not _dims_match(model, list(dims), exact):
        raise invalid_argument(
            f"model '{name}', tensor '{tensor}': the model expects {len(model)} dimensions "
            f"(shape {_shape_text(model)}) but the model configuration specifies {len(dims)} "
            f"dimensions (shape {_shape_text(dims)})"
        )


def _dims_match(model: Sequence[int], dims: Sequence[int], exact: bool) -> bool:
    if len(model) != len(dims):
        return False
    return all(m == d for m, d in zip(model, dims, strict=True) if exact or m != WILDCARD)


def _check_against_model(
    config: ModelConfig, inputs: Mapping[str, _Tensor], outputs: Mapping[str, _Tensor]
) -> None:
    """The backend's `ValidateInputs` / `ValidateOutputs`."""
    name = config.name
    if len(config.input) != len(inputs):
        raise invalid_argument(
            f"unable to load model '{name}', configuration expects {len(config.input)} inputs, "
            f"model provides {len(inputs)}"
        )
    for kind, ios, tensors in (("input", config.input, inputs), ("output", config.output, outputs)):
        for io in ios:
            if kind == "input" and io.optional and config.max_batch_size != 0:
                raise invalid_argument(
                    f"unable to load model '{name}', optional input '{io.name}' is not supported "
                    "for models that support batching"
                )
            tensor = tensors.get(io.name)
            if tensor is None:
                raise invalid_argument(
                    f"unexpected inference {kind} '{io.name}', allowed {kind}s are: "
                    + ", ".join(sorted(tensors))
                )
            wanted = model_config_pb2.DataType.Name(io.data_type)
            if wanted != tensor.type_name:
                provided = "TYPE_" + v2_types.from_config(tensor.type_name)
                raise invalid_argument(
                    f"unable to load model '{name}', configuration expects datatype {wanted} for "
                    f"{kind} '{io.name}', model provides {provided}"
                )
            dims = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
            if tensor.dims:
                _compare_dims(
                    name, io.name, tensor.dims, dims, config.max_batch_size, kind == "output"
                )
            elif any(d != 1 for d in dims):
                raise invalid_argument(
                    f"unable to load model '{name}', scalar tensor '{io.name}', should only "
                    "provide 1 in the model configuration when the model doesn't support "
                    f"batching. Model configuration provided: {_shape_text(dims)}."
                )


def from_onnx(
    model_dir: str, given: ModelConfig | None, inputs: Sequence[Any], outputs: Sequence[Any]
) -> ModelSpec:
    """The checked ModelConfig of an ONNX version whose model directory is `model_dir` and
    whose config.pbtxt said `given` (`read_config`); `inputs`/`outputs` are the ONNX Runtime
    session's NodeArgs. Raises ServingError with Triton's message where Triton would refuse
    to load it."""
    directory_name = os.path.basename(os.path.normpath(model_dir))
    config = ModelConfig()
    if given is not None:
        config.CopyFrom(given)
    _backend_fields(config, directory_name)
    _validate(config, directory_name)
    model_inputs, model_outputs = _ort_tensors(inputs), _ort_tensors(outputs)
    _autocomplete(config, model_inputs, model_outputs)
    for kind, ios in (("input", config.input), ("output", config.output)):
        for io in ios:
            _io_shape(io, kind, config.name, config.max_batch_size)
    _check_against_model(config, model_inputs, model_outputs)
    return ModelSpec(config)


def from_signature(name: str, signature: meta_graph_pb2.SignatureDef | None) -> ModelSpec:
    """The config of a SavedModel version: `serving_default`'s aliases, dtypes and shapes."""
    config = ModelConfig(name=name, platform=SAVEDMODEL_PLATFORM, backend=TF_BACKEND)
    config.version_policy.latest.num_versions = 1
    any_rank: set[str] = set()
    if signature is not None:
        for ios, infos in ((config.input, signature.inputs), (config.output, signature.outputs)):
            for alias in sorted(infos):
                info = infos[alias]
                datatype = v2_types.from_tf(info.dtype)
                io = ios.add(
                    name=alias,
                    data_type=model_config_pb2.DataType.Value(
                        v2_types.to_config(datatype) if datatype else "TYPE_INVALID"
                    ),
                )
                if info.tensor_shape.unknown_rank:
                    any_rank.add(alias)
                else:
                    io.dims.extend(
                        d.size if d.size >= 0 else WILDCARD for d in info.tensor_shape.dim
                    )
    return ModelSpec(config, frozenset(any_rank))
