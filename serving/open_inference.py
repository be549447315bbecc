"""The Open Inference Protocol (KServe v2 / Triton) over ServerCore, free of any transport.

Like KServe's `protocol/dataplane.py`, REST (`serving.v2_rest`) and gRPC (`serving.v2_grpc`) only
translate their wire formats into `InferRequest`s of tensor bytes and back; every check lives
here, in the order and with the texts of Triton's core: model lookup (`model_lifecycle.cc
GetModel`), then `InferenceRequest::Normalize` (input count, names, batch dimension, data type,
shape, byte size) against the version's Triton ModelConfig (`serving.triton_config`), then one
run of the same servable TF Serving's API uses, with the same metrics. Errors are ServingErrors
whose gRPC code is Triton's (`GrpcStatusUtil::CodeToStatus`); `http_status` maps them as
Triton's `HttpCodeFromError` does. One job past ~400 lines: the lookups and Normalize share the
request's model config, and splitting them would split that."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import get_model_status_pb2

from serving import metrics, v2_types
from serving.errors import ServingError, invalid_argument
from serving.servable import Servable
from serving.triton_config import WILDCARD, ModelSpec

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
SIGNATURE = "serving_default"
SERVER_NAME = "frozen-scalars"
EXTENSIONS = ("binary_tensor_data", "model_configuration")
_STOL = re.compile(r"\s*[+-]?\d+")
INT64_MAX = 2**63 - 1

# Triton's HttpCodeFromError, plus the codes only this server raises (deadline, queue limits).
_HTTP_STATUS = {
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.PERMISSION_DENIED: 403,
}


class ModelNotFound(ServingError):
    """No such model or version (404 / NOT_FOUND)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.NOT_FOUND, message)


class ModelNotReady(ServingError):
    """The version exists but does not serve now (503 / UNAVAILABLE)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, message)


def http_status(error: ServingError) -> int:
    """The HTTP status Triton answers a failed request with (400 where nothing fits better)."""
    return _HTTP_STATUS.get(error.code, 400)


@dataclass
class InferInput:
    """One input as it arrived: its bytes in Triton's tensor layout (`serving.v2_types`)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes


@dataclass
class InferRequest:
    """A transport-independent inference request; `outputs` empty means every output."""

    model: str
    version: str = ""
    id: str = ""
    inputs: list[InferInput] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    raw_input: bytes | None = None  # a raw binary request: the single input's bytes, no header


@dataclass
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray

    def data(self) -> bytes:
        """The tensor bytes (binary data extension, gRPC raw_output_contents)."""
        return v2_types.encode(self.array, self.datatype)


@dataclass
class InferResponse:
    model: str
    version: int
    id: str
    outputs: list[InferOutput]


def parse_version(text: str) -> int:
    """`GetModelVersionFromString`: "" is -1 (the version policy chooses), else an int64 >= 0
    read as `std::stol` reads it (a numeric prefix)."""
    if not text:
        return -1
    match = _STOL.match(text)
    if match is None or abs(int(match.group())) > INT64_MAX:
        raise invalid_argument(
            f"failed to get model version from specified version string '{text}' (details: "
            "stol), version should be an integral value > 0"
        )
    version = int(match.group())
    if version < 0:
        raise invalid_argument(
            f"invalid model version specified '{text}' , version should be an integral value > 0"
        )
    return version


def _shape(dims: Sequence[int]) -> str:
    """`DimsListToString`: `[2,3]`."""
    return "[" + ",".join(str(d) for d in dims) + "]"


def _server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "0"


