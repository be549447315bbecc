"""An operator's bad day (issue 17): config files caught mid-rewrite, bad platforms, reloads
that race, unparsable versions, and the order old versions are unloaded in. Each case cites the
TF Serving source (tensorflow/serving, release 2.20/2.21) whose behaviour it checks.

Servers run in-process on free 127.0.0.1 ports (`tests.test_server_core.running`); the models
are the small frozen graph and tf2onnx conversion that module builds."""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_management_pb2, predict_pb2

from serving.core import ServerCore, ServerOptions
from serving.errors import ServingError
from serving.errors import code_from_number as status_code
from serving.launch import free_port
from serving.model_config import config_from_flags, parse_config_text, validate_config
from tests.conftest import wait_for
from tests.serving_helpers import (
    AVAILABLE,
    END,
    ONES,
    Client,
    build_frozen,
    build_onnx,
    predict_request,
    publish,
    rpc_error,
    running,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faults-src")
    return {
        "frozen1": build_frozen(root / "frozen1", 1.0),
        "frozen2": build_frozen(root / "frozen2", 2.0),
        "onnx": build_onnx(root / "onnx"),
    }


def _entry(name: str, base: Path, platform: str = "tensorflow", extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "{platform}" {extra}}}'


def _config(*entries: str) -> str:
    return "model_config_list {\n  " + "\n  ".join(entries) + "\n}\n"


def _reload(*entries: str) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(parse_config_text(_config(*entries)))
    return request


def _model(base: Path, source: Path, version: int = 1) -> Path:
    base.mkdir(parents=True)
    publish(source, base, version)
    return base


class _Load:
    """Predict calls to each model from a background thread until stopped; counts failures."""

    def __init__(self, client: Client, names: tuple[str, ...]) -> None:
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, names), daemon=True)
        self._thread.start()

    def _run(self, client: Client, names: tuple[str, ...]) -> None:
        while not self._stop.is_set():
            for name in names:
                try:
                    client.predict.Predict(predict_request(name, ONES), timeout=10)
                except grpc.RpcError as err:
                    self.failures.append(f"{name}: {err.code().name} {err.details()}")
                self.calls += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _error_lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


# --- 1. a config file caught empty or half-written ------------------------------------------


