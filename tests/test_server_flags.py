"""tensorflow_model_server's flags (issue 12): one server started with every flag of TF Serving
2.21's main.cc, reached through the official stubs over TLS (certificates made here), over a
`unix:` socket, and scraped for Prometheus metrics; the flags whose effect is internal are checked
on an in-process server; bad values end the process with one line. One module for one job
(the flags): its fixtures (certificates, models, the every-flag server) serve every test here."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import flags
from serving.errors import ServingError
from serving.launch import free_port, start_server_process
from serving.server import channel_arguments, core_inputs, parse_args, start_server
from tests.conftest import REPO_ROOT
from tests.tfs_models import half_plus_builder, write_savedmodel

v1 = tf.compat.v1
STARTUP_S = 180.0
METRICS_PATH = "/monitoring/prometheus/metrics"


# --- fixtures: certificates, models, config files -------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Certs:
    ca: str
    server_key: str
    server_cert: str
    client_key: str
    client_cert: str


@pytest.fixture(scope="session")
def certs() -> Certs:
    """A CA, a server certificate for `localhost` and a client certificate, all PEM."""
    ca_key = _key()
    ca = _cert("test-ca", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    server = _cert("localhost", server_key, ca, ca_key)
    client = _cert("client", client_key, ca, ca_key)

    def pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    return Certs(pem(ca), _pem_key(server_key), pem(server), _pem_key(client_key), pem(client))


def _custom_method_model() -> dict:
    x = v1.placeholder(tf.float32, [None], name="x")
    return {"serving_default": ({"x": x}, {"y": tf.identity(x, name="y")})}


@pytest.fixture(scope="session")
def flag_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`half` (version 1 with its own batching_params.pbtxt), `plain` (no per-model file) and
    `custom` (a signature whose method_name is not a serving method)."""
    root = tmp_path_factory.mktemp("flag_models")
    write_savedmodel(root / "half" / "1", half_plus_builder(2.0))
    (root / "half" / "1" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 0 }\nallowed_batch_sizes: 4\n"
    )
    write_savedmodel(root / "plain" / "1", half_plus_builder(2.0))
    custom = root / "custom" / "1"
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        (inputs, outputs) = _custom_method_model()["serving_default"]
        builder = v1.saved_model.Builder(str(custom))
        signature = v1.saved_model.build_signature_def(
            {k: v1.saved_model.build_tensor_info(t) for k, t in inputs.items()},
            {k: v1.saved_model.build_tensor_info(t) for k, t in outputs.items()},
            "custom/method",
        )
        builder.add_meta_graph_and_variables(
            sess, ["serve"], signature_def_map={"serving_default": signature}
        )
        builder.save()
    config = (
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n'
            for n in ("half", "plain", "custom")
        )
        + "}\n"
    )
    (root / "models.config").write_text(config)
    return root


def _platform_config(batching: bool) -> str:
    batch = (
        'batching_parameters { thread_pool_name { value: "model_server_batch_threads" } }\n'
        "enable_per_model_batching_params: true\n"
        if batching
        else ""
    )
    return (
        'platform_configs { key: "tensorflow" value { source_adapter_config {\n'
        "[type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] {\n"
        "legacy_config {\n"
        "session_config { intra_op_parallelism_threads: 1 inter_op_parallelism_threads: 2 }\n"
        'saved_model_tags: "serve"\n'
        "enable_model_warmup: true\n"
        "remove_unused_fields_from_bundle_metagraph: true\n"
        f"{batch}"
        "} } } } }\n"
    )


@dataclass(frozen=True)
class Everything:
    tcp: str
    socket: str
    rest: str
    certs: Certs
    log: Path


