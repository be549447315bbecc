"""TF Serving's gRPC contract (docs: /work/shared/tfserving_contract.md §1-§3): codes, exact
messages and response shapes. Runs against the embedded server, or TF_SERVING_GRPC_TARGET."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import ServingClient, ServingClientError, make_ndarray, make_tensor_proto
from tests.conftest import wait_for
from tests.tfs_models import MODELS, half_plus, write_savedmodel

HPT = "half_plus_two"
F32 = np.float32


class Stubs:
    """Raw stubs, for requests the client API deliberately cannot build (no model_spec...)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def stubs(server: Any) -> Stubs:
    channel = grpc.insecure_channel(server.grpc_target)
    yield Stubs(channel)
    channel.close()


def rpc_error(call: Callable[..., Any], request: Any) -> tuple[grpc.StatusCode, str]:
    """The status of a call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code(), info.value.details()


def predict_request(model: str = HPT, **inputs: Any) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(make_tensor_proto(value))
    return request


X = np.array([1.0, 2.0, 5.0], dtype=F32)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


# --- Predict: order of checks (§1.1) -------------------------------------------------------------


def test_missing_model_spec(stubs: Stubs) -> None:
    assert rpc_error(stubs.predict.Predict, predict_pb2.PredictRequest()) == (
        INVALID,
        "Missing ModelSpec",
    )


def test_empty_model_name(stubs: Stubs) -> None:
    request = predict_request(x=X)
    request.model_spec.name = ""
    assert rpc_error(stubs.predict.Predict, request) == (
        INVALID,
        "ModelSpec has no name specified.",
    )


def test_unknown_model(stubs: Stubs) -> None:
    assert rpc_error(stubs.predict.Predict, predict_request("no_such_model", x=X)) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(no_such_model)",
    )


def test_unknown_version(stubs: Stubs) -> None:
    request = predict_request(x=X)
    request.model_spec.version.value = 7
    assert rpc_error(stubs.predict.Predict, request) == (
        grpc.StatusCode.NOT_FOUND,
        f"Servable not found for request: Specific({HPT}, 7)",
    )


def test_unknown_label(stubs: Stubs) -> None:
    request = predict_request(x=X)
    request.model_spec.version_label = "beta"
    assert rpc_error(stubs.predict.Predict, request) == (
        INVALID,
        "Unrecognized servable version label: beta",
    )


def test_unknown_signature_is_failed_precondition(stubs: Stubs) -> None:
    request = predict_request(x=X)
    request.model_spec.signature_name = "nope"
    assert rpc_error(stubs.predict.Predict, request) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    )


def test_missing_input(stubs: Stubs) -> None:
    request = predict_request("multi_io", a=np.zeros((1, 3), F32))
    assert rpc_error(stubs.predict.Predict, request) == (
        INVALID,
        "input size does not match signature: 1!=2 len({a}) != len({a,b}). "
        "Sent extra: {}. Missing but required: {b}.",
    )


def test_extra_input(stubs: Stubs) -> None:
    request = predict_request(x=X, w=X)
    assert rpc_error(stubs.predict.Predict, request) == (
        INVALID,
        "input size does not match signature: 2!=1 len({w,x}) != len({x}). "
        "Sent extra: {w}. Missing but required: {}.",
    )


def test_wrong_input_name(stubs: Stubs) -> None:
    assert rpc_error(stubs.predict.Predict, predict_request(w=X)) == (
        INVALID,
        "Signature input alias: x(feed name: x:0) not found in request and no default value "
        "provided. Inputs expected to be in the request {w}, or default input alias set: ",
    )


def test_tensor_content_of_wrong_length(stubs: Stubs) -> None:
    request = predict_request(x=X)
    request.inputs["x"].tensor_content = X.tobytes()[:-1]
    assert rpc_error(stubs.predict.Predict, request) == (INVALID, "tensor parsing error: x")


def test_wrong_dtype_comes_from_the_session(stubs: Stubs) -> None:
    code, message = rpc_error(stubs.predict.Predict, predict_request(x=X.astype(np.float64)))
    assert code == INVALID
    assert message.startswith("Expects arg[0] to be float but double is provided")


def test_compatible_shape_is_not_validated(client: ServingClient) -> None:
    """No shape check against the SignatureDef: [2,4] for a [-1,3] input just runs (#1527)."""
    a = np.arange(8, dtype=F32).reshape(2, 4)
    out = client.predict({"a": a, "b": np.array([1, 2], np.int64)}, "multi_io")
    np.testing.assert_array_equal(out["sum"], a + np.array([[1], [2]], F32))


def test_incompatible_shape_fails_in_the_kernel(stubs: Stubs) -> None:
    request = predict_request("multi_io", a=np.zeros((2, 3), F32), b=np.array([1, 2, 3], np.int64))
    code, message = rpc_error(stubs.predict.Predict, request)
    assert code == INVALID
    # The kernel's wording, operand order included, depends on graph rewrites (§8).
    assert message.startswith("Incompatible shapes: ")
    assert "[2,3]" in message and "[3,1]" in message


def test_unknown_output_filter(stubs: Stubs) -> None:
    request = predict_request("multi_io", a=np.zeros((1, 3), F32), b=np.array([1], np.int64))
    request.output_filter.append("nope")
    assert rpc_error(stubs.predict.Predict, request) == (
        INVALID,
        "output tensor alias not found in signature: nope Outputs expected to be in the set "
        "{scaled,sum}.",
    )


def test_duplicate_output_filter(stubs: Stubs) -> None:
    request = predict_request("multi_io", a=np.zeros((1, 3), F32), b=np.array([1], np.int64))
    request.output_filter.extend(["sum", "sum"])
    assert rpc_error(stubs.predict.Predict, request) == (
        INVALID,
        "duplicate output tensor alias: sum",
    )


# --- Predict: semantics of a successful call (§1.2) ----------------------------------------------


def test_latest_version_and_echoed_model_spec(stubs: Stubs) -> None:
    response = stubs.predict.Predict(predict_request(x=X), timeout=30)
    assert response.model_spec.name == HPT
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 2
    assert response.model_spec.version_label == ""
    np.testing.assert_array_equal(make_ndarray(response.outputs["y"]), half_plus(X, 2))


@pytest.mark.parametrize(("label", "version"), [("stable", 1), ("canary", 2)])
def test_label_resolves_and_echoes_the_number(stubs: Stubs, label: str, version: int) -> None:
    request = predict_request(x=X)
    request.model_spec.version_label = label
    response = stubs.predict.Predict(request, timeout=30)
    assert response.model_spec.version.value == version
    assert response.model_spec.version_label == ""
    np.testing.assert_array_equal(make_ndarray(response.outputs["y"]), half_plus(X, version))


def test_specific_version_and_named_signature(client: ServingClient) -> None:
    out = client.predict({"x": X}, HPT, version=1)
    np.testing.assert_array_equal(out["y"], half_plus(X, 1))
    out = client.predict({"x": X}, HPT, signature="times_three")
    np.testing.assert_array_equal(out["y"], X * F32(3))


def test_response_uses_typed_fields_with_full_shape(stubs: Stubs) -> None:
    response = stubs.predict.Predict(predict_request(x=X), timeout=30)
    y = response.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in y.tensor_shape.dim] == [3]
    assert y.tensor_content == b""
    assert list(y.float_val) == half_plus(X, 2).tolist()


