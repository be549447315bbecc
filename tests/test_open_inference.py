"""The Open Inference Protocol (KServe v2 / Triton) on the embedded server's ports, driven by
tritonclient's HTTP and gRPC clients over one config that mixes SavedModels and ONNX models.

Expected texts and codes are Triton's (server `http_server.cc`, `grpc/infer_handler.cc`; core
`infer_request.cc Normalize`, `model_lifecycle.cc GetModel`; onnxruntime_backend
`ValidateInputs`/`CompareDimsSupported`), each cited where it is asserted."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from serving.client import ServingClient
from serving.launch import ServerProcess, start_server_process
from tests import v2_models
from tests.conftest import REPO_ROOT
from tests.tfs_models import half_plus

PROTOCOLS = ("http", "grpc")
HPT = "half_plus_two"


@pytest.fixture(scope="module")
def v2_repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v2")
    v2_models.build(model_repo, out)
    return out


@pytest.fixture(scope="module")
def v2_server(v2_repo: Path) -> Iterator[ServerProcess]:
    """One embedded server over the mixed config (its ports open once every model loaded)."""
    server = start_server_process(
        [f"--model_config_file={v2_repo / 'models.config'}", "--file_system_poll_wait_seconds=0"],
        log_path=v2_repo / "server.log",
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=REPO_ROOT,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def clients(v2_server: ServerProcess) -> Iterator[dict[str, tuple[Any, Any]]]:
    http_client = thttp.InferenceServerClient(v2_server.rest_target or "")
    grpc_client = tgrpc.InferenceServerClient(v2_server.grpc_target)
    try:
        yield {"http": (thttp, http_client), "grpc": (tgrpc, grpc_client)}
    finally:
        http_client.close()
        grpc_client.close()


def _input(module: Any, name: str, array: np.ndarray, datatype: str, binary: bool = True) -> Any:
    tensor = module.InferInput(name, list(array.shape), datatype)
    if module is thttp:
        tensor.set_data_from_numpy(array, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)
    return tensor


def _outputs(module: Any, names: list[str], binary: bool) -> list[Any]:
    if module is thttp:
        return [thttp.InferRequestedOutput(n, binary_data=binary) for n in names]
    return [tgrpc.InferRequestedOutput(n) for n in names]


def _error(call: Any) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return f"{info.value.status()} {info.value.message()}"


def _post(server: ServerProcess, path: str, body: bytes, headers: dict[str, str]) -> tuple:
    request = urllib.request.Request(
        f"http://{server.rest_target}{path}", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _get(server: ServerProcess, path: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{server.rest_target}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _binary_body(doc: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(doc).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return header + b"".join(chunks), headers


# --- health and metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_and_server_metadata(clients: dict, protocol: str) -> None:
    _, client = clients[protocol]
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata(**({"as_json": True} if protocol == "grpc" else {}))
    assert metadata["name"] == "frozen-scalars"
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", [HPT, "strings", "dtypes_tf", "half_plus_two_onnx",
                                   "multi_io_onnx", "dtypes_onnx", "bf16_onnx"])  # fmt: skip
def test_every_model_is_ready(clients: dict, protocol: str, model: str) -> None:
    _, client = clients[protocol]
    assert client.is_model_ready(model)


def test_unknown_model_is_not_ready(clients: dict, v2_server: ServerProcess) -> None:
    """HandleModelReady / ModelReady return GetModel's NOT_FOUND (`model_lifecycle.cc`)."""
    assert clients["http"][1].is_model_ready("nosuch") is False
    assert _get(v2_server, "/v2/models/nosuch/ready") == (
        404, b'{"error":"Request for unknown model: \'nosuch\' is not found"}'
    )  # fmt: skip
    assert _error(lambda: clients["grpc"][1].is_model_ready("nosuch")) == (
        "StatusCode.NOT_FOUND Request for unknown model: 'nosuch' is not found"
    )
    assert _error(lambda: clients["grpc"][1].is_model_ready(HPT, "9")) == (
        "StatusCode.NOT_FOUND Request for unknown model: 'half_plus_two' version 9 is not found"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_savedmodel_metadata_comes_from_its_signature(clients: dict, protocol: str) -> None:
    _, client = clients[protocol]
    metadata = client.get_model_metadata(HPT, **({"as_json": True} if protocol == "grpc" else {}))
    for tensors in (metadata["inputs"], metadata["outputs"]):
        for t in tensors:
            t["shape"] = [int(d) for d in t["shape"]]  # gRPC's JSON writes int64 as strings
    assert metadata == {
        "name": HPT,
        "versions": ["1", "2"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_onnx_metadata_comes_from_config_pbtxt(clients: dict, protocol: str) -> None:
    """With max_batch_size > 0 the batch dimension shows as -1 (`TRITONSERVER_ServerModelMetadata`);
    without config.pbtxt, Triton's auto-complete applies (max_batch_size 4, dims [1])."""
    _, client = clients[protocol]
    kwargs = {"as_json": True} if protocol == "grpc" else {}
    dtypes = client.get_model_metadata("dtypes_onnx", **kwargs)
    assert dtypes["platform"] == "onnxruntime_onnx" and dtypes["versions"] == ["1"]
    first = dtypes["inputs"][0]
    assert (first["name"], first["datatype"], [int(d) for d in first["shape"]]) == (
        "in_BOOL", "BOOL", [-1, 2]
    )  # fmt: skip
    auto = client.get_model_metadata("half_plus_two_onnx", **kwargs)
    assert [int(d) for d in auto["inputs"][0]["shape"]] == [-1, 1]
    config = client.get_model_config("half_plus_two_onnx", **kwargs)
    config = config.get("config", config)
    assert int(config["max_batch_size"]) == 4 and "dynamic_batching" in config


# --- inference --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("version", ["", "1", "2"])
def test_savedmodel_infer(clients: dict, protocol: str, binary: bool, version: str) -> None:
    module, client = clients[protocol]
    x = np.array([1.0, 2.5, -4.0], np.float32)
    result = client.infer(
        HPT,
        [_input(module, "x", x, "FP32", binary)],
        model_version=version,
        outputs=_outputs(module, ["y"], binary),
    )
    served = int(version or 2)
    np.testing.assert_array_equal(result.as_numpy("y"), half_plus(x, served))
    assert result.get_response(**({"as_json": True} if protocol == "grpc" else {}))[
        "model_version"
    ] == str(served)


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("binary", [True, False])
def test_onnx_infer_equals_onnx_runtime(
    clients: dict, v2_repo: Path, protocol: str, binary: bool
) -> None:
    module, client = clients[protocol]
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    b = np.array([3, -5], np.int64)
    result = client.infer(
        "multi_io_onnx",
        [_input(module, "a", a, "FP32", binary), _input(module, "b", b, "INT64", binary)],
        outputs=_outputs(module, ["sum", "scaled"], binary),
    )
    expected = _ort(v2_repo / "multi_io_onnx" / "1" / "model.onnx", {"a": a, "b": b})
    for name in ("sum", "scaled"):
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
    # Auto-completed config: dims [1] with an empty reshape, so the client sends [n, 1].
    x = np.array([[1.0], [2.0], [3.5]], np.float32)
    result = client.infer("half_plus_two_onnx", [_input(module, "x", x, "FP32", binary)])
    expected = _ort(v2_repo / "half_plus_two_onnx" / "2" / "model.onnx", {"x": x.ravel()})
    np.testing.assert_array_equal(result.as_numpy("y"), expected["y"].reshape(3, 1))


def _dtype_cases() -> list[tuple[str, str, str]]:
    cases = []
    for datatype in v2_models.DATATYPES:
        onnx_model = next(m for m, ts in v2_models.ONNX_DTYPES.items() if datatype in ts)
        for model in ("dtypes_tf", onnx_model):
            cases.append((model, datatype, "binary"))
            cases.append((model, datatype, "grpc"))
            if datatype not in ("FP16", "BF16"):
                cases.append((model, datatype, "json"))
    return cases


@pytest.mark.parametrize(("model", "datatype", "how"), _dtype_cases())
def test_every_datatype_round_trips(clients: dict, model: str, datatype: str, how: str) -> None:
    """Identity models: what goes in comes back bit for bit, for both artifacts."""
    module, client = clients["grpc" if how == "grpc" else "http"]
    binary = how != "json"
    datatypes = v2_models.DATATYPES if model == "dtypes_tf" else v2_models.ONNX_DTYPES[model]
    arrays = {t: v2_models.sample(t) for t in datatypes}
    result = client.infer(
        model,
        # Half-precision inputs go as binary data even in the JSON case (JSON cannot carry them).
        [
            _input(module, f"in_{t}", arrays[t], t, binary or t in ("FP16", "BF16"))
            for t in datatypes
        ],
        outputs=_outputs(module, [f"out_{datatype}"], binary),
    )
    got = result.as_numpy(f"out_{datatype}")
    assert got.shape == (3, 2)
    expected = arrays[datatype]
    if datatype == "BF16":
        np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
    elif datatype == "BYTES" and not binary:  # tritonclient reads JSON strings as str
        np.testing.assert_array_equal(got, np.vectorize(bytes.decode, otypes=[object])(expected))
    else:
        assert got.dtype == expected.dtype or datatype == "BYTES"
        np.testing.assert_array_equal(got, expected)


def test_half_precision_is_refused_as_json(v2_server: ServerProcess) -> None:
    """`ReadDataFromJson` / `WriteDataToJson`: FP16 and BF16 travel only as binary data."""
    doc = {"inputs": [{"name": "in_FP16", "shape": [1, 2], "datatype": "FP16", "data": [1, 2]}]}
    status, _, body = _post(v2_server, "/v2/models/bf16_onnx/infer", json.dumps(doc).encode(), {})
    assert status == 400
    doc["inputs"][0].update(name="in_BF16", datatype="BF16")
    status, _, body = _post(v2_server, "/v2/models/bf16_onnx/infer", json.dumps(doc).encode(), {})
    assert (status, json.loads(body)["error"]) == (
        400,
        "receiving BF16 data via JSON is not supported. Please use the binary data format for "
        "input in_BF16",
    )
    bits = v2_models.sample("BF16", 1).tobytes()
    doc = {"inputs": [{"name": "in_BF16", "shape": [1, 2], "datatype": "BF16",
                       "parameters": {"binary_data_size": 4}}],
           "outputs": [{"name": "out_BF16", "parameters": {"binary_data": False}}]}  # fmt: skip
    body, headers = _binary_body(doc, bits)
    status, _, answer = _post(v2_server, "/v2/models/bf16_onnx/infer", body, headers)
    assert (status, json.loads(answer)["error"]) == (
        400,
        "sending BF16 data via JSON is not supported. Please use the binary data format for output",
    )


def test_binary_response_layout(v2_server: ServerProcess) -> None:
    """extension_binary_data.md: JSON header, then each binary output in order."""
    x = np.array([1.0, 2.0], np.float32)
    doc = {"id": "42", "inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 8}}],
           "parameters": {"binary_data_output": True}}  # fmt: skip
    body, headers = _binary_body(doc, x.tobytes())
    status, reply_headers, answer = _post(
        v2_server, f"/v2/models/{HPT}/versions/1/infer", body, headers
    )
    assert status == 200
    assert reply_headers["Content-Type"] == "application/octet-stream"
    length = int(reply_headers["Inference-Header-Content-Length"])
    header = json.loads(answer[:length])
    assert header == {
        "id": "42",
        "model_name": HPT,
        "model_version": "1",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [2],
                     "parameters": {"binary_data_size": 8}}],
    }  # fmt: skip
    np.testing.assert_array_equal(np.frombuffer(answer[length:], np.float32), half_plus(x, 1))


def test_raw_binary_request(v2_server: ServerProcess) -> None:
    """extension_binary_data.md "Raw Binary Request": Inference-Header-Content-Length 0, the
    body is the single input, its shape deduced (`Normalize`), the outputs binary."""
    x = np.array([1.0, 2.0, 3.0], np.float32)
    raw = {"Inference-Header-Content-Length": "0"}
    status, headers, answer = _post(
        v2_server, f"/v2/models/{HPT}/versions/2/infer", x.tobytes(), raw
    )
    assert status == 200
    length = int(headers["Inference-Header-Content-Length"])
    output = json.loads(answer[:length])["outputs"][0]
    assert output["shape"] == [3] and output["parameters"] == {"binary_data_size": 12}
    np.testing.assert_array_equal(np.frombuffer(answer[length:], np.float32), half_plus(x, 2))
    status, _, answer = _post(v2_server, "/v2/models/multi_io_onnx/infer", b"\0" * 12, raw)
    assert (status, json.loads(answer)["error"]) == (
        400,
        "[request id: <id_unknown>] Raw request must only have 1 input (found 1) to be deduced "
        "but got 2 inputs in 'multi_io_onnx' model configuration",
    )
    status, _, answer = _post(v2_server, "/v2/models/strings/infer", b"abc", raw)
    assert (status, json.loads(answer)["error"]) == (
        400,
        "[request id: <id_unknown>] For BYTE datatype raw input 'text', the model must have "
        "input shape [1]",
    )


def test_tf_serving_api_answers_on_the_same_ports(v2_server: ServerProcess) -> None:
    """Both protocols, one server: TF Serving's Predict reaches the ONNX model too."""
    with ServingClient(v2_server.grpc_target) as client:
        outputs = client.predict(
            {"a": np.ones((1, 3), np.float32), "b": np.array([2], np.int64)}, "multi_io_onnx"
        )
    np.testing.assert_array_equal(outputs["sum"], np.full((1, 3), 3.0, np.float32))


# --- errors, as Triton answers them -----------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_and_version(clients: dict, protocol: str) -> None:
    module, client = clients[protocol]
    x = [_input(module, "x", np.ones(2, np.float32), "FP32")]
    code = "404" if protocol == "http" else "StatusCode.NOT_FOUND"
    assert _error(lambda: client.infer("nosuch", x)) == (
        f"{code} Request for unknown model: 'nosuch' is not found"
    )
    assert _error(lambda: client.infer(HPT, x, model_version="3")) == (
        f"{code} Request for unknown model: 'half_plus_two' version 3 is not found"
    )
    assert _error(lambda: client.get_model_metadata(HPT, "3")).startswith(code)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_shape_dtype_count_and_names(clients: dict, protocol: str) -> None:
    """`InferenceRequest::Normalize` and `ValidateRequestInputs` texts."""
    module, client = clients[protocol]
    code = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"
    log = "[request id: <id_unknown>] "
    a = _input(module, "a", np.ones((2, 3), np.float32), "FP32")
    b = _input(module, "b", np.ones(2, np.int64), "INT64")
    wrong = _input(module, "a", np.ones((2, 4), np.float32), "FP32")
    assert _error(lambda: client.infer("multi_io_onnx", [wrong, b])) == (
        f"{code} {log}unexpected shape for input 'a' for model 'multi_io_onnx'. Expected [-1,3], "
        "got [2,4]. "
    )
    as_double = _input(module, "b", np.ones(2, np.float64), "FP64")
    assert _error(lambda: client.infer("multi_io_onnx", [a, as_double])) == (
        f"{code} {log}inference input 'b' data-type is 'FP64', but model 'multi_io_onnx' "
        "expects 'INT64'"
    )
    assert _error(lambda: client.infer("multi_io_onnx", [a])) == (
        f"{code} {log}expected 2 inputs but got 1 inputs for model 'multi_io_onnx'. Got input(s) "
        "['a'], but missing required input(s) ['b']. Please provide all required input(s)."
    )
    stray = _input(module, "c", np.ones(2, np.int64), "INT64")
    assert _error(lambda: client.infer("multi_io_onnx", [a, stray])) == (
        f"{code} unexpected inference input 'c' for model 'multi_io_onnx'"
    )
    assert (
        _error(lambda: client.infer("multi_io_onnx", [a, b], outputs=_outputs(module, ["q"], True)))
        == f"{code} unexpected inference output 'q' for model 'multi_io_onnx'"
    )
    nine = {t: v2_models.sample(t, 9) for t in v2_models.ONNX_DTYPES["dtypes_onnx"]}
    batch = [_input(module, f"in_{t}", v, t) for t, v in nine.items()]
    assert _error(lambda: client.infer("dtypes_onnx", batch)) == (
        f"{code} {log}inference request batch-size must be <= 8 for 'dtypes_onnx'"
    )
    flat = _input(module, "x", np.ones(3, np.float32), "FP32")
    message = _error(lambda: client.infer("half_plus_two_onnx", [flat]))
    assert message.startswith(
        f"{code} {log}unexpected shape for input 'x' for model 'half_plus_two_onnx'. Expected "
        "[-1,1], got [3]. NOTE: Setting a non-zero max_batch_size in the model config requires"
    )


@pytest.mark.parametrize(
    ("doc", "chunks", "expected"),
    [
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                      "parameters": {"binary_data_size": 12}}]}, [b"\0" * 8],
         "unexpected size for input 'x', expecting 4 additional bytes for model 'half_plus_two'"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                      "parameters": {"binary_data_size": 8}}]}, [b"\0" * 12],
         "unexpected additional input data for model 'half_plus_two'"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                      "parameters": {"binary_data_size": 4}}]}, [b"\0" * 4],
         "[request id: <id_unknown>] input byte size mismatch for input 'x' for model "
         "'half_plus_two'. Expected 8, got 4"),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                      "parameters": {"binary_data_size": 6}}]}, [b"\x05\0\0\0ab"],
         "incomplete string data for inference input 'text', expecting string of length 5 but "
         "only 2 bytes available"),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                      "parameters": {"binary_data_size": 10}}]}, [b"\x01\0\0\0a\x01\0\0\0b"],
         "[request id: <id_unknown>] unexpected number of string elements 2 for inference input "
         "'text' for model 'strings', expecting 1"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0]}]}, [],
         "Failed to parse 'data' field: shape does not match true shape"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32"}]}, [],
         "Input must set only one of the following fields: 'data', 'binary_data_size' in "
         "'parameters', 'shared_memory_region' in 'parameters'. But no field is set"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "a"]}]}, [],
         "Unable to parse 'data': attempt to access JSON non-number as double"),
        ({"outputs": []}, [],
         "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'"),
    ],
)  # fmt: skip
def test_malformed_http_bodies(
    v2_server: ServerProcess, doc: dict, chunks: list[bytes], expected: str
) -> None:
    """`ParseJsonTritonIO`, `ValidateBytesInputs`, `ValidateStringBuffer` texts, status 400."""
    model = "strings" if doc.get("inputs", [{}])[0].get("name") == "text" else HPT
    body, headers = _binary_body(doc, *chunks)
    status, _, answer = _post(v2_server, f"/v2/models/{model}/infer", body, headers)
    assert (status, json.loads(answer)) == (400, {"error": expected})