def _every_flag(files: Path, models: Path, certs: Certs) -> tuple[list[str], int, int, str]:
    """Every flag of tensorflow_model_server 2.21 with a sensible value."""
    (files / "ssl.config").write_text(
        f"server_key: {json.dumps(certs.server_key)}\n"
        f"server_cert: {json.dumps(certs.server_cert)}\n"
        f"custom_ca: {json.dumps(certs.ca)}\n"
        "client_verify: true\n"
    )
    (files / "monitoring.config").write_text(
        f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
    )
    (files / "platform.config").write_text(_platform_config(batching=True))
    (files / "session.config").write_text("intra_op_parallelism_threads: 1\n")
    (files / "batching.config").write_text("max_batch_size { value: 16 }\n")
    (files / "thread_pool.config").write_text("")
    grpc_port, rest_port = free_port(), free_port()
    socket_path = str(files / "grpc.sock")
    values = {
        "port": grpc_port,
        "grpc_socket_path": socket_path,
        "rest_api_port": rest_port,
        "rest_api_num_threads": 4,
        "rest_api_timeout_in_ms": 20000,
        "rest_api_enable_cors_support": "true",
        "enable_batching": "true",
        "allow_version_labels_for_unavailable_models": "false",
        "batching_parameters_file": files / "batching.config",
        "enable_per_model_batching_parameters": "true",
        "model_config_file": models / "models.config",
        "model_config_file_poll_wait_seconds": 0,
        "model_name": "ignored",
        "model_base_path": models / "half",
        "num_load_threads": 2,
        "num_unload_threads": 1,
        "max_num_load_retries": 1,
        "load_retry_interval_micros": 1000,
        "file_system_poll_wait_seconds": 1,
        "flush_filesystem_caches": "true",
        "tensorflow_session_parallelism": 0,
        "tensorflow_intra_op_parallelism": 1,
        "tensorflow_inter_op_parallelism": 1,
        "tensorflow_session_config_file": files / "session.config",
        "use_alts_credentials": "false",
        "ssl_config_file": files / "ssl.config",
        "platform_config_file": files / "platform.config",
        "per_process_gpu_memory_fraction": 0.5,
        "saved_model_tags": "serve",
        "grpc_channel_arguments": (
            "grpc.max_receive_message_length=65536,grpc.max_connection_age_ms=600000,"
            "grpc.custom_note=passed_through"
        ),
        "grpc_max_threads": 8,
        "enable_model_warmup": "true",
        "num_request_iterations_for_warmup": 1,
        "version": "false",
        "monitoring_config_file": files / "monitoring.config",
        "remove_unused_fields_from_bundle_metagraph": "true",
        "prefer_tflite_model": "false",
        "num_tflite_pools": 1,
        "num_tflite_interpreters_per_pool": 1,
        "enable_signature_method_name_check": "true",
        "xla_cpu_compilation_enabled": "false",
        "xla_gpu_compilation_enabled": "false",
        "enable_profiler": "true",
        "thread_pool_factory_config_file": files / "thread_pool.config",
        "mixed_precision": "",
        "skip_initialize_tpu": "true",
        "enable_grpc_healthcheck_service": "true",
        "enable_serialization_as_tensor_content": "false",
    }
    assert set(values) == {f.name for f in flags.FLAGS}  # really every flag of main.cc
    argv = [f"--{name}={value}" for name, value in values.items()]
    return argv, grpc_port, rest_port, socket_path


@pytest.fixture(scope="module")
def everything(
    tmp_path_factory: pytest.TempPathFactory, flag_models: Path, certs: Certs
) -> Iterator[Everything]:
    """The console entry point with every flag; waits for both ready lines."""
    files = tmp_path_factory.mktemp("every_flag")
    argv, grpc_port, rest_port, socket_path = _every_flag(files, flag_models, certs)
    log_path = files / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    # The flags given last win, so this server keeps the ports chosen above.
    process = start_server_process(
        argv, log_path=log_path, env=env, cwd=REPO_ROOT, timeout_s=STARTUP_S
    )
    try:
        yield Everything(
            f"127.0.0.1:{grpc_port}", socket_path, f"127.0.0.1:{rest_port}", certs, log_path
        )
    finally:
        process.stop()


def _tls(certs: Certs, client: bool = True) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=certs.ca.encode(),
        private_key=certs.client_key.encode() if client else None,
        certificate_chain=certs.client_cert.encode() if client else None,
    )


_LOCALHOST = (("grpc.ssl_target_name_override", "localhost"),)