def test_float_val_without_shape_is_a_scalar(stubs: Stubs) -> None:
    """The half_plus_two test of TF Serving: x=float_val[2.0], no shape -> y scalar 3.0."""
    request = predict_request()
    request.model_spec.version.value = 1
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    y = stubs.predict.Predict(request, timeout=30).outputs["y"]
    assert y.HasField("tensor_shape") and len(y.tensor_shape.dim) == 0
    assert list(y.float_val) == [3.0]


def test_short_float_val_repeats_its_last_value(stubs: Stubs) -> None:
    request = predict_request()
    request.model_spec.version.value = 1
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = 3
    request.inputs["x"].float_val.append(1.0)
    y = stubs.predict.Predict(request, timeout=30).outputs["y"]
    assert list(y.float_val) == [2.5, 2.5, 2.5]


def test_output_filter_selects_outputs(client: ServingClient) -> None:
    inputs = {"a": np.ones((2, 3), F32), "b": np.array([1, 2], np.int64)}
    assert set(client.predict(inputs, "multi_io")) == {"sum", "scaled"}
    only = client.predict(inputs, "multi_io", output_filter=["scaled"])
    assert list(only) == ["scaled"]
    np.testing.assert_array_equal(only["scaled"], np.array([6.0, 6.0], F32))


