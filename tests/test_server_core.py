"""The embedded server's gRPC side and core, against real SavedModels over real gRPC.

Models are built here (a frozen TF1 graph with the SavedModel Builder, a Keras 3 `model.export`,
and a tf2onnx conversion); servers run in-process on free 127.0.0.1 ports, except one
`python -m serving` subprocess that checks the ready line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import tensor_proto
from serving.core import ServerCore, ServerOptions
from serving.errors import ServingError
from serving.model_config import config_from_flags, parse_config_text
from serving.model_config import validate_config as check_config
from serving.server import core_inputs, parse_args
from tests.conftest import REPO_ROOT, wait_for
from tests.serving_helpers import (
    AVAILABLE,
    END,
    ONES,
    Client,
    build_frozen,
    build_keras,
    build_onnx,
    predict_request,
    publish,
    rpc_error,
    running,
    tensor,
)

v1 = tf.compat.v1
INVALID = grpc.StatusCode.INVALID_ARGUMENT


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One SavedModel per kind, built once; tests copy them into version directories."""
    root = tmp_path_factory.mktemp("sources")
    return {
        "frozen1": build_frozen(root / "frozen1", 1.0),
        "frozen2": build_frozen(root / "frozen2", 2.0),
        "keras": build_keras(root / "keras"),
        "onnx": build_onnx(root / "onnx"),
    }


