"""gRPC client for TensorFlow Serving (real or embedded), on the tensorflow_serving.apis stubs.

Numeric tensors go out as raw `tensor_content` bytes (one memcpy instead of a Python loop over
`*_val` fields) and responses are decoded straight into numpy by `serving.tensor_proto`, the
codec the server uses too, so the client never runs TensorFlow ops. Every RPC failure
surfaces as `ServingClientError` carrying the gRPC code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import tensor_proto

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""gRPC's own default receive limit; TF Serving allows 2 GB, so raise it for big tensors."""

DEFAULT_TIMEOUT_S = 30.0


class ServingClientError(Exception):
    """An RPC failed; `code` is the gRPC status code, `message` the server's exact text."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus: `state` is the enum name (e.g. "AVAILABLE")."""

    version: int
    state: str
    error_code: int
    error_message: str


@dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata decoded: the served version and its full SignatureDef map."""

    name: str
    version: int
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]


def make_tensor_proto(value: Any) -> tensor_pb2.TensorProto:
    """Encode an array as TF does for the wire: raw little-endian bytes, strings in string_val."""
    arr = np.asarray(value)
    try:
        return tensor_proto.encode(arr, content=True)
    except tensor_proto.TensorParseError:
        raise TypeError(f"numpy dtype {arr.dtype} has no TensorFlow equivalent") from None


def make_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a TensorProto like tf.make_ndarray (tensor_content, or typed *_val fields with
    TF's fill rules: extra values ignored, a short list repeats its last value, none = zeros).
    The array is the caller's own (writeable, not a view of the response)."""
    array = tensor_proto.decode(proto)
    return array if array.flags.writeable else array.copy()


def _set_spec(
    spec: Any, model: str, version: int | None = None, version_label: str | None = None
) -> None:
    """Fill a request's ModelSpec: the name, and a version or a label when given."""
    spec.name = model
    if version is not None:
        spec.version.value = version
    if version_label is not None:
        spec.version_label = version_label


class ServingClient:
    """Blocking client for PredictionService and ModelService on one channel.

    One job at ~160 lines: one method per RPC a caller uses, each a thin typed wrapper over
    the official stubs sharing the channel, the error mapping and the TensorProto codec."""

    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (idempotent)."""
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as err:
            raise ServingClientError(err.code(), err.details() or "") from None

    def predict_request(
        self,
        inputs: Mapping[str, Any],
        model: str,
        signature: str = "serving_default",
        version: int | None = None,
        version_label: str | None = None,
        output_filter: Iterable[str] | None = None,
    ) -> predict_pb2.PredictRequest:
        """Build the PredictRequest that `predict` sends (useful to replay or log it)."""
        request = predict_pb2.PredictRequest()
        _set_spec(request.model_spec, model, version, version_label)
        request.model_spec.signature_name = signature
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(make_tensor_proto(value))
        if output_filter:
            request.output_filter.extend(output_filter)
        return request

    def predict_raw(
        self, request: predict_pb2.PredictRequest, timeout: float | None = None
    ) -> predict_pb2.PredictResponse:
        """Send a prepared request; the response keeps the echoed model_spec (served version)."""
        return self._call(self._predict.Predict, request, timeout)

    def predict(
        self,
        inputs: Mapping[str, Any],
        model: str,
        signature: str = "serving_default",
        version: int | None = None,
        version_label: str | None = None,
        output_filter: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run Predict and return every (or every filtered) output as a numpy array.

        Inputs are sent with their own dtype: a float64 array reaches a float signature as
        DT_DOUBLE and the server rejects it, exactly as TF Serving does.
        """
        request = self.predict_request(
            inputs, model, signature, version, version_label, output_filter
        )
        response = self.predict_raw(request, timeout)
        return {key: make_ndarray(t) for key, t in response.outputs.items()}

    def metadata(
        self,
        model: str,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        """GetModelMetadata(signature_def), unpacked from its Any into SignatureDefs."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        _set_spec(request.model_spec, model, version, version_label)
        request.metadata_field.append("signature_def")
        response = self._call(self._predict.GetModelMetadata, request, timeout)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(sig_map):
            raise ServingClientError(
                grpc.StatusCode.INTERNAL, "metadata['signature_def'] is not a SignatureDefMap"
            )
        return ModelMetadata(
            name=response.model_spec.name,
            version=response.model_spec.version.value,
            signature_defs=dict(sig_map.signature_def),
        )

    def status(
        self, model: str, version: int | None = None, timeout: float | None = None
    ) -> list[VersionStatus]:
        """GetModelStatus: every known version (newest first), or the one asked for."""
        request = get_model_status_pb2.GetModelStatusRequest()
        _set_spec(request.model_spec, model, version)
        response = self._call(self._models.GetModelStatus, request, timeout)
        return [
            VersionStatus(
                version=s.version,
                state=get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                error_code=s.status.error_code,
                error_message=s.status.error_message,
            )
            for s in response.model_version_status
        ]

    def wait_until_available(self, model: str, timeout: float = 60.0, interval: float = 0.2) -> int:
        """Poll GetModelStatus until a version is AVAILABLE; return the newest such version.

        Connection failures and NOT_FOUND are expected while the server starts or loads, so
        they are retried until `timeout`, then reported as DEADLINE_EXCEEDED with the last error.
        """
        deadline = time.monotonic() + timeout
        last = "no response yet"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServingClientError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"model {model!r} at {self.target} not AVAILABLE after {timeout:g}s "
                    f"(last: {last})",
                )
            try:
                available = [
                    s.version
                    for s in self.status(model, timeout=max(0.05, min(remaining, 5.0)))
                    if s.state == "AVAILABLE"
                ]
                if available:
                    return max(available)
                last = "no version AVAILABLE"
            except ServingClientError as err:
                if err.code not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                last = str(err)
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