def test_batch_rows_match_single_rows(client: ServingClient) -> None:
    """A batch is split row by row exactly: each row equals its own single-row prediction."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 3)).astype(F32)
    b = rng.integers(0, 10, 16).astype(np.int64)
    batch = client.predict({"a": a, "b": b}, "multi_io")
    for i in range(len(a)):
        row = client.predict({"a": a[i : i + 1], "b": b[i : i + 1]}, "multi_io")
        for key in ("sum", "scaled"):
            np.testing.assert_array_equal(batch[key][i : i + 1], row[key])


def test_string_tensors_round_trip(client: ServingClient) -> None:
    out = client.predict({"text": np.array([b"hi", "h\u00e9".encode()], dtype=object)}, "strings")
    assert out["text_bytes"].tolist() == [b"hi", "h\u00e9".encode()]
    np.testing.assert_array_equal(out["length"], np.array([2, 3], np.int32))


# --- GetModelMetadata (§2.1) ---------------------------------------------------------------------


def metadata_request(
    model: str | None = HPT, fields: tuple[str, ...] = ("signature_def",)
) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    if model is not None:
        request.model_spec.name = model
    return request


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (metadata_request(None), "Missing ModelSpec"),
        (
            metadata_request(fields=()),
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (metadata_request(fields=("signature_def", "foo")), "Metadata field foo is not supported"),
    ],
    ids=["no-spec", "no-field", "bad-field"],
)
def test_metadata_errors(stubs: Stubs, request_: Any, expected: str) -> None:
    assert rpc_error(stubs.predict.GetModelMetadata, request_) == (INVALID, expected)


def test_metadata_unknown_model(stubs: Stubs) -> None:
    assert rpc_error(stubs.predict.GetModelMetadata, metadata_request("nope")) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )


def test_metadata_shape(stubs: Stubs) -> None:
    response = stubs.predict.GetModelMetadata(metadata_request(), timeout=30)
    assert response.model_spec.name == HPT
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == ""
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(sig_map)
    assert set(sig_map.signature_def) == {"serving_default", "times_three"}
    sig = sig_map.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert sig.inputs["x"].name == "x:0"
    assert sig.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [-1]


def test_metadata_by_label_and_twice_the_field(client: ServingClient, stubs: Stubs) -> None:
    assert client.metadata(HPT, version_label="stable").version == 1
    request = metadata_request(fields=("signature_def", "signature_def"))
    assert stubs.predict.GetModelMetadata(request, timeout=30).model_spec.version.value == 2


# --- GetModelStatus (§2.2) -----------------------------------------------------------------------


def status_request(
    model: str | None = HPT, version: int | None = None
) -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    if model is not None:
        request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    return request


def test_status_errors(stubs: Stubs) -> None:
    assert rpc_error(stubs.models.GetModelStatus, status_request(None)) == (
        INVALID,
        "Missing ModelSpec",
    )
    assert rpc_error(stubs.models.GetModelStatus, status_request("nope")) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    assert rpc_error(stubs.models.GetModelStatus, status_request(HPT, 7)) == (
        grpc.StatusCode.NOT_FOUND,
        f"Could not find version 7 of model {HPT}",
    )


def test_status_lists_versions_newest_first(stubs: Stubs) -> None:
    response = stubs.models.GetModelStatus(status_request(), timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, available),
        (1, available),
    ]
    for s in response.model_version_status:
        assert s.HasField("status")
        assert (s.status.error_code, s.status.error_message) == (0, "")


def test_status_of_one_version_and_label_is_ignored(stubs: Stubs) -> None:
    response = stubs.models.GetModelStatus(status_request(HPT, 1), timeout=30)
    assert [s.version for s in response.model_version_status] == [1]
    request = status_request()
    request.model_spec.version_label = "stable"
    response = stubs.models.GetModelStatus(request, timeout=30)
    assert [s.version for s in response.model_version_status] == [2, 1]


# --- Message size (§1.2, #1382) ------------------------------------------------------------------


def test_large_response_needs_a_larger_client_limit(server: Any) -> None:
    """A tiny request (float_val fill rule) with a 4.8 MB answer: gRPC's default 4 MB receive
    limit fails on the client with RESOURCE_EXHAUSTED; a raised limit gets it."""
    request = predict_request()
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = 1_200_000
    request.inputs["x"].float_val.append(1.0)
    with ServingClient(server.grpc_target) as small:
        with pytest.raises(ServingClientError) as info:
            small.predict_raw(request)
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "vs. 4194304)" in info.value.message
    with ServingClient(server.grpc_target, max_message_bytes=16 * 1024 * 1024) as big:
        y = make_ndarray(big.predict_raw(request).outputs["y"])
    assert y.shape == (1_200_000,) and float(y[0]) == 3.5


# --- Version switching (§3): needs write access to the model base path ---------------------------


def test_new_version_is_picked_up_and_old_one_unloaded(server: Any, client: ServingClient) -> None:
    if not server.embedded:
        pytest.skip("version switching writes into the model base path: embedded server only")
    base = server.repo / "tfserving" / "switch"
    x = np.array([2.0], F32)
    np.testing.assert_array_equal(client.predict({"x": x}, "switch")["y"], half_plus(x, 1))

    # A directory whose name does not parse as an integer is never a version: "3.partial"
    # stays on disk through the polls that find version 2, and never shows up in the status.
    write_savedmodel(base / "3.partial", MODELS["half_plus_two"][2])
    write_savedmodel(base / "2.partial", MODELS["half_plus_two"][2])
    assert [s.version for s in client.status("switch")] == [1]

    # Publish atomically (rename), as the exporter does; the 1 s poll picks it up.
    (base / "2.partial").rename(base / "2")

    def serves_v2() -> bool:
        spec = client.predict_raw(client.predict_request({"x": x}, "switch")).model_spec
        return spec.version.value == 2

    wait_for(serves_v2, "version 2 to be picked up")
    np.testing.assert_array_equal(client.predict({"x": x}, "switch")["y"], half_plus(x, 2))

    # latest{1}: version 1 is unloaded once 2 is AVAILABLE, and stays listed as END.
    def v1_ended() -> bool:
        return {s.version: s.state for s in client.status("switch")} == {2: "AVAILABLE", 1: "END"}

    wait_for(v1_ended, "version 1 to end while 2 is AVAILABLE")
    with pytest.raises(ServingClientError) as info:
        client.predict({"x": x}, "switch", version=1)
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(switch, 1)",
    )