@pytest.fixture(scope="module")
def shared(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A config-file server: `frozen` (versions 1+2, policy all, labels), `keras`, `pinned`
    (specific policy: version 1 of 1+2)."""
    root = tmp_path_factory.mktemp("shared")
    for name, versions in (("frozen", (1, 2)), ("pinned", (1, 2))):
        (root / name).mkdir()
        for v in versions:
            publish(sources[f"frozen{v}"], root / name, v)
    (root / "keras").mkdir()
    publish(sources["keras"], root / "keras", 1)
    config = root / "models.config"
    config.write_text(
        f"""model_config_list {{
  config {{ name: "frozen" base_path: "{root}/frozen" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 1 }}
           version_labels {{ key: "canary" value: 2 }} }}
  config {{ name: "keras" base_path: "{root}/keras" model_platform: "tensorflow" }}
  config {{ name: "pinned" base_path: "{root}/pinned" model_platform: "tensorflow"
           model_version_policy {{ specific {{ versions: 1 }} }} }}
}}"""
    )
    with running(
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=0.5",
        "--enable_grpc_healthcheck_service",
    ) as client:
        yield client


# --- Predict -------------------------------------------------------------------------------


def test_predict_frozen_echoes_spec_and_uses_typed_fields(shared: Client) -> None:
    response = shared.predict.Predict(predict_request("frozen", ONES), timeout=10)
    assert response.model_spec.name == "frozen"
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 2  # latest of "all"
    assert not response.model_spec.version_label
    out = response.outputs["y"]
    assert out.dtype == tf.float32.as_datatype_enum and not out.tensor_content
    assert [d.size for d in out.tensor_shape.dim] == [2, 1]
    assert list(out.float_val) == [8.0, 8.0]


def test_predict_keras_export(shared: Client) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "keras"
    request.inputs["feat"].CopyFrom(tensor(ONES))
    response = shared.predict.Predict(request, timeout=10)
    assert list(response.outputs) == ["output_0"]
    assert tf.make_ndarray(response.outputs["output_0"]).shape == (2, 2)


def test_labels_and_versions(shared: Client) -> None:
    stable = shared.predict.Predict(predict_request("frozen", ONES, version_label="stable"))
    assert stable.model_spec.version.value == 1 and not stable.model_spec.version_label
    assert list(stable.outputs["y"].float_val) == [7.0, 7.0]
    canary = shared.predict.Predict(predict_request("frozen", ONES, version_label="canary"))
    assert canary.model_spec.version.value == 2
    pinned = shared.predict.Predict(predict_request("pinned", ONES))
    assert pinned.model_spec.version.value == 1  # specific policy: only version 1 is served
    assert shared.status("pinned") == {1: (AVAILABLE, 0)}


def _no_spec() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.inputs["x"].CopyFrom(tensor(ONES))
    return request


def _with_inputs(**inputs: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "frozen"
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value)  # type: ignore[arg-type]
    return request


def _bad_content() -> predict_pb2.PredictRequest:
    proto = tensor(ONES)
    proto.tensor_content = proto.tensor_content[:-4]
    return _with_inputs(x=proto)


def _filtered(*names: str) -> predict_pb2.PredictRequest:
    request = predict_request("frozen", ONES)
    request.output_filter.extend(names)
    return request


PREDICT_ERRORS = {
    "missing_spec": (_no_spec(), INVALID, "Missing ModelSpec"),
    "no_name": (predict_request("", ONES), INVALID, "ModelSpec has no name specified."),
    "bad_label": (
        predict_request("frozen", ONES, version_label="beta"),
        INVALID,
        "Unrecognized servable version label: beta",
    ),
    "unknown_model": (
        predict_request("nope", ONES),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown_version": (
        predict_request("frozen", ONES, version=9),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(frozen, 9)",
    ),
    "unknown_signature": (
        predict_request("frozen", ONES, signature_name="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    "empty_request": (
        _with_inputs(),
        INVALID,
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
        "Missing but required: {x}.",
    ),
    "extra_input": (
        _with_inputs(x=tensor(ONES), z=tensor(ONES)),
        INVALID,
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. "
        "Missing but required: {}.",
    ),
    "wrong_alias": (
        _with_inputs(z=tensor(ONES)),
        INVALID,
        "Signature input alias: x(feed name: x:0) not found in request and no default value "
        "provided. Inputs expected to be in the request {z}, or default input alias set: ",
    ),
    "bad_tensor_content": (_bad_content(), INVALID, "tensor parsing error: x"),
    "unknown_output": (
        _filtered("y", "w"),
        INVALID,
        "output tensor alias not found in signature: w Outputs expected to be in the set {y}.",
    ),
    "duplicate_output": (_filtered("y", "y"), INVALID, "duplicate output tensor alias: y"),
    "wrong_dtype": (
        predict_request("frozen", np.ones((2, 3))),
        INVALID,
        "Expects arg[0] to be float but double is provided",
    ),
    "string_for_float": (
        predict_request("frozen", np.array([b"a"], dtype=object)),
        INVALID,
        "Expects arg[0] to be float but string is provided",
    ),
}


@pytest.mark.parametrize("case", sorted(PREDICT_ERRORS))
def test_predict_errors_match_tf_serving(shared: Client, case: str) -> None:
    request, code, message = PREDICT_ERRORS[case]
    assert rpc_error(shared.predict.Predict, request) == (code, message)


def test_incompatible_shape_is_the_kernel_error(shared: Client) -> None:
    code, message = rpc_error(
        shared.predict.Predict, predict_request("frozen", np.ones((2, 4), np.float32))
    )
    assert code == INVALID
    assert message.startswith("Matrix size-incompatible: In[0]: [2,4], In[1]: [3,1]")


def test_long_messages_are_truncated(shared: Client) -> None:
    name = "m" * 2000
    code, message = rpc_error(shared.predict.Predict, predict_request(name, ONES))
    assert code == grpc.StatusCode.NOT_FOUND
    full = f"Servable not found for request: Latest({name})"
    assert message == full[:1024] + "...TRUNCATED"


def test_server_survives_bad_requests(shared: Client) -> None:
    for request, _, _ in PREDICT_ERRORS.values():
        with pytest.raises(grpc.RpcError):
            shared.predict.Predict(request, timeout=10)
    assert shared.predict.Predict(predict_request("frozen", ONES), timeout=10).outputs["y"]


# --- tensor decoding -----------------------------------------------------------------------


def test_decode_fill_truncate_and_zero_rules() -> None:
    proto = tensor(np.zeros((3,), np.float32))
    proto.ClearField("tensor_content")
    proto.float_val.extend([1.0])
    np.testing.assert_array_equal(tensor_proto.decode(proto), [1.0, 1.0, 1.0])
    proto.float_val[:] = [1.0, 2.0]
    np.testing.assert_array_equal(tensor_proto.decode(proto), [1.0, 2.0, 2.0])
    proto.float_val[:] = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(tensor_proto.decode(proto), [1.0, 2.0, 3.0])
    proto.ClearField("float_val")
    np.testing.assert_array_equal(tensor_proto.decode(proto), [0.0, 0.0, 0.0])
    scalar = tf.make_tensor_proto(1.0)
    scalar.float_val[:] = [1.0, 2.0, 3.0]
    assert tensor_proto.decode(scalar).shape == ()  # no tensor_shape: a scalar, first value
    for array in (np.arange(6, dtype=np.int64).reshape(2, 3), np.array([b"a", b"bc"], object)):
        decoded = tensor_proto.decode(tf.make_tensor_proto(array))
        np.testing.assert_array_equal(decoded, tf.make_ndarray(tf.make_tensor_proto(array)))
        encoded = tensor_proto.encode(array)
        assert not encoded.tensor_content
        np.testing.assert_array_equal(tf.make_ndarray(encoded), array)


# --- metadata, status, health ------------------------------------------------------------


def _metadata_request(name: str, *fields: str) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = name
    return request


def test_metadata_packs_every_signature_def(shared: Client) -> None:
    response = shared.predict.GetModelMetadata(_metadata_request("keras", "signature_def"))
    assert response.model_spec.name == "keras" and response.model_spec.version.value == 1
    assert not response.model_spec.signature_name
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    packed.Unpack(sig_map)
    assert {"serving_default", "__saved_model_init_op"} <= set(sig_map.signature_def)
    assert (
        sig_map.signature_def["serving_default"].inputs["feat"].dtype == tf.float32.as_datatype_enum
    )
    frozen = shared.predict.GetModelMetadata(_metadata_request("frozen", "signature_def"))
    frozen.metadata["signature_def"].Unpack(sig_map)
    assert set(sig_map.signature_def) == {"serving_default", "classify", "regress"}


def test_metadata_errors(shared: Client) -> None:
    call = shared.predict.GetModelMetadata
    missing = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    assert rpc_error(call, missing) == (INVALID, "Missing ModelSpec")
    assert rpc_error(call, _metadata_request("frozen")) == (
        INVALID,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    assert rpc_error(call, _metadata_request("frozen", "signature_def", "other")) == (
        INVALID,
        "Metadata field other is not supported",
    )


def test_model_status(shared: Client) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "frozen"
    response = shared.models.GetModelStatus(request)
    assert [s.version for s in response.model_version_status] == [2, 1]
    assert all(s.state == AVAILABLE and s.HasField("status") for s in response.model_version_status)
    request.model_spec.version.value = 1
    assert [s.version for s in shared.models.GetModelStatus(request).model_version_status] == [1]
    request.model_spec.version.value = 7
    assert rpc_error(shared.models.GetModelStatus, request) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 7 of model frozen",
    )
    unknown = get_model_status_pb2.GetModelStatusRequest()
    unknown.model_spec.name = "nope"
    assert rpc_error(shared.models.GetModelStatus, unknown) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    bare = get_model_status_pb2.GetModelStatusRequest()
    assert rpc_error(shared.models.GetModelStatus, bare) == (INVALID, "Missing ModelSpec")


def test_health_service(shared: Client) -> None:
    """With --enable_grpc_healthcheck_service (off by default, as in TF Serving 2.21)."""
    stub = health_pb2_grpc.HealthStub(shared.channel)
    for service in ("", "ModelService", "PredictionService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


# --- Classify / Regress / MultiInference ------------------------------------------------


def _examples(request: object, *rows: list[float]) -> None:
    for row in rows:
        example = request.input.example_list.examples.add()  # type: ignore[attr-defined]
        example.features.feature["x"].float_list.value.extend(row)


def test_classify_and_regress_on_example_signatures(shared: Client) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "frozen", "classify"
    _examples(request, [1, 1, 1], [0, 0, 0])
    response = shared.predict.Classify(request, timeout=10)
    assert response.model_spec.signature_name == "classify"
    first = response.result.classifications[0].classes
    assert [(c.label, c.score) for c in first] == [("pos", 8.0), ("neg", -8.0)]
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "frozen", "regress"
    _examples(regress, [1, 1, 1])
    assert [r.value for r in shared.predict.Regress(regress).result.regressions] == [8.0]


def test_classify_and_regress_on_predict_signature(shared: Client) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "keras"
    _examples(request, [1, 1, 1])
    code, message = rpc_error(shared.predict.Classify, request)
    assert code == INVALID
    assert message.startswith(
        'No classification inputs found in SignatureDef: inputs {\n  key: "feat"'
    )
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "keras"
    code, message = rpc_error(shared.predict.Regress, regress)
    assert code == INVALID and message.startswith("No regression inputs found in SignatureDef: ")
    request.model_spec.signature_name = "nope"
    assert rpc_error(shared.predict.Classify, request) == (
        INVALID,
        "No signature was found with the name: nope",
    )
    empty = classification_pb2.ClassificationRequest()
    empty.model_spec.name, empty.model_spec.signature_name = "frozen", "classify"
    assert rpc_error(shared.predict.Classify, empty) == (INVALID, "Input is empty.")


def test_multi_inference(shared: Client) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify", "classify"), ("regress", "regress")):
        task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name, task.model_spec.signature_name = "frozen", signature
    _examples(request, [1, 1, 1])
    response = shared.predict.MultiInference(request, timeout=10)
    assert response.results[1].regression_result.regressions[0].value == 8.0
    request.tasks[1].method_name = "tensorflow/serving/predict"
    request.tasks[1].model_spec.signature_name = "serving_default"
    assert rpc_error(shared.predict.MultiInference, request) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )
    request.tasks[1].model_spec.signature_name = "classify"
    assert rpc_error(shared.predict.MultiInference, request) == (
        INVALID,
        "Duplicate evaluation of signature: classify",
    )


# --- config --------------------------------------------------------------------------------


def test_config_validation_messages() -> None:
    with pytest.raises(ServingError, match=r"INVALID_ARGUMENT: Invalid protobuf file: '<text>'"):
        parse_config_text("model_config_list { nonsense: 1 }")
    cases = {
        'config { name: "a" base_path: "/m" }': "Illegal setting neither ModelServerConfig::"
        "model_type (deprecated) nor ModelServerConfig::model_platform, model name is a",
        'config { name: "a" base_path: "/m" model_platform: "tensorflow" } '
        'config { name: "a" base_path: "/n" model_platform: "tensorflow" }': "Illegal to list "
        "model a multiple times in config list",
        'config { name: "a" base_path: "rel/m" model_platform: "tensorflow" }': "Expected model a "
        "to have an absolute path or URI; got base_path()=rel/m",
    }
    for text, message in cases.items():
        with pytest.raises(ServingError) as info:
            check_config(parse_config_text(f"model_config_list {{ {text} }}"))
        assert (info.value.code, info.value.message) == (INVALID, message)


def test_relative_model_base_path_flag_is_resolved(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    config, _ = core_inputs(parse_args(["--model_name", "m", "--model_base_path", "rel/m"]))
    (model,) = config.model_config_list.config
    assert model.base_path == str(tmp_path / "rel" / "m")


def test_batching_file_requires_enable_batching() -> None:
    args = parse_args(["--model_base_path=/m", "--batching_parameters_file=/b"])
    with pytest.raises(ServingError, match="batching_parameters_file is set without setting"):
        core_inputs(args)  # BuildAndStart's INVALID_ARGUMENT


def test_reload_config(shared: Client, sources: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "extra"
    base.mkdir()
    publish(sources["frozen1"], base, 3)
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(
        name="extra", base_path=str(base), model_platform="tensorflow"
    )
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.custom_model_config.Pack(request.config)
    assert rpc_error(shared.models.HandleReloadConfigRequest, bad) == (
        INVALID,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
        "ModelConfigList is currently supported",
    )
    labelled = model_management_pb2.ReloadConfigRequest()
    labelled.CopyFrom(request)
    labelled.config.model_config_list.config[0].version_labels["x"] = 4
    assert rpc_error(shared.models.HandleReloadConfigRequest, labelled) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "Request to assign label to version 4 of model extra, which is not currently "
        "available for inference",
    )
    shared.models.HandleReloadConfigRequest(request, timeout=30)
    assert shared.predict.Predict(predict_request("extra", ONES)).model_spec.version.value == 3
    # The reload applied exactly the new list: the earlier models are gone.
    assert rpc_error(shared.predict.Predict, predict_request("frozen", ONES))[0] == (
        grpc.StatusCode.NOT_FOUND
    )


# --- file-system polling ------------------------------------------------------------------


def test_new_version_replaces_old_without_dropping_requests(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    base = tmp_path / "m"
    base.mkdir()
    publish(sources["frozen1"], base, 1)
    flags = (
        f"--model_base_path={base}",
        "--model_name=m",
        "--file_system_poll_wait_seconds=0.2",
        "--max_num_load_retries=0",
    )
    with running(*flags) as client:
        seen: list[int] = []
        errors: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set() and len(seen) < 20000:
                try:
                    seen.append(
                        client.predict.Predict(
                            predict_request("m", ONES), timeout=10
                        ).model_spec.version.value
                    )
                except grpc.RpcError as e:
                    errors.append(f"{e.code()}: {e.details()}")

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            wait_for(lambda: len(seen) > 10, "first responses")
            publish(sources["frozen2"], base, 2)
            wait_for(lambda: seen and seen[-1] == 2, "version 2 to serve")
            switched = len(seen)
            wait_for(lambda: len(seen) > switched + 20, "20 more answers after the switch")
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=30)
        assert errors == []
        assert seen[0] == 1 and seen[-1] == 2
        wait_for(lambda: client.status("m") == {2: (AVAILABLE, 0), 1: (END, 0)}, "1 unloaded")

        # Non-numeric names are ignored; a version that fails to load does not replace 2.
        shutil.copytree(sources["frozen1"], base / "v5")
        shutil.copytree(sources["frozen1"], base / ".tmp-6")
        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_for(lambda: 3 in client.status("m") and client.status("m")[3][0] == END, "3 failed")
        _, code = client.status("m")[3]
        assert code != 0 and set(client.status("m")) == {1, 2, 3}
        assert client.predict.Predict(predict_request("m", ONES)).model_spec.version.value == 2

        # Removing every version directory unloads the model.
        shutil.rmtree(base / "3")
        shutil.rmtree(base / "2")
        shutil.rmtree(base / "1")
        wait_for(lambda: client.status("m")[2] == (END, 0), "2 unloaded")
        assert rpc_error(client.predict.Predict, predict_request("m", ONES)) == (
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(m)",
        )


def test_initial_load_failure_stops_startup(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    options = ServerOptions(max_num_load_retries=0, file_system_poll_wait_seconds=0)
    core = ServerCore(config_from_flags("bad", str(tmp_path)), options)
    with pytest.raises(ServingError) as info:
        core.start()  # a failed start stops the core itself
    assert info.value.message.startswith(
        "1 servable(s) did not become available: {{name: bad version: 1} due to error: "
        "NOT_FOUND: SavedModel file does not exist at: "
    )


def test_tag_mismatch_is_tf_message(sources: dict[str, Path], tmp_path: Path) -> None:
    publish(sources["frozen1"], tmp_path, 1)
    options = ServerOptions(
        max_num_load_retries=0, file_system_poll_wait_seconds=0, saved_model_tags=("gpu",)
    )
    with pytest.raises(ServingError) as info:
        ServerCore(config_from_flags("t", str(tmp_path)), options).start()
    assert "NOT_FOUND: Could not find meta graph def matching supplied tags: { gpu }." in str(
        info.value
    )


# --- warmup --------------------------------------------------------------------------------


def test_warmup_runs_and_bad_warmup_fails_the_load(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for base in (good, bad):
        base.mkdir()
        extra = publish(sources["frozen1"], base, 1) / "assets.extra"
        extra.mkdir()
    record = prediction_log_pb2.PredictionLog()
    record.predict_log.request.CopyFrom(predict_request("ignored", ONES))
    with tf.io.TFRecordWriter(str(good / "1/assets.extra/tf_serving_warmup_requests")) as writer:
        writer.write(record.SerializeToString())
    (bad / "1/assets.extra/tf_serving_warmup_requests").write_bytes(b"definitely not a tfrecord")
    options = ServerOptions(max_num_load_retries=0, file_system_poll_wait_seconds=0)
    core = ServerCore(config_from_flags("good", str(good)), options)
    core.start()
    assert core.servable("good").run_count == 1  # the warmup record ran once
    core.stop()
    core = ServerCore(config_from_flags("bad", str(bad)), options)
    with pytest.raises(ServingError, match="Please verify your warmup data is in TFRecord format"):
        core.start()


# --- ONNX backend ------------------------------------------------------------------------


def test_onnx_backend_serves_the_same_protocol(sources: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "onnx"
    base.mkdir()
    publish(sources["onnx"], base, 1)
    with running(f"--model_base_path={base}", "--model_name=o", "--backend=onnx") as client:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "o"
        request.inputs["x:0"].CopyFrom(tensor(ONES))
        response = client.predict.Predict(request, timeout=10)
        assert response.model_spec.version.value == 1
        assert list(response.outputs["y:0"].float_val) == [6.5, 6.5]
        request.inputs["x:0"].CopyFrom(tensor(np.ones((2, 3))))
        assert rpc_error(client.predict.Predict, request) == (
            INVALID,
            "Expects arg[0] to be float but double is provided",
        )
        metadata = client.predict.GetModelMetadata(_metadata_request("o", "signature_def"))
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        metadata.metadata["signature_def"].Unpack(sig_map)
        signature = sig_map.signature_def["serving_default"]
        assert list(signature.inputs) == ["x:0"] and list(signature.outputs) == ["y:0"]
        assert [d.size for d in signature.inputs["x:0"].tensor_shape.dim] == [-1, 3]


# --- the command line ----------------------------------------------------------------------


def _serving_process(*flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "serving", *flags],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_python_m_serving_ready_line_and_predict(sources: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "cli"
    base.mkdir()
    publish(sources["frozen1"], base, 1)
    proc = _serving_process(
        "--port=0", "--rest_api_port=0", "--model_name=cli", f"--model_base_path={base}"
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # blocks until the ports are open
        assert line.startswith("Serving gRPC on 127.0.0.1:"), line
        with grpc.insecure_channel(line.rsplit(" ", 1)[1]) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(predict_request("cli", ONES), timeout=10)
        assert list(response.outputs["y"].float_val) == [7.0, 7.0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0  # SIGTERM is a graceful stop


def test_unparsable_config_file_fails_startup_as_tf_serving(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { this is not a config }")
    proc = _serving_process("--port=0", "--rest_api_port=0", f"--model_config_file={config}")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert (
        f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{config}'" in err
    )


def test_flag_forms() -> None:
    args = parse_args(["--port", "9000", "--enable_batching=false", "--enable_model_warmup"])
    assert (args.port, args.enable_batching, args.enable_model_warmup) == (9000, False, True)
    args = parse_args(["--enable_batching", "--model_name=x", "--saved_model_tags=serve,gpu"])
    assert args.enable_batching and args.model_name == "x"
    _, options = core_inputs(parse_args(["--model_base_path=/m", "--saved_model_tags=serve,gpu"]))
    assert options.saved_model_tags == ("serve", "gpu") and options.batching is None


def test_latest_two_and_config_file_polling(sources: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "two"
    base.mkdir()
    for version in (1, 2):
        publish(sources[f"frozen{version}"], base, version)
    publish(sources["frozen1"], base, 3)
    config = tmp_path / "models.config"
    entry = (
        f'config {{ name: "two" base_path: "{base}" model_platform: "tensorflow" '
        "model_version_policy { latest { num_versions: 2 } } }"
    )
    config.write_text(f"model_config_list {{ {entry} }}")
    flags = (f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1")
    with running(*flags) as client:
        assert client.status("two") == {3: (AVAILABLE, 0), 2: (AVAILABLE, 0)}
        pinned = client.predict.Predict(predict_request("two", ONES, version=2))
        assert pinned.model_spec.version.value == 2
        keras_base = tmp_path / "k"
        keras_base.mkdir()
        publish(sources["keras"], keras_base, 1)
        more = f'config {{ name: "k" base_path: "{keras_base}" model_platform: "tensorflow" }}'
        config.write_text(f"model_config_list {{ {entry} {more} }}")
        wait_for(lambda: _available(client, "k"), "the config file poll to add k")
        assert client.predict.Predict(_with_keras_input(ONES)).model_spec.name == "k"


def _available(client: Client, name: str) -> bool:
    try:
        return client.status(name) == {1: (AVAILABLE, 0)}
    except grpc.RpcError:
        return False


def _with_keras_input(x: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "k"
    request.inputs["feat"].CopyFrom(tensor(x))
    return request


@pytest.mark.slow
def test_soak_many_version_switches(sources: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "soak"
    base.mkdir()
    publish(sources["frozen1"], base, 1)
    flags = (f"--model_base_path={base}", "--model_name=s", "--file_system_poll_wait_seconds=0.1")
    with running(*flags) as client:
        errors: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:
                    client.predict.Predict(predict_request("s", ONES), timeout=10)
                except grpc.RpcError as e:
                    errors.append(f"{e.code()}: {e.details()}")

        workers = [threading.Thread(target=hammer) for _ in range(8)]
        for w in workers:
            w.start()
        try:
            for version in range(2, 22):
                publish(sources[f"frozen{1 + version % 2}"], base, version)
                wait_for(
                    lambda v=version: client.status("s").get(v, (0, 0))[0] == AVAILABLE,
                    f"version {version}",
                )
                shutil.rmtree(base / str(version - 1))
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=30)
        assert errors == []