class DataPlane:
    """Health, metadata, config and inference answers for one ServerCore."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self._version = _server_version()

    # --- health and metadata ------------------------------------------------------------------

    def live(self) -> bool:
        """The process answers: live."""
        return True

    def ready(self) -> bool:
        """Triton's strict readiness: every configured model has a version that serves."""
        for name in self.core.model_names():
            states = self.core.version_states(name) or {}
            if AVAILABLE not in states.values():
                return False
        return True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self._version, "extensions": list(EXTENSIONS)}

    def servable(self, name: str, version_text: str) -> Servable:
        """`ModelLifeCycle::GetModel` with `ModelRepositoryManager`'s message prefix."""
        version = parse_version(version_text)
        prefix = "Request for unknown model: "
        states = self.core.version_states(name)
        if states is None:
            raise ModelNotFound(f"{prefix}'{name}' is not found")
        if version == -1:
            try:
                return self.core.servable(name)
            except ServingError:
                raise ModelNotFound(f"{prefix}'{name}' has no available versions") from None
        if version not in states:
            raise ModelNotFound(f"{prefix}'{name}' version {version} is not found")
        try:
            return self.core.servable(name, version)
        except ServingError:
            raise ModelNotReady(
                f"{prefix}'{name}' version {version} is not at ready state"
            ) from None

    def model_ready(self, name: str, version_text: str = "") -> bool:
        """True, or the lookup's error (unknown model or version, version not ready)."""
        self.servable(name, version_text)
        return True

    def model_config(self, name: str, version_text: str = "") -> Any:
        """The version's Triton ModelConfig (the model_configuration extension)."""
        return _spec(self.servable(name, version_text)).config

    def model_metadata(self, name: str, version_text: str = "") -> dict[str, Any]:
        """`TRITONSERVER_ServerModelMetadata`: ready versions, platform, tensors (with -1 for
        the batch dimension when max_batch_size > 0)."""
        servable = self.servable(name, version_text)
        config = _spec(servable).config
        if version_text:
            versions = [str(servable.version)]
        else:
            states = self.core.version_states(name) or {}
            versions = [str(v) for v in sorted(states) if states[v] == AVAILABLE]
        batch = [WILDCARD] if config.max_batch_size >= 1 else []

        def tensors(ios: Any) -> list[dict[str, Any]]:
            return [
                {
                    "name": io.name,
                    "datatype": _datatype(io.data_type),
                    "shape": [*batch, *io.dims],
                }
                for io in ios
            ]

        return {
            "name": name,
            "versions": versions,
            "platform": config.platform or config.backend,
            "inputs": tensors(config.input),
            "outputs": tensors(config.output),
        }

    # --- inference ----------------------------------------------------------------------------

    def infer(
        self, request: InferRequest, timeout_s: float | None, entrypoint: str
    ) -> InferResponse:
        """Lookup, Normalize, one run; counted under `ModelInfer` for `entrypoint` (GRPC/REST)."""
        start = time.monotonic()
        status = "OK"
        try:
            return self._infer(request, _timeout(request, timeout_s))
        except ServingError as e:
            status = e.code.name
            raise
        finally:
            metrics.record_request(
                request.model, "ModelInfer", entrypoint, status, time.monotonic() - start
            )

    def _infer(self, request: InferRequest, timeout_s: float | None) -> InferResponse:
        servable = self.servable(request.model, request.version)
        spec = _spec(servable)
        arrays = _normalize(request, spec)
        names = _requested_outputs(request, spec)
        run_start = time.monotonic()
        results = servable.run(SIGNATURE, arrays, names, timeout_s=timeout_s)
        metrics.record_runtime(request.model, "ModelInfer", time.monotonic() - run_start)
        batch = _batch_size(request, spec)
        outputs = [_output(spec, name, np.asarray(results[name]), batch) for name in names]
        return InferResponse(request.model, servable.version, request.id, outputs)


def _timeout(request: InferRequest, timeout_s: float | None) -> float | None:
    """The transport's deadline, shortened by Triton's `timeout` parameter (microseconds)."""
    micros = request.parameters.get("timeout")
    if isinstance(micros, int) and not isinstance(micros, bool) and micros > 0:
        own = micros / 1e6
        return own if timeout_s is None else min(own, timeout_s)
    return timeout_s


def _spec(servable: Servable) -> ModelSpec:
    spec = getattr(servable, "model_config", None)
    if spec is None:
        raise ServingError(
            grpc.StatusCode.UNAVAILABLE,
            f"model '{servable.name}' version {servable.version} has no Triton model config",
        )
    return spec