def test_http_routes_methods_and_headers(v2_server: ServerProcess) -> None:
    """Triton's routing: unknown paths 404 "Not Found", wrong verbs 405."""
    assert _get(v2_server, "/v2/nothing") == (404, b'{"error":"Not Found"}')
    for path, method in (("/v2/repository/index", "POST"), ("/v2/models/stats", "GET")):
        status, body = _get(v2_server, path, method)
        assert status == 501 and b"is not supported by this server" in body, path
    assert _get(v2_server, f"/v2/models/{HPT}/infer") == (405, b'{"error":"Method Not Allowed"}')
    assert _get(v2_server, "/v2/health/live", "POST") == (405, b'{"error":"Method Not Allowed"}')
    status, _, body = _post(v2_server, f"/v2/models/{HPT}/infer", b"{nope", {})
    assert status == 400
    assert json.loads(body)["error"].startswith("failed to parse the request JSON buffer: ")
    status, _, body = _post(
        v2_server, f"/v2/models/{HPT}/infer", b"{}", {"Inference-Header-Content-Length": "9"}
    )
    assert (status, json.loads(body)) == (
        400, {"error": "inference header size should be in range (0, 2), got: 9"}
    )  # fmt: skip


def test_grpc_raw_and_typed_contents(v2_server: ServerProcess) -> None:
    """`InferGRPCToInput`: typed contents are accepted, mixed or missing data is refused."""
    with grpc.insecure_channel(v2_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name=HPT, model_version="1")
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[2])
        tensor.contents.fp32_contents.extend([2.0, 4.0])
        response = stub.ModelInfer(request, timeout=30)
        y = np.frombuffer(response.raw_output_contents[0], np.float32)
        np.testing.assert_array_equal(y, half_plus(np.array([2.0, 4.0], np.float32), 1))
        tensor.contents.int_contents.append(1)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == (
            "unexpected explicit tensor data for input tensor 'x' for model 'half_plus_two' of "
            "type 'INT32', expected datatype 'FP32'"
        )
        del request.inputs[:]
        request.inputs.add(name="x", datatype="FP32", shape=[2])
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.details() == (
            "unable to find data for input tensor 'x' for model 'half_plus_two' in request."
        )
        request.raw_input_contents.append(b"\0" * 4)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.details() == (
            "[request id: <id_unknown>] input byte size mismatch for input 'x' for model "
            "'half_plus_two'. Expected 8, got 4"
        )
