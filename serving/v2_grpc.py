"""The Open Inference Protocol's gRPC binding: `inference.GRPCInferenceService` over
`serving.open_inference`, with the stubs tritonclient generates from Triton's grpc_service.proto.

Tensor data arrives as `raw_input_contents` (what tritonclient sends) or as typed `contents`,
both turned into tensor bytes with the checks and texts of Triton's `InferGRPCToInput`; outputs
always go back as `raw_output_contents`, as Triton answers. Status codes are Triton's
(`GrpcStatusUtil::CodeToStatus`), messages cut at 1024 characters like every gRPC answer here.
Streaming, statistics, repository, shared-memory, trace and log RPCs answer UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from serving import v2_types
from serving.errors import ServingError, grpc_message, invalid_argument
from serving.grpc_service import NO_DEADLINE_S
from serving.open_inference import DataPlane, InferInput, InferRequest, InferResponse

T = TypeVar("T")

# Typed `contents` fields in Triton's order, with the data type each one carries; int_contents
# and uint_contents also carry the 8- and 16-bit types (one 32-bit value per element).
_CONTENTS = (
    ("bool_contents", {"BOOL"}, "BOOL"),
    ("int_contents", {"INT8", "INT16"}, "INT32"),
    ("int64_contents", set(), "INT64"),
    ("uint_contents", {"UINT8", "UINT16"}, "UINT32"),
    ("uint64_contents", set(), "UINT64"),
    ("fp32_contents", set(), "FP32"),
    ("fp64_contents", set(), "FP64"),
    ("bytes_contents", set(), v2_types.BYTES),
)


def _answer(context: grpc.ServicerContext, handler: Callable[[], T]) -> T:
    try:
        return handler()
    except ServingError as e:
        context.abort(e.code, grpc_message(e.message))
        raise  # unreachable: abort raises


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > NO_DEADLINE_S else remaining


def _typed_contents(tensor: Any, model: str) -> bytes:
    """One input's typed `contents` as tensor bytes (`InferGRPCToInputHelper`)."""
    name, datatype = tensor.name, tensor.datatype
    data = b""
    for field, narrow, wide in _CONTENTS:
        values = getattr(tensor.contents, field)
        if not values:
            continue
        carried = datatype if datatype in narrow else wide
        if data:
            raise invalid_argument(
                f"unexpected explicit tensor data for input tensor '{name}' for model '{model}', "
                "binary data was already supplied."
            )
        if carried != datatype:
            expected = datatype if datatype in v2_types.NUMPY else "INVALID"
            raise invalid_argument(
                f"unexpected explicit tensor data for input tensor '{name}' for model '{model}' "
                f"of type '{carried}', expected datatype '{expected}'"
            )
        if carried == v2_types.BYTES:
            data = v2_types.encode_bytes(list(values))
        else:
            source = np.asarray(values, dtype=np.uint8 if carried == "BOOL" else None)
            data = source.astype(v2_types.NUMPY[carried]).tobytes()
    return data


def _parameter(value: Any) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def _request(request: service_pb2.ModelInferRequest) -> InferRequest:
    """`InferGRPCToInput` + `SetInferenceRequestMetadata`."""
    model = request.model_name
    inputs: list[InferInput] = []
    raw_index = 0
    for tensor in request.inputs:
        if "shared_memory_region" in tensor.parameters:
            raise invalid_argument(
                f"Unable to find system shared memory region for input '{tensor.name}' (this "
                "server has no shared memory extension)"
            )
        if tensor.HasField("contents") and request.raw_input_contents:
            raise invalid_argument(
                f"contents field must not be specified when using raw_input_contents for "
                f"'{tensor.name}' for model '{model}'"
            )
        if tensor.HasField("contents"):
            data = _typed_contents(tensor, model)
        elif raw_index < len(request.raw_input_contents):
            data = request.raw_input_contents[raw_index]
            raw_index += 1
        else:
            raise invalid_argument(
                f"unable to find data for input tensor '{tensor.name}' for model '{model}' in "
                "request."
            )
        inputs.append(InferInput(tensor.name, tensor.datatype, tuple(tensor.shape), data))
    for output in request.outputs:
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in output.parameters:
                raise invalid_argument(
                    f"output '{output.name}' asks for '{unsupported}', which this server does "
                    "not support"
                )
    parameters = {k: _parameter(v) for k, v in request.parameters.items()}
    return InferRequest(
        model,
        request.model_version,
        request.id,
        inputs,
        [o.name for o in request.outputs],
        parameters,
    )


def _response(response: InferResponse) -> service_pb2.ModelInferResponse:
    message = service_pb2.ModelInferResponse(
        model_name=response.model, model_version=str(response.version), id=response.id
    )
    for out in response.outputs:
        message.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.shape))
        message.raw_output_contents.append(out.data())
    return message


def _tensors(entries: list[dict[str, Any]]) -> list[Any]:
    return [service_pb2.ModelMetadataResponse.TensorMetadata(**e) for e in entries]


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Health, metadata, config and ModelInfer of the Open Inference Protocol."""

    def __init__(self, core: Any) -> None:
        self._plane = DataPlane(core)

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=self._plane.live())

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self._plane.ready())

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _answer(
            context,
            lambda: service_pb2.ModelReadyResponse(
                ready=self._plane.model_ready(request.name, request.version)
            ),
        )

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(**self._plane.server_metadata())

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle() -> Any:
            meta = self._plane.model_metadata(request.name, request.version)
            return service_pb2.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=_tensors(meta["inputs"]),
                outputs=_tensors(meta["outputs"]),
            )

        return _answer(context, handle)

    def ModelConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _answer(
            context,
            lambda: service_pb2.ModelConfigResponse(
                config=self._plane.model_config(request.name, request.version)
            ),
        )

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handle() -> Any:
            self._plane.servable(request.model_name, request.model_version)  # lookup first
            response = self._plane.infer(_request(request), _timeout(context), "GRPC")
            return _response(response)

        return _answer(context, handle)


def add_v2_service(server: grpc.Server, core: Any) -> None:
    """Registers `inference.GRPCInferenceService` beside TF Serving's services."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(core), server)