def test_empty_or_half_written_config_file_keeps_the_served_models(
    built: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """server.cc `PollFilesystemAndReloadConfig`: a file `ParseProtoTextFile`
    (util/proto_util.h) cannot read (a 0-byte file cannot be mapped) or parse is logged as
    "Failed to read ModelServerConfig file" and nothing changes; a file that parses to an empty
    ModelServerConfig is refused by server_core.cc `ServerCore::ReloadConfig` ("Cannot
    transition to requested config", FAILED_PRECONDITION). Requests to both models never fail."""
    caplog.set_level(logging.ERROR, logger="serving.server")
    a = _model(tmp_path / "a", built["frozen1"])
    b = _model(tmp_path / "b", built["frozen2"])
    text = _config(_entry("a", a), _entry("b", b))
    config = tmp_path / "models.config"
    config.write_text(text)
    flags = (f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1")
    with running(*flags) as client:
        load = _Load(client, ("a", "b"))
        try:
            rewrites = (
                (b"", "Failed to read ModelServerConfig file"),  # `cat > models.config`, caught
                (text.encode()[: len(text) // 2], "Failed to read ModelServerConfig file"),
                (b"# being rewritten\n", "Cannot transition to requested config"),
            )
            for content, logged in rewrites:
                seen = _error_lines(caplog, logged)
                with open(config, "wb") as f:  # in place, not atomically: what editors do
                    f.write(content)
                wait_for(
                    lambda logged=logged, seen=seen: _error_lines(caplog, logged) > seen,
                    f"the poller to refuse {content[:20]!r}",
                )
            config.write_text(text)
            calls = load.calls
            wait_for(lambda: load.calls > calls + 10, "requests after the rewrite")
        finally:
            load.stop()
        assert load.failures == []
        assert client.status("a") == {1: (AVAILABLE, 0)}
        assert client.status("b") == {1: (AVAILABLE, 0)}


def test_an_empty_config_file_fails_startup_with_one_line(tmp_path: Path) -> None:
    """At startup the same read fails (server.cc `BuildAndStart` -> `ParseProtoTextFile`)."""
    from serving.errors import UsageError
    from serving.model_config import load_config_file

    config = tmp_path / "models.config"
    config.write_bytes(b"")
    with pytest.raises(UsageError, match=r"models\.config: the file is empty \(0 bytes\)"):
        load_config_file(str(config))


def test_validate_config_is_reload_configs_transition_check() -> None:
    """server_core.cc `ServerCore::ReloadConfig`: once a ModelConfigList is served only another
    ModelConfigList is accepted (the same config is); an empty first config is no action."""
    served = config_from_flags("m", "/models/m")
    with pytest.raises(ServingError) as info:
        validate_config(parse_config_text(""), served)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message == (
        "Cannot transition to requested config. It is only legal to transition from one "
        "ModelConfigList to another."
    )
    assert validate_config(parse_config_text("")) is None
    assert [m.name for m in validate_config(served, served)] == ["m"]
    # A ModelConfigList that lists no model is a legal transition: it unloads everything.
    assert validate_config(parse_config_text("model_config_list {}"), served) == []


# --- 2. platforms ---------------------------------------------------------------------------


def test_reload_refuses_unsupported_and_changed_platforms(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """server_core.cc `CreateStoragePathRoutes` ("Model <m> requests unsupported platform <p>")
    and `ValidateNoModelsChangePlatforms` ("Illegal to change a model's platform..."), both
    INVALID_ARGUMENT, and `GetPlatform`'s model_type checks; a refused reload changes nothing."""
    a = _model(tmp_path / "a", built["frozen1"])
    m2 = _model(tmp_path / "m2", built["frozen2"])
    with running(f"--model_base_path={a}", "--model_name=a") as client:
        reload = client.models.HandleReloadConfigRequest
        cases = {
            (_entry("a", a), _entry("m2", m2, "pytorch")): "Model m2 requests unsupported "
            "platform pytorch",
            (_entry("a", a, "onnx"),): "Illegal to change a model's platform. For model a "
            "platform was tensorflow and new platform requested is onnx",
            (
                f'config {{ name: "a" base_path: "{a}" model_type: TENSORFLOW '
                'model_platform: "tensorflow" }',
            ): "Illegal setting both ModelServerConfig::"
            "model_type (deprecated) and ModelServerConfig::model_platform, model name is a",
            (f'config {{ name: "a" base_path: "{a}" model_type: OTHER }}',): "ModelServerConfig"
            "::model_type choice 2 not supported.",
        }
        for entries, message in cases.items():
            assert rpc_error(reload, _reload(*entries)) == (INVALID, message)
        assert rpc_error(client.predict.Predict, predict_request("m2", ONES))[0] == (
            grpc.StatusCode.NOT_FOUND
        )
        assert client.predict.Predict(predict_request("a", ONES)).model_spec.version.value == 1
        # The deprecated model_type TENSORFLOW is the tensorflow platform: no change.
        same = f'config {{ name: "a" base_path: "{a}" model_type: TENSORFLOW }}'
        reload(_reload(same), timeout=60)
        assert client.status("a") == {1: (AVAILABLE, 0)}


def test_each_model_runs_on_the_runtime_its_platform_names(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """One config, two runtimes: `tensorflow` on a TF Session, `onnx` (this server's extension
    platform; Triton's `onnxruntime_onnx` too) on ONNX Runtime, as server_core.cc routes each
    model to its platform's adapter (`CreateStoragePathRoutes`). The frozen graph adds 1.0, the
    ONNX graph 0.5."""
    tf_base = _model(tmp_path / "tf", built["frozen1"])
    onnx_base = _model(tmp_path / "ox", built["onnx"])
    config = tmp_path / "models.config"
    config.write_text(
        _config(
            _entry("tf", tf_base),
            _entry("ox", onnx_base, "onnx"),
            _entry("triton", onnx_base, "onnxruntime_onnx"),
        )
    )
    with running(f"--model_config_file={config}") as client:
        x = np.array([[1.0, 1.0, 1.0]], np.float32)
        tf_out = client.predict.Predict(predict_request("tf", x), timeout=30)
        assert tf.make_ndarray(tf_out.outputs["y"]).tolist() == [[7.0]]
        for name in ("ox", "triton"):
            onnx_request = predict_pb2.PredictRequest()
            onnx_request.model_spec.name = name
            onnx_request.inputs["x:0"].CopyFrom(tf.make_tensor_proto(x))
            onnx_out = client.predict.Predict(onnx_request, timeout=30)
            assert tf.make_ndarray(onnx_out.outputs["y:0"]).tolist() == [[6.5]]


# --- 3. one reload at a time ----------------------------------------------------------------


def test_racing_reloads_are_serialised_and_each_gets_a_status(
    built: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """server_core.cc `ServerCore::ReloadConfig` holds `config_mu_` for the whole reload, so a
    reload waiting for a model whose base path does not exist yet blocks the next one (which
    removes that model) instead of interleaving with it; both answer, neither raises inside the
    server."""
    caplog.set_level(logging.ERROR)
    a = _model(tmp_path / "a", built["frozen1"])
    late = tmp_path / "late"
    with running(f"--model_base_path={a}", "--model_name=a") as client:
        core = client.server.core
        done: dict[str, float] = {}

        def reload(tag: str, *entries: str) -> grpc.StatusCode:
            try:
                client.models.HandleReloadConfigRequest(_reload(*entries), timeout=120)
                return grpc.StatusCode.OK
            except grpc.RpcError as err:
                return err.code()
            finally:
                done[tag] = time.monotonic()

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(reload, "first", _entry("a", a), _entry("late", late))
            wait_for(lambda: core._manager.is_managed("late"), "the first reload to start")
            second = pool.submit(reload, "second", _entry("a", a))
            _model(late, built["frozen2"])  # the base path appears: the first reload can finish
            assert first.result(timeout=120) == grpc.StatusCode.OK
            assert second.result(timeout=120) == grpc.StatusCode.OK
        assert done["first"] <= done["second"]
        assert not core._manager.is_managed("late")
        assert client.predict.Predict(predict_request("a", ONES)).model_spec.version.value == 1
        assert [r.getMessage() for r in caplog.records if r.exc_info] == []


# --- 4. error texts -------------------------------------------------------------------------


def _c_api_load_error(path: Path) -> tuple[int, str]:
    """(code, message) of TensorFlow's C API `TF_LoadSessionFromSavedModel` on `path`: the C++
    loader tensorflow_model_server links, from the TensorFlow wheel."""
    lib_path = glob.glob(
        os.path.join(os.path.dirname(tf.__file__), "python", "_pywrap_tensorflow_internal.so")
    )[0]
    lib = ctypes.CDLL(lib_path, mode=ctypes.RTLD_GLOBAL)
    pointer = ctypes.c_void_p
    for fn in ("TF_NewStatus", "TF_NewSessionOptions", "TF_NewGraph"):
        getattr(lib, fn).restype = pointer
    lib.TF_Message.restype, lib.TF_Message.argtypes = ctypes.c_char_p, [pointer]
    lib.TF_GetCode.argtypes = [pointer]
    lib.TF_LoadSessionFromSavedModel.restype = pointer
    lib.TF_LoadSessionFromSavedModel.argtypes = [
        pointer,
        pointer,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int,
        pointer,
        pointer,
        pointer,
    ]
    status, options, graph = lib.TF_NewStatus(), lib.TF_NewSessionOptions(), lib.TF_NewGraph()
    tags = (ctypes.c_char_p * 1)(b"serve")
    lib.TF_LoadSessionFromSavedModel(
        options, None, str(path).encode(), tags, 1, graph, None, status
    )
    code, message = lib.TF_GetCode(status), lib.TF_Message(status).decode()
    for fn, obj in (
        ("TF_DeleteGraph", graph),
        ("TF_DeleteSessionOptions", options),
        ("TF_DeleteStatus", status),
    ):
        getattr(lib, fn).argtypes = [pointer]
        getattr(lib, fn)(obj)
    return code, message


_CORRUPTIONS = {
    "cut after 40 bytes": lambda data: data[:40],
    "cut in half": lambda data: data[: len(data) // 2],
    "last byte missing": lambda data: data[:-1],
    "garbage": lambda data: bytes(range(7, 107)),
    "a byte flipped": lambda data: data[:200] + b"\xff" + data[201:],
    "trailing garbage": lambda data: data + b"\x07\x07",
}


@pytest.mark.parametrize("corruption", list(_CORRUPTIONS))
def test_unparsable_saved_model_reads_as_the_cc_loader(
    built: dict[str, Path], tmp_path: Path, corruption: str
) -> None:
    """A saved_model.pb cut short (a disk that filled mid-copy) or damaged: the load status is
    what TensorFlow's C++ loader answers for the same file (tensorflow/core/platform/env.cc
    `ReadBinaryProto` via cc/saved_model/reader.cc `ReadSavedModel`, run here through the C
    API): OUT_OF_RANGE "Read less bytes than requested" when the parse ran to the end, else
    DATA_LOSS "Can't parse <path> as binary proto", the path as text (not a bytes repr)."""
    base = _model(tmp_path / "m", built["frozen1"])
    pb = base / "1" / "saved_model.pb"
    pb.write_bytes(_CORRUPTIONS[corruption](pb.read_bytes()))
    code, message = _c_api_load_error(base / "1")
    assert code in (11, 15) and "b'" not in message
    options = ServerOptions(file_system_poll_wait_seconds=0, max_num_load_retries=0)
    core = ServerCore(config_from_flags("m", str(base)), options)
    with pytest.raises(ServingError) as info:
        core.start()
    (status,) = core.model_status("m").model_version_status
    assert (status.state, status.status.error_code, status.status.error_message) == (
        END,
        code,
        message,
    )
    assert f"due to error: {ServingError(status_code(code), message)}" in info.value.message


# --- 6. unload order ------------------------------------------------------------------------


def _states(core: ServerCore, name: str) -> dict[int, int]:
    return {s.version: s.state for s in core.model_status(name).model_version_status}


def test_only_the_newest_unaspired_version_waits_for_its_successor(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """core/availability_preserving_policy.cc `GetNextAction`: with more than one un-aspired
    version AVAILABLE, the lowest is unloaded at once, even while no aspired version is ready;
    the highest un-aspired one keeps serving until an aspired version is. Here the new aspired
    version never loads (its saved_model.pb is garbage), so version 2 stays, version 1 goes."""
    base = tmp_path / "m"
    base.mkdir()
    for version in (1, 2):
        publish(built[f"frozen{version}"], base, version)
    bad = publish(built["frozen1"], base, 3)
    (bad / "saved_model.pb").write_bytes(b"\x00garbage")
    specific = "model_version_policy {{ specific {{ {} }} }} "
    config = parse_config_text(
        _config(_entry("m", base, extra=specific.format("versions: 1 versions: 2")))
    )
    options = ServerOptions(file_system_poll_wait_seconds=0, max_num_load_retries=0)
    core = ServerCore(config, options)
    core.start()
    try:
        assert _states(core, "m") == {2: AVAILABLE, 1: AVAILABLE}
        # Not a new model: the reload does not wait for version 3 (`WaitUntilModelsAvailable`
        # only waits for new names), and version 1 is already gone when it returns.
        core.reload_config(
            parse_config_text(_config(_entry("m", base, extra=specific.format("versions: 3"))))
        )
        assert _states(core, "m")[1] == END and _states(core, "m")[2] == AVAILABLE
        wait_for(lambda: _states(core, "m")[3] == END, "version 3 to fail its load")
        assert _states(core, "m") == {3: END, 2: AVAILABLE, 1: END}
        assert core.servable("m").version == 2
    finally:
        core.stop()


def test_new_versions_load_highest_first(
    built: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """availability_preserving_policy.cc `GetNextAction` loads the highest new aspired version
    first (`GetHighestAspiredNewServableId`); with one load thread (`--num_load_threads=0`) the
    newest version serves before the older ones finish."""
    caplog.set_level(logging.INFO, logger="serving.manager")
    base = tmp_path / "m"
    base.mkdir()
    for version in (1, 2, 3):
        publish(built["frozen1"], base, version)
    config = parse_config_text(_config(_entry("m", base, extra="model_version_policy { all {} }")))
    core = ServerCore(config, ServerOptions(file_system_poll_wait_seconds=0))
    core.start()
    try:
        loaded = [r.args[1] for r in caplog.records if r.getMessage().startswith("Successfully")]
        assert loaded == [3, 2, 1]
    finally:
        core.stop()


def test_a_tf_error_during_a_load_keeps_tfs_code_and_text() -> None:
    """A TensorFlow OpError raised anywhere in a load (a disk or memory that ran out) is the
    version's status as TF Serving reports it (`RESOURCE_EXHAUSTED: <TF's message>`), not a
    Python exception name."""
    from serving.manager import _load_with_retries

    def create() -> None:
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    servable, error = _load_with_retries(create, "{name: m version: 1}", threading.Event(), 0, 0)
    assert servable is None and error is not None
    assert str(error) == "RESOURCE_EXHAUSTED: OOM when allocating tensor"


# --- 5. what the HTTP layer answers itself ----------------------------------------------------


def _raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_the_http_layers_own_errors_are_libevents_pages(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """With monitoring off the metrics path is no route (http_server.cc registers it only when
    Prometheus is enabled), and a request line the server cannot parse never reaches a handler:
    both get libevent's `evhttp_send_error` page (ERR_FORMAT, text/html, connection closed),
    not JSON and not Python's page."""
    base = _model(tmp_path / "m", built["frozen1"])
    rest = f"--rest_api_port={free_port()}"
    with running(f"--model_base_path={base}", "--model_name=m", rest) as client:
        port = client.server.rest_port
        reply = _raw_http(port, b"GET /monitoring/prometheus/metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert b"\r\nContent-Type: text/html\r\n" in head + b"\r\n"
        assert b"\r\nConnection: close" in head
        assert body == (
            b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
            b"</BODY></HTML>\n"
        )
        reply = _raw_http(port, b"GET /v1/models/m HTTP/9.9\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0].split(b" ", 1)[1].startswith(b"505")
        assert body.startswith(b"<HTML><HEAD>\n<TITLE>505 HTTP Version Not Supported</TITLE>")