def _datatype(data_type: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return v2_types.from_config(model_config_pb2.DataType.Name(data_type))


def _log(request: InferRequest) -> str:
    """`InferenceRequest::LogRequest`."""
    return f"[request id: {request.id or '<id_unknown>'}] "


def _requested_outputs(request: InferRequest, spec: ModelSpec) -> list[str]:
    """`Normalize`: every requested output must be in the config (`Model::GetOutput`)."""
    known = {io.name for io in spec.config.output}
    if not request.outputs:
        return [io.name for io in spec.config.output]
    for name in request.outputs:
        if name not in known:
            raise invalid_argument(
                f"unexpected inference output '{name}' for model '{request.model}'"
            )
    return list(request.outputs)


def _check_count(request: InferRequest, spec: ModelSpec) -> None:
    """`ValidateRequestInputs`."""
    config = spec.config
    required = [io.name for io in config.input if not io.optional]
    given = [i.name for i in request.inputs]
    if len(given) <= len(config.input) and len(given) >= len(required):
        return
    missing = [n for n in required if n not in given]
    got = "[" + ",".join(f"'{n}'" for n in given) + "]"
    lacking = "[" + ",".join(f"'{n}'" for n in missing) + "]"
    if len(required) == len(config.input):
        head = f"expected {len(config.input)} inputs"
    else:
        head = f"expected number of inputs between {len(required)} and {len(config.input)}"
    raise invalid_argument(
        f"{_log(request)}{head} but got {len(given)} inputs for model '{request.model}'. Got "
        f"input(s) {got}, but missing required input(s) {lacking}. Please provide all "
        "required input(s)."
    )


def _batch_size(request: InferRequest, spec: ModelSpec) -> int:
    """The shared first dimension when the model batches (max_batch_size > 0), else 0."""
    if spec.config.max_batch_size == 0 or not request.inputs:
        return 0
    return request.inputs[0].shape[0] if request.inputs[0].shape else 0


def _raw_input(request: InferRequest, spec: ModelSpec) -> InferInput:
    """`Normalize` for a raw binary request: the one input's name, type and shape deduced
    from the config (a batch of 1 when the model batches; one variable dimension at most)."""
    config, model, data = spec.config, request.model, request.raw_input or b""
    if len(config.input) != 1:
        raise invalid_argument(
            f"{_log(request)}Raw request must only have 1 input (found 1) to be deduced but got "
            f"{len(config.input)} inputs in '{model}' model configuration"
        )
    io = config.input[0]
    datatype = _datatype(io.data_type)
    shape = [1] if config.max_batch_size != 0 else []
    dynamic, count = -1, 1
    for dim in io.dims:
        if dim == WILDCARD:
            if dynamic != -1:
                raise invalid_argument(
                    f"{_log(request)}The shape of the raw input '{io.name}' can not be deduced "
                    "because there are more than one variable-sized dimension"
                )
            dynamic = len(shape)
        else:
            count *= dim
        shape.append(dim)
    if datatype == v2_types.BYTES:
        if dynamic != -1 or count != 1:
            raise invalid_argument(
                f"{_log(request)}For BYTE datatype raw input '{io.name}', the model must have "
                "input shape [1]"
            )
        data = v2_types.encode_bytes([data])
    elif dynamic != -1:
        shape[dynamic] = len(data) // count // v2_types.item_size(datatype)
    return InferInput(io.name, datatype, tuple(shape), data)


def _normalize(request: InferRequest, spec: ModelSpec) -> dict[str, np.ndarray]:
    """`InferenceRequest::Normalize`, then each input's bytes as the array the model takes."""
    config, model = spec.config, request.model
    if request.raw_input is not None:
        request.inputs = [_raw_input(request, spec)]
    seen: set[str] = set()
    for inp in request.inputs:
        if inp.name in seen:
            raise invalid_argument(f"{_log(request)}input '{inp.name}' already exists in request")
        seen.add(inp.name)
    if len(set(request.outputs)) != len(request.outputs):
        dup = next(n for n in request.outputs if request.outputs.count(n) > 1)
        raise invalid_argument(f"{_log(request)}output '{dup}' already exists in request")
    _check_count(request, spec)
    configs = {io.name: io for io in config.input}
    batch = 0
    for inp in request.inputs:
        if inp.name not in configs:
            raise invalid_argument(f"unexpected inference input '{inp.name}' for model '{model}'")
        if config.max_batch_size > 0:
            if not inp.shape:
                raise invalid_argument(
                    f"{_log(request)}input '{inp.name}' has no shape but model requires batch "
                    f"dimension for '{model}'"
                )
            if batch == 0:
                batch = inp.shape[0]
            elif inp.shape[0] != batch:
                raise invalid_argument(
                    f"{_log(request)}input '{inp.name}' batch size does not match other inputs "
                    f"for '{model}'"
                )
    if batch > config.max_batch_size:
        raise invalid_argument(
            f"{_log(request)}inference request batch-size must be <= {config.max_batch_size} "
            f"for '{model}'"
        )
    arrays: dict[str, np.ndarray] = {}
    for inp in request.inputs:
        io = configs[inp.name]
        arrays[inp.name] = _input_array(request, spec, inp, io, batch)
    return arrays


def _input_array(
    request: InferRequest, spec: ModelSpec, inp: InferInput, io: Any, batch: int
) -> np.ndarray:
    """Data type, shape and byte-size checks of one input, then its (reshaped) array."""
    model, config = request.model, spec.config
    expected_type = _datatype(io.data_type)
    if inp.datatype != expected_type:
        raise invalid_argument(
            f"{_log(request)}inference input '{inp.name}' data-type is '{inp.datatype}', but "
            f"model '{model}' expects '{expected_type}'"
        )
    shape = list(inp.shape[1:] if config.max_batch_size > 0 else inp.shape)
    if inp.name not in spec.any_rank:
        dims = list(io.dims)
        match = len(dims) == len(shape)
        if match:
            for want, got in zip(dims, shape, strict=True):
                if got == WILDCARD:
                    raise invalid_argument(
                        f"{_log(request)}All input dimensions should be specified for input "
                        f"'{inp.name}' for model '{model}', got {_shape(inp.shape)}"
                    )
                if want not in (WILDCARD, got):
                    match = False
                    break
        if not match:
            full = ([WILDCARD] if config.max_batch_size > 0 else []) + dims
            note = (
                "NOTE: Setting a non-zero max_batch_size in the model config requires a batch "
                "dimension to be prepended to each input shape. If you want to specify the full "
                "shape including the batch dim in your input dims config, try setting "
                "max_batch_size to zero. See the model configuration docs for more info on "
                "max_batch_size."
                if config.max_batch_size > 0
                else ""
            )
            raise invalid_argument(
                f"{_log(request)}unexpected shape for input '{inp.name}' for model '{model}'. "
                f"Expected {_shape(full)}, got {_shape(inp.shape)}. {note}"
            )
    if any(d < 0 for d in inp.shape):
        raise invalid_argument(
            f"{_log(request)}All input dimensions should be specified for input '{inp.name}' "
            f"for model '{model}', got {_shape(inp.shape)}"
        )
    if io.HasField("reshape"):
        shape = _fill(list(io.reshape.shape), list(io.dims), shape)
    full_shape = tuple(([batch] if config.max_batch_size > 0 else []) + shape)
    if inp.datatype != v2_types.BYTES:
        expected = int(np.prod(inp.shape, dtype=object)) * v2_types.item_size(inp.datatype)
        if len(inp.data) != expected:
            raise invalid_argument(
                f"{_log(request)}input byte size mismatch for input '{inp.name}' for model "
                f"'{model}'. Expected {expected}, got {len(inp.data)}"
            )
    return v2_types.decode(inp.data, inp.datatype, full_shape, inp.name, model, request.id)


def _fill(target: list[int], source_dims: list[int], values: list[int]) -> list[int]:
    """A reshape's shape with its variable dimensions taken, in order, from the dimensions
    that are variable in `source_dims` (Triton's reshape of inputs and outputs)."""
    variable = [v for d, v in zip(source_dims, values, strict=False) if d == WILDCARD]
    filled = []
    for dim in target:
        filled.append(variable.pop(0) if dim == WILDCARD and variable else dim)
    return filled


def _output(spec: ModelSpec, name: str, array: np.ndarray, batch: int) -> InferOutput:
    """One output with its config data type and (after a reshape) config shape."""
    io = next(o for o in spec.config.output if o.name == name)
    datatype = _datatype(io.data_type) if io.data_type else v2_types.from_numpy(array.dtype)
    shape = list(array.shape)
    if io.HasField("reshape"):
        body = shape[1:] if spec.config.max_batch_size > 0 else shape
        dims = _fill(list(io.dims), list(io.reshape.shape), body)
        shape = ([batch] if spec.config.max_batch_size > 0 else []) + dims
        array = array.reshape(shape)
    return InferOutput(name, datatype or "INVALID", tuple(shape), array)
