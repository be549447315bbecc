"""The gRPC front-end: tensorflow.serving PredictionService and ModelService over ServerCore,
plus the standard grpc.health.v1 service, answering as tensorflow_model_server does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import inference, metrics
from serving.core import ServerCore
from serving.errors import ServingError, grpc_message, invalid_argument
from serving.servable import Servable

T = TypeVar("T")

SIGNATURE_DEF_FIELD = "signature_def"
HEALTH_SERVICES = ("", "ModelService", "PredictionService")
NO_DEADLINE_S = 1e7


def _answer(context: grpc.ServicerContext, handler: Callable[[], T]) -> T:
    """Runs a handler; a ServingError becomes the call's status (message cut at 1024 chars)."""
    try:
        return handler()
    except ServingError as e:
        context.abort(e.code, grpc_message(e.message))
        raise  # unreachable: abort raises


def _counted(context: grpc.ServicerContext, request: Any, api: str, handler: Callable[[], T]) -> T:
    """`_answer` plus `RecordModelRequestCount` / `RecordRequestLatency` (entrypoint GRPC), as
    `prediction_service_impl.cc` does for Predict, Classify and Regress."""
    start = time.monotonic()
    status = "OK"
    try:
        return handler()
    except ServingError as e:
        status = e.code.name
        context.abort(e.code, grpc_message(e.message))
        raise  # unreachable: abort raises
    finally:
        metrics.record_request(
            request.model_spec.name, api, "GRPC", status, time.monotonic() - start
        )


def _timeout(context: grpc.ServicerContext) -> float | None:
    """The client's deadline becomes the run timeout (`prediction_service_util.cc`); grpcio
    reports "no deadline" as an enormous remaining time."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > NO_DEADLINE_S else remaining


def _require_spec(request: object) -> None:
    if not request.HasField("model_spec"):  # type: ignore[attr-defined]
        raise invalid_argument("Missing ModelSpec")


def _lookup(core: ServerCore, spec: model_pb2.ModelSpec) -> Servable:
    version = spec.version.value if spec.HasField("version") else None
    return core.servable(spec.name, version, spec.version_label or None)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, GetModelMetadata, Classify, Regress and MultiInference."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        """Model spec, servable lookup, then the shared Predict semantics."""

        def handle() -> predict_pb2.PredictResponse:
            _require_spec(request)
            servable = _lookup(self._core, request.model_spec)
            return inference.predict(
                servable,
                request,
                _timeout(context),
                self._core.options.enable_serialization_as_tensor_content,
            )

        return _counted(context, request, "Predict", handle)

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Only `signature_def` metadata exists; it is checked before the servable lookup."""

        def handle() -> get_model_metadata_pb2.GetModelMetadataResponse:
            _require_spec(request)
            if not request.metadata_field:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for name in request.metadata_field:
                if name != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {name} is not supported")
            return self._core.model_metadata(_lookup(self._core, request.model_spec))

        return _answer(context, handle)

    def Classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        """tf.Example classification; Keras predict signatures fail the signature checks."""

        def handle() -> classification_pb2.ClassificationResponse:
            _require_spec(request)
            servable = _lookup(self._core, request.model_spec)
            return inference.classify(servable, request, _timeout(context))

        return _counted(context, request, "Classify", handle)

    def Regress(
        self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        """tf.Example regression; Keras predict signatures fail the signature checks."""

        def handle() -> regression_pb2.RegressionResponse:
            _require_spec(request)
            servable = _lookup(self._core, request.model_spec)
            return inference.regress(servable, request, _timeout(context))

        return _counted(context, request, "Regress", handle)

    def MultiInference(
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        """The servable comes from the first task's model spec, as in `RunMultiInference`."""

        def handle() -> inference_pb2.MultiInferenceResponse:
            spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
            servable = _lookup(self._core, spec)
            return inference.multi_inference(servable, request, _timeout(context))

        return _answer(context, handle)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Version labels are ignored here: without a version, every known version is listed."""

        def handle() -> get_model_status_pb2.GetModelStatusResponse:
            _require_spec(request)
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            return self._core.model_status(spec.name, version)

        return _answer(context, handle)

    def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        """Applies a new model_config_list; blocks until newly added models have loaded."""

        def handle() -> model_management_pb2.ReloadConfigResponse:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            self._core.reload_config(request.config)
            return model_management_pb2.ReloadConfigResponse()

        return _answer(context, handle)


def add_services(
    server: grpc.Server, core: ServerCore, health_check: bool = True
) -> health.HealthServicer | None:
    """Registers PredictionService, ModelService and, with `health_check`
    (`--enable_grpc_healthcheck_service`), Health with every name SERVING."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    if not health_check:
        return None
    health_servicer = health.HealthServicer()
    for name in HEALTH_SERVICES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return health_servicer