def _predict(model: str, x: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return request


def _scrape(rest: str) -> str:
    with urllib.request.urlopen(f"http://{rest}{METRICS_PATH}", timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def _value(page: str, series: str) -> float:
    """The value of one exposition line (`name{labels}`), 0 if absent."""
    for line in page.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- the server with every flag ---------------------------------------------------------------


def test_every_flag_comes_up_tls_with_client_certificates(everything: Everything) -> None:
    with grpc.secure_channel(everything.tcp, _tls(everything.certs), _LOCALHOST) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_predict("plain", np.array([2.0, 4.0], np.float32)), timeout=30)
    assert list(response.outputs["y"].float_val) == [3.0, 4.0]
    # client_verify: a client without a certificate is refused at the handshake.
    with grpc.secure_channel(
        everything.tcp, _tls(everything.certs, client=False), _LOCALHOST
    ) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(_predict("plain", np.array([1.0], np.float32)), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Plain text is not served on a TLS port.
    with grpc.insecure_channel(everything.tcp) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.Predict(_predict("plain", np.array([1.0], np.float32)), timeout=5)


def test_unix_socket_serves_the_same_services(everything: Everything) -> None:
    target = f"unix:{everything.socket}"
    with grpc.secure_channel(target, _tls(everything.certs), _LOCALHOST) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_predict("plain", np.array([6.0], np.float32)), timeout=30)
    assert list(response.outputs["y"].float_val) == [5.0]


def test_channel_arguments_reach_the_grpc_server(everything: Everything) -> None:
    """grpc.max_receive_message_length=65536 replaces TF Serving's 2 GiB default."""
    big = np.zeros(40_000, np.float32)  # 160 kB
    with grpc.secure_channel(everything.tcp, _tls(everything.certs), _LOCALHOST) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(_predict("plain", big), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        small = stub.Predict(_predict("plain", np.ones(10, np.float32)), timeout=30)
    assert len(small.outputs["y"].float_val) == 10


def test_metrics_move_with_traffic(everything: Everything) -> None:
    ok = ':tensorflow:serving:request_count{model_name="plain",status="OK"}'
    missing = ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}'
    latency = (
        ':tensorflow:serving:request_latency_count{model_name="plain",API="Predict",'
        'entrypoint="GRPC"}'
    )
    runtime = (
        ':tensorflow:serving:runtime_latency_count{model_name="plain",API="Predict",runtime="TF1"}'
    )
    rest_ok = ':tensorflow:serving:request_count{model_name="plain",status="OK"}'
    before = _scrape(everything.rest)
    assert "# TYPE :tensorflow:serving:request_count counter" in before
    assert "# TYPE :tensorflow:serving:request_latency histogram" in before
    with grpc.secure_channel(everything.tcp, _tls(everything.certs), _LOCALHOST) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(3):
            stub.Predict(_predict("plain", np.array([1.0], np.float32)), timeout=30)
        with pytest.raises(grpc.RpcError):
            stub.Predict(_predict("nope", np.array([1.0], np.float32)), timeout=30)
    body = json.dumps({"instances": [1.0, 2.0]}).encode()
    request = urllib.request.Request(
        f"http://{everything.rest}/v1/models/plain:predict", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert json.loads(resp.read()) == {"predictions": [2.5, 3.0]}
    after = _scrape(everything.rest)
    assert _value(after, ok) == _value(before, ok) + 4  # 3 gRPC + 1 REST
    assert _value(after, missing) == _value(before, missing) + 1
    assert _value(after, latency) == _value(before, latency) + 3
    assert _value(after, runtime) >= _value(before, runtime) + 4
    assert _value(after, rest_ok) > 0
    rest_latency = (
        ':tensorflow:serving:request_latency_count{model_name="plain",API="predict",'
        'entrypoint="REST"}'
    )
    assert _value(after, rest_latency) == _value(before, rest_latency) + 1
    assert re.search(
        r':tensorflow:cc:saved_model:load_attempt_count\{model_path="[^"]+/plain/1",'
        r'status="success"\} 1',
        after,
    )


def test_per_model_batching_parameters(everything: Everything) -> None:
    """`half/1/batching_params.pbtxt` (allowed_batch_sizes 4): its runs are padded to 4;
    `plain` has no file, so it is not batched at all (`GetPerModelBatchingParams`)."""
    padded = ':tensorflow:serving:batching_session:padding_size_count{execution_batch_size="4"}'
    runs = ":tensorflow:serving:batching_session:wrapped_run_count{}"
    before = _scrape(everything.rest)
    with grpc.secure_channel(everything.tcp, _tls(everything.certs), _LOCALHOST) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_predict("half", np.array([2.0, 4.0], np.float32)), timeout=30)
        stub.Predict(_predict("plain", np.array([2.0], np.float32)), timeout=30)
    assert list(response.outputs["y"].float_val) == [3.0, 4.0]
    after = _scrape(everything.rest)
    assert _value(after, padded) == _value(before, padded) + 1
    assert _value(after, runs) == _value(before, runs) + 1  # `plain` ran unbatched
    for series, rows in (("input_batch_size_sum{}", 2), ("processed_batch_size_sum{}", 4)):
        name = ":tensorflow:serving:batching_session:" + series
        assert _value(after, name) == _value(before, name) + rows


def test_signature_method_name_check(everything: Everything) -> None:
    with grpc.secure_channel(everything.tcp, _tls(everything.certs), _LOCALHOST) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(_predict("custom", np.array([1.0], np.float32)), timeout=30)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == (
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: custom/method"
    )


def test_cors_headers_and_preflight(everything: Everything) -> None:
    with urllib.request.urlopen(f"http://{everything.rest}/v1/models/plain", timeout=10) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Access-Control-Allow-Methods"] == "POST, GET"
    preflight = urllib.request.Request(
        f"http://{everything.rest}/v1/models/plain:predict",
        method="OPTIONS",
        headers={"Origin": "http://example.com"},
    )
    with urllib.request.urlopen(preflight, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Headers"] == "Content-Type"
    bare = urllib.request.Request(
        f"http://{everything.rest}/v1/models/plain:predict", method="OPTIONS"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(bare, timeout=10)
    assert info.value.code == 400
    assert json.loads(info.value.read())["error"] == "Origin header is missing in CORS preflight"


def test_no_effect_flags_log_one_line_each(everything: Everything) -> None:
    log = everything.log.read_text(errors="replace")
    for flag in flags.FLAGS:
        if flag.status == flags.NO_EFFECT:
            assert log.count(f"--{flag.name} has no effect") == 1, flag.name


# --- flags whose effect is inside the process ---------------------------------------------------


@pytest.fixture()
def in_process(flag_models: Path) -> Iterator[object]:
    started = []

    def start(*argv: str) -> object:
        running = start_server(parse_args(["--port=0", *argv]))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(grace_s=0)


def test_session_parallelism_and_config_file(flag_models: Path, tmp_path: Path, in_process) -> None:
    session = tmp_path / "session.config"
    session.write_text("allow_soft_placement: true\nintra_op_parallelism_threads: 7\n")
    base = f"--model_base_path={flag_models / 'plain'}"
    running = in_process(
        base, f"--tensorflow_session_config_file={session}", "--tensorflow_inter_op_parallelism=3"
    )
    config = running.core.servable("default").session_config
    # The flags override the file's thread counts, as server.cc does (intra unset -> 0).
    assert (
        config.allow_soft_placement,
        config.intra_op_parallelism_threads,
        config.inter_op_parallelism_threads,
    ) == (True, 0, 3)
    _, options = core_inputs(parse_args([base, "--tensorflow_session_parallelism=5"]))
    assert (
        options.session_config.intra_op_parallelism_threads,
        options.session_config.inter_op_parallelism_threads,
    ) == (5, 5)
    with pytest.raises(ServingError, match="You cannot configure all"):
        core_inputs(
            parse_args(
                [
                    base,
                    "--tensorflow_session_parallelism=1",
                    "--tensorflow_intra_op_parallelism=1",
                    "--tensorflow_inter_op_parallelism=1",
                ]
            )
        )


def test_platform_config_file_replaces_the_bundle_flags(flag_models: Path, tmp_path: Path) -> None:
    platform = tmp_path / "platform.config"
    platform.write_text(_platform_config(batching=False))
    _, options = core_inputs(
        parse_args(
            [
                f"--model_base_path={flag_models / 'plain'}",
                f"--platform_config_file={platform}",
                "--enable_batching",
                "--tensorflow_intra_op_parallelism=9",
                "--enable_model_warmup=false",
            ]
        )
    )
    assert options.batching is None  # --enable_batching is ignored with a platform config
    assert (
        options.session_config.intra_op_parallelism_threads,
        options.session_config.inter_op_parallelism_threads,
    ) == (1, 2)
    assert options.enable_model_warmup and options.saved_model_tags == ("serve",)


def test_mixed_precision_and_gpu_fraction_reach_the_session_config(flag_models: Path) -> None:
    base = f"--model_base_path={flag_models / 'plain'}"
    _, options = core_inputs(
        parse_args([base, "--mixed_precision=bfloat16", "--per_process_gpu_memory_fraction=0.25"])
    )
    config = options.session_config
    assert config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == 1  # ON
    assert config.gpu_options.per_process_gpu_memory_fraction == 0.25
    _, plain = core_inputs(parse_args([base, "--mixed_precision=fp16"]))  # warns, changes nothing
    rewrite = plain.session_config.graph_options.rewrite_options
    assert not rewrite.auto_mixed_precision_onednn_bfloat16


def test_remove_unused_fields_from_bundle_metagraph(flag_models: Path, in_process) -> None:
    base = f"--model_base_path={flag_models / 'plain'}"
    trimmed = in_process(base).core.servable("default").meta_graph_def
    assert not trimmed.graph_def.node
    assert sorted(trimmed.signature_def) == ["serving_default", "times_three"]
    kept = in_process(base, "--remove_unused_fields_from_bundle_metagraph=false")
    assert kept.core.servable("default").meta_graph_def.graph_def.node


def test_num_load_threads(flag_models: Path, in_process) -> None:
    def loaders() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("load_")}

    config = f"--model_config_file={flag_models / 'models.config'}"
    serial = in_process(config, "--num_load_threads=0")
    assert loaders() == {"load_0"}
    serial.stop(grace_s=0)
    in_process(config, "--num_load_threads=3")
    assert len(loaders()) >= 2  # three models, loaded side by side


def test_rest_api_num_threads(flag_models: Path, in_process) -> None:
    running = in_process(
        f"--model_base_path={flag_models / 'plain'}",
        f"--rest_api_port={free_port()}",
        "--rest_api_num_threads=2",
    )
    assert running.rest.num_threads == 2
    url = f"http://127.0.0.1:{running.rest_port}/v1/models/default:predict"
    results: list[int] = []

    def call() -> None:
        data = json.dumps({"instances": [1.0]}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
            results.append(r.status)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [200] * 6


def test_tensor_content_serialization(flag_models: Path, in_process) -> None:
    running = in_process(
        f"--model_base_path={flag_models / 'plain'}", "--enable_serialization_as_tensor_content"
    )
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_predict("default", np.array([2.0, 4.0], np.float32)), timeout=30)
    out = response.outputs["y"]
    assert not out.float_val
    assert np.frombuffer(out.tensor_content, "<f4").tolist() == [3.0, 4.0]


def test_channel_arguments_parse_like_tf_serving() -> None:
    assert channel_arguments("grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x y") == [
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.primary_user_agent", "x y"),
    ]
    assert channel_arguments("a= 12 ,b=99999999999,c=0x10") == [
        ("a", 12),
        ("b", "99999999999"),
        ("c", "0x10"),
    ]
    assert channel_arguments("") == []


# --- the command line -------------------------------------------------------------------------


def test_flag_syntax_like_tensorflow_flags() -> None:
    parsed = flags.parse(
        [
            "--port",
            "9000",
            "--enable_batching",
            "--enable_model_warmup=False",
            "--rest_api_enable_cors_support",
            "true",
            "--model_name=m=1",
            "--not_a_flag=1",
            "stray",
        ]
    )
    values = parsed.values
    assert (values.port, values.enable_batching, values.enable_model_warmup) == (9000, True, False)
    assert values.rest_api_enable_cors_support and values.model_name == "m=1"
    assert parsed.unknown == ["--not_a_flag=1", "stray"]
    dangling = flags.parse(["--model_base_path", "--port=1", "--model_name"])
    assert dangling.unknown == ["--model_base_path", "--model_name"] and dangling.values.port == 1
    for bad in (
        ["--port=80x"],
        ["--enable_batching=yes"],
        ["--port=99999999999"],
        ["--per_process_gpu_memory_fraction=half"],
    ):
        with pytest.raises(flags.FlagParseError, match="Couldn't interpret value"):
            flags.parse(bad)


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "serving", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_version_and_help() -> None:
    version = _run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("TensorFlow ModelServer: 2.21")
    assert "TensorFlow Library: 2.21" in version.stdout
    usage = _run("--help")
    assert usage.returncode == 0
    assert all(f"\t--{f.name}=" in usage.stdout for f in flags.FLAGS)


def _last_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    return lines[-1]


def test_bad_values_exit_with_one_line(flag_models: Path) -> None:
    """As a process: a negative count stops before TensorFlow is even imported (exit 2). The
    config-file cases below take the same path to the exit code without a new interpreter."""
    negative = _run(f"--model_base_path={flag_models / 'plain'}", "--rest_api_num_threads=-4")
    assert negative.returncode == 2
    assert _last_error_line(negative) == (
        "error: --rest_api_num_threads=-4 is negative; expected 0 (auto/default) or a positive "
        "count (see --help)"
    )


@pytest.mark.parametrize(
    ("flag", "content", "expected"),
    [
        (
            "monitoring_config_file",
            "prometheus_config { enable: maybe }",
            "INVALID_ARGUMENT: Invalid protobuf file: '",
        ),
        ("ssl_config_file", "server_key: 1 2 3", "INVALID_ARGUMENT: Invalid protobuf file: '"),
        (
            "platform_config_file",
            "platform_configs { key: ",
            "INVALID_ARGUMENT: Invalid protobuf file: '",
        ),
        (
            "tensorflow_session_config_file",
            "intra_op_parallelism_threads: -x",
            "INVALID_ARGUMENT: Invalid protobuf file: '",
        ),
        ("ssl_config_file", None, "NOT_FOUND: "),
        (
            "ssl_config_file",
            'server_key: "not a key" server_cert: "not a cert"',
            "UNAVAILABLE: Failed to BuildAndStart gRPC server",
        ),
        ("grpc_max_threads", "-1", "error: --grpc_max_threads=-1 is negative"),
        ("grpc_channel_arguments", "grpc.max_connection_age_ms", "error: --grpc_channel_arguments"),
    ],
)
def test_bad_values_in_process(
    flag: str, content: str | None, expected: str, flag_models: Path, tmp_path: Path, capsys
) -> None:
    """The same paths without a new interpreter: serve() returns the exit code."""
    from serving.server import serve

    value = content or ""
    if flag.endswith("_file"):
        path = tmp_path / "given.config"
        if content is not None:
            path.write_text(content)
        value = str(path)
    code = serve(
        parse_args(
            [
                "--port=0",
                f"--model_base_path={flag_models / 'plain'}",
                f"--rest_api_port={free_port()}",
                f"--{flag}={value}",
            ]
        )
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == (2 if expected.startswith("error:") else 1)
    prefix = "" if expected.startswith("error:") else "Failed to start server. Error: "
    assert lines[-1].startswith(prefix + expected), lines


def test_readme_lists_every_flag_with_its_status() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert flags.status_table() in readme  # regenerate with serving.flags.status_table()


def test_console_script_is_the_same_entry_point() -> None:
    import tomllib

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["frozen-scalars-model-server"] == "serving.__main__:console"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from serving.__main__ import console; "
            "sys.argv = ['frozen-scalars-model-server', '--version']; sys.exit(console())",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.startswith("TensorFlow ModelServer: ")


def test_socket_only_and_alts_with_ssl(
    flag_models: Path, tmp_path: Path, in_process, capsys
) -> None:
    """`--port=0` with a socket path: the socket alone, as in server.cc; ALTS and an SSL file
    together are refused with BuildAndStart's message."""
    from serving.server import serve

    socket_path = tmp_path / "only.sock"
    running = in_process(
        f"--model_base_path={flag_models / 'plain'}", f"--grpc_socket_path={socket_path}"
    )
    assert running.grpc_port == 0
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_predict("default", np.array([0.0], np.float32)), timeout=30)
    assert list(response.outputs["y"].float_val) == [2.0]
    code = serve(
        parse_args(
            [
                f"--model_base_path={flag_models / 'plain'}",
                "--use_alts_credentials",
                f"--ssl_config_file={tmp_path / 'x'}",
            ]
        )
    )
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "Failed to start server. Error: INVALID_ARGUMENT: Either use_alts_credentials must be "
        "false or ssl_config_file must be empty."
    )
