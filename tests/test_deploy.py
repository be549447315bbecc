"""`python -m exporter deploy`: Kubernetes + KServe manifests for a real export, validated
offline (kubernetes-validate's schemas, KServe's own InferenceService CRD vendored in
tests/schemas/kserve plus the webhook rules in tests/schemas, yamllint), every flag seen in the
YAML, and the image version one constant across docker/ and manifests."""

from __future__ import annotations

import functools
import gzip
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2
from yamllint import linter
from yamllint.config import YamlLintConfig

from exporter.cli import main
from exporter.deploy.manifests import READINESS_SCRIPT
from exporter.savedmodel.compat import DEFAULT_SERVING_VERSION, SERVING_IMAGE
from tests.conftest import REPO_ROOT

KUBERNETES_VERSION = "1.37.0"  # newest schemas kubernetes-validate ships
ISVC_SCHEMA = json.loads(
    (Path(__file__).parent / "schemas" / "inferenceservice.schema.json").read_text()
)
ISVC = jsonschema.Draft202012Validator(ISVC_SCHEMA)
KSERVE_FILES_DIR = Path(__file__).parent / "schemas" / "kserve"  # KServe v0.20.0, see README
K8S_FILES = ("configmap.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")
KSERVE_FILES = ("tensorflow.yaml", "triton.yaml")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference model exported once (default --serving-version): the export root."""
    from exporter import export_model
    from tests import models

    out = tmp_path_factory.mktemp("deploy") / "artifacts"
    export_model(models.reference_model(), out, "reference")
    return out


@pytest.fixture(scope="module")
def default_docs(exported: Path) -> dict[str, Any]:
    """The manifests with every flag at its default (read once, before any test rewrites)."""
    main(["deploy", "--out", str(exported), "--name", "reference"])
    root = exported / "deploy" / "reference"
    return {str(p.relative_to(root)): yaml.safe_load(p.read_text()) for p in root.glob("*/*.yaml")}


def _deploy(out: Path, *flags: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run the CLI into a fresh deploy/ tree; return {"kubernetes/x.yaml": doc, ...}."""
    root = out / "deploy" / "reference"
    for path in root.glob("*/*.yaml"):
        path.unlink()
    code = main(["deploy", "--out", str(out), "--name", "reference", *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    paths = [Path(line) for line in captured.out.splitlines()]
    assert all(path.is_file() for path in paths)
    return {str(path.relative_to(root)): yaml.safe_load(path.read_text()) for path in paths}


def _container(docs: dict[str, Any]) -> dict[str, Any]:
    return docs["kubernetes/deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]


def _pod(docs: dict[str, Any]) -> dict[str, Any]:
    return docs["kubernetes/deployment.yaml"]["spec"]["template"]["spec"]


def _strict(schema: Any) -> Any:
    """An OpenAPI v3 structural schema with unknown fields refused wherever the CRD does not
    preserve them: what kubectl's strict field validation reports (the API server would
    otherwise prune them silently, and the pod would run without them)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def kserve_crd() -> jsonschema.Draft4Validator:
    """KServe's published InferenceService CRD (config/crd/full/serving.kserve.io_inference
    services.yaml), its served `v1beta1` schema as a validator (OpenAPI v3.0 ~ JSON Schema 4)."""
    text = gzip.decompress(
        (KSERVE_FILES_DIR / "serving.kserve.io_inferenceservices.yaml.gz").read_bytes()
    )
    crd = yaml.load(text, Loader=yaml.CSafeLoader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    assert version["served"] and version["storage"]
    return jsonschema.Draft4Validator(_strict(version["schema"]["openAPIV3Schema"]))


def _validate_all(docs: dict[str, Any]) -> None:
    for name, doc in docs.items():
        if name.startswith("kubernetes/"):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        else:
            kserve_crd().validate(doc)
            ISVC.validate(doc)


def test_report_states_graph_versions_ops_and_weights(exported: Path) -> None:
    import tensorflow as tf

    report = json.loads((exported / "reports" / "reference" / "1.json").read_text())
    tfserving = report["tfserving"]
    assert tfserving["serving_version"] == DEFAULT_SERVING_VERSION
    assert tfserving["graph_def_versions"]["producer"] == tf.version.GRAPH_DEF_VERSION
    assert tfserving["graph_def_versions"]["min_consumer"] == 0
    assert tfserving["ops"] == sorted(tfserving["ops"])
    assert {"MatMul", "Placeholder", "Const", "Relu"} <= set(tfserving["ops"])
    weights = sum(math.prod(c["shape"]) * 4 for c in report["freeze_proof"]["constants"])
    assert report["weights_bytes"] == weights > 0


def test_default_manifests_validate_offline(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = _deploy(exported, capsys=capsys)
    assert sorted(docs) == sorted(
        [f"kubernetes/{f}" for f in K8S_FILES] + [f"kserve/{f}" for f in KSERVE_FILES]
    )
    _validate_all(docs)
    kinds = {doc["kind"] for doc in docs.values()}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "InferenceService",
    }
    assert docs["kubernetes/hpa.yaml"]["apiVersion"] == "autoscaling/v2"
    assert docs["kubernetes/pdb.yaml"]["apiVersion"] == "policy/v1"
    ports = {p["name"]: p["port"] for p in docs["kubernetes/service.yaml"]["spec"]["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}


def test_schemas_refuse_a_broken_manifest(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The validators can fail: a misspelt field and a wrong type are caught."""
    jsonschema.Draft202012Validator.check_schema(ISVC_SCHEMA)
    docs = _deploy(exported, capsys=capsys)
    deployment = docs["kubernetes/deployment.yaml"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    isvc = docs["kserve/tensorflow.yaml"]
    isvc["spec"]["predictor"]["tensorflow"]["storageURI"] = "s3://typo"
    with pytest.raises(jsonschema.ValidationError):
        ISVC.validate(isvc)
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        kserve_crd().validate(isvc)
    isvc["spec"]["predictor"]["tensorflow"].pop("storageURI")
    isvc["spec"]["predictor"]["minReplicas"] = "1"  # the CRD's type: integer
    with pytest.raises(jsonschema.ValidationError, match="'1' is not of type 'integer'"):
        kserve_crd().validate(isvc)
    isvc = docs["kserve/triton.yaml"]
    isvc["spec"]["predictor"]["tensorflow"] = {"storageUri": "s3://x"}  # two predictors
    with pytest.raises(jsonschema.ValidationError):
        ISVC.validate(isvc)


def test_generated_yaml_passes_yamllint(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _deploy(exported, "--batching", "--storage-uri", "s3://bucket/exports", capsys=capsys)
    config = YamlLintConfig(file=str(REPO_ROOT / ".yamllint"))
    paths = sorted((exported / "deploy" / "reference").glob("*/*.yaml"))
    assert len(paths) == len(K8S_FILES) + len(KSERVE_FILES)
    for path in paths:
        problems = list(linter.run(path.read_text(), config))
        assert problems == [], f"{path}: {problems}"


def _monitoring_config_class() -> type:
    """`tensorflow.serving.MonitoringConfig` (tensorflow_serving/config/monitoring_config.proto:
    prometheus_config = 1 {enable = 1, path = 2}); the tensorflow-serving-api wheel does not
    ship its generated module, so it is built from that descriptor."""
    fdp = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="frozen_scalars/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=fdp.TYPE_BOOL, label=fdp.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=fdp.TYPE_STRING, label=fdp.LABEL_OPTIONAL)
    proto.message_type.add(name="MonitoringConfig").field.add(
        name="prometheus_config",
        number=1,
        type=fdp.TYPE_MESSAGE,
        label=fdp.LABEL_OPTIONAL,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )


def test_configmap_holds_tf_serving_text_protos(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.docker_files import batching_parameters_class

    data = _deploy(exported, "--batching", capsys=capsys)["kubernetes/configmap.yaml"]["data"]
    config = text_format.Parse(data["models.config"], model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "reference",
        "/models/reference",
        "tensorflow",
    )
    batching = text_format.Parse(data["batching.config"], batching_parameters_class()())
    assert batching.max_batch_size.value == 64
    monitoring = text_format.Parse(data["monitoring.config"], _monitoring_config_class()())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_deployment_is_hardened_and_probes_availability(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.docker_files import health_commands

    docs = _deploy(exported, capsys=capsys)
    pod, container = _pod(docs), _container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/models"]["readOnly"] is True
    # The exact probe docker/ uses (and tests/test_docker.py runs against a live server).
    assert health_commands()["Dockerfile"] == READINESS_SCRIPT
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["exec"]["command"] == ["/bin/bash", "-c", READINESS_SCRIPT]
    assert container["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    assert {"name": "MODEL_NAME", "value": "reference"} in container["env"]
    report = json.loads((exported / "reports" / "reference" / "1.json").read_text())
    memory_mib = int(container["resources"]["requests"]["memory"].removesuffix("Mi"))
    assert memory_mib * 2**20 >= 512 * 2**20 + 4 * report["weights_bytes"]


def test_one_serving_version_everywhere(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Dockerfile FROM, compose's image, the manifests and the compat check share one tag."""
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    compose = yaml.safe_load((REPO_ROOT / "docker" / "docker-compose.yml").read_text())
    image = f"{SERVING_IMAGE}:{DEFAULT_SERVING_VERSION}"
    assert base == compose["services"]["tfserving-volume"]["image"] == image
    docs = _deploy(exported, capsys=capsys)
    assert _container(docs)["image"] == image
    tensorflow = docs["kserve/tensorflow.yaml"]["spec"]["predictor"]["tensorflow"]
    assert tensorflow["runtimeVersion"] == DEFAULT_SERVING_VERSION


Getter = Callable[[dict[str, Any]], Any]


def _args(docs: dict[str, Any]) -> list[str]:
    return _container(docs)["args"]


def _init(docs: dict[str, Any]) -> dict[str, Any]:
    return _pod(docs)["initContainers"][0]


def _predictor(docs: dict[str, Any], kind: str = "tensorflow") -> dict[str, Any]:
    return docs[f"kserve/{kind}.yaml"]["spec"]["predictor"]


def _config(docs: dict[str, Any], key: str) -> str:
    return docs["kubernetes/configmap.yaml"]["data"][key]


def _batching(docs: dict[str, Any]) -> Any:
    """batching.config parsed as TF Serving's BatchingParameters."""
    from google.protobuf import text_format

    from tests.docker_files import batching_parameters_class

    return text_format.Parse(_config(docs, "batching.config"), batching_parameters_class()())


def _models(docs: dict[str, Any]) -> Any:
    """models.config parsed as TF Serving's ModelServerConfig."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    return text_format.Parse(_config(docs, "models.config"), config)


S3 = ("--storage-uri", "s3://bucket/exports")
FLAG_CASES: list[tuple[tuple[str, ...], Getter, Any]] = [
    (
        ("--namespace", "ml-prod"),
        lambda d: {doc["metadata"]["namespace"] for doc in d.values()},
        {"ml-prod"},
    ),
    (
        ("--resource-name", "ref-api"),
        lambda d: (
            d["kubernetes/service.yaml"]["metadata"]["name"],
            d["kserve/triton.yaml"]["metadata"]["name"],
        ),
        ("ref-api", "ref-api-onnx"),
    ),
    (
        ("--serving-version", "2.19"),
        lambda d: (_container(d)["image"], _predictor(d)["tensorflow"]["runtimeVersion"]),
        ("tensorflow/serving:2.19.0", "2.19.0"),
    ),
    (
        ("--image", "registry.local:5000/tfs:2.20.0-gpu"),
        lambda d: (_container(d)["image"], _predictor(d)["tensorflow"]["runtimeVersion"]),
        ("registry.local:5000/tfs:2.20.0-gpu", "2.20.0-gpu"),
    ),
    (
        S3,
        lambda d: (
            _init(d)["args"],
            _predictor(d)["tensorflow"]["storageUri"],
            _predictor(d, "triton")["triton"]["storageUri"],
        ),
        (
            ["s3://bucket/exports/tfserving/reference", "/models/reference"],
            "s3://bucket/exports/tfserving/reference",
            "s3://bucket/exports/onnx",
        ),
    ),
    (
        ("--storage-uri", "gs://bucket/exports"),
        lambda d: _init(d)["args"][0],
        "gs://bucket/exports/tfserving/reference",
    ),
    (
        ("--storage-uri", "pvc://models-claim/team/exports"),
        lambda d: (
            _pod(d)["volumes"][0]["persistentVolumeClaim"]["claimName"],
            _container(d)["volumeMounts"][0]["subPath"],
        ),
        ("models-claim", "team/exports/tfserving"),
    ),
    (("--replicas", "3"), lambda d: d["kubernetes/deployment.yaml"]["spec"]["replicas"], 3),
    (
        ("--min-replicas", "1"),
        lambda d: (d["kubernetes/hpa.yaml"]["spec"]["minReplicas"], _predictor(d)["minReplicas"]),
        (1, 1),
    ),
    (
        ("--max-replicas", "5"),
        lambda d: (
            d["kubernetes/hpa.yaml"]["spec"]["maxReplicas"],
            _predictor(d, "triton")["maxReplicas"],
        ),
        (5, 5),
    ),
    (
        ("--cpu-target", "55"),
        lambda d: (
            d["kubernetes/hpa.yaml"]["spec"]["metrics"][0]["resource"]["target"][
                "averageUtilization"
            ],
            _predictor(d)["scaleTarget"],
        ),
        (55, 55),
    ),
    (("--cpu-request", "2"), lambda d: _container(d)["resources"]["requests"]["cpu"], "2"),
    (("--cpu-limit", "4"), lambda d: _container(d)["resources"]["limits"].get("cpu"), "4"),
    (
        ("--memory-request", "3Gi"),
        lambda d: (
            _container(d)["resources"]["requests"]["memory"],
            _predictor(d)["tensorflow"]["resources"]["requests"]["memory"],
        ),
        ("3Gi", "3Gi"),
    ),
    (("--memory-limit", "6Gi"), lambda d: _container(d)["resources"]["limits"]["memory"], "6Gi"),
    (
        ("--service-type", "LoadBalancer"),
        lambda d: d["kubernetes/service.yaml"]["spec"]["type"],
        "LoadBalancer",
    ),
    (
        ("--batching",),
        lambda d: ("--enable_batching" in _args(d), "batcher" in _predictor(d)),
        (True, True),
    ),
    (
        ("--batching", "--max-batch-size", "32"),
        lambda d: (
            _batching(d).max_batch_size.value == 32,
            _predictor(d)["batcher"]["maxBatchSize"],
        ),
        (True, 32),
    ),
    (
        ("--batch-timeout-micros", "500"),
        lambda d: _batching(d).batch_timeout_micros.value == 500,
        True,
    ),
    (
        ("--num-batch-threads", "2"),
        lambda d: _batching(d).num_batch_threads.value == 2,
        True,
    ),
    (
        ("--cpu-request", "2500m"),
        lambda d: _batching(d).num_batch_threads.value == 3,
        True,
    ),
    (
        ("--num-versions", "2"),
        lambda d: _models(d).model_config_list.config[0].model_version_policy.latest.num_versions,
        2,
    ),
    (("--poll-seconds", "5"), lambda d: "--file_system_poll_wait_seconds=5" in _args(d), True),
    (
        ("--load-timeout-seconds", "600"),
        lambda d: _container(d)["startupProbe"]["failureThreshold"],
        120,
    ),
    (("--min-available", "0"), lambda d: d["kubernetes/pdb.yaml"]["spec"]["minAvailable"], 0),
    (
        ("--service-account", "model-reader"),
        lambda d: (_pod(d).get("serviceAccountName"), _predictor(d).get("serviceAccountName")),
        ("model-reader", "model-reader"),
    ),
    (
        (*S3, "--credentials-secret", "s3-creds"),
        lambda d: _init(d)["envFrom"],
        [{"secretRef": {"name": "s3-creds"}}],
    ),
    (
        (*S3, "--storage-initializer-image", "mirror.local/storage-initializer:v0.20.0"),
        lambda d: _init(d)["image"],
        "mirror.local/storage-initializer:v0.20.0",
    ),
    (
        ("--kserve-deployment-mode", "Knative"),
        lambda d: d["kserve/triton.yaml"]["metadata"]["annotations"][
            "serving.kserve.io/deploymentMode"
        ],
        "Knative",
    ),
    (
        ("--triton-version", "24.01-py3"),
        lambda d: _predictor(d, "triton")["triton"]["runtimeVersion"],
        "24.01-py3",
    ),
]


def _safe(getter: Getter, docs: dict[str, Any]) -> Any:
    """The getter's value on the default manifests (None where the field is absent)."""
    try:
        return getter(docs)
    except (KeyError, IndexError):
        return None


@pytest.mark.parametrize(
    ("flags", "getter", "expected"), FLAG_CASES, ids=[" ".join(case[0]) for case in FLAG_CASES]
)
def test_each_flag_reaches_the_yaml(
    exported: Path,
    capsys: pytest.CaptureFixture[str],
    default_docs: dict[str, Any],
    flags: tuple[str, ...],
    getter: Getter,
    expected: Any,
) -> None:
    default = _safe(getter, default_docs)
    assert default != expected, "the case must change something"
    docs = _deploy(exported, *flags, capsys=capsys)
    assert getter(docs) == expected
    _validate_all(docs)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--storage-uri", "http://host/models"), "expected s3://"),
        (("--min-replicas", "4", "--max-replicas", "2"), "--min-replicas"),
        (("--cpu-target", "150"), "--cpu-target"),
        (("--memory-request", "lots"), "--memory-request"),
        (("--cpu-request", "2Gi"), "--cpu-request"),
        (("--service-type", "Ingress"), "--service-type"),
        (("--namespace", "Prod_NS"), "--namespace"),
        (("--serving-version", "2.5"), "no op table for TF Serving 2.5"),
        (("--serving-version", "latest"), "not a version"),
        (("--version", "9"), "No export report"),
        (("--credentials-secret", "s3-creds"), "has no use with a pvc://"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    exported: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    code = main(["deploy", "--out", str(exported), "--name", "reference", *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_resource_name_is_derived_when_the_model_name_is_not_dns(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.deploy.spec import resource_name

    assert resource_name("my_model.v2", None) == "my-model-v2"
    assert (
        _deploy(exported, capsys=capsys)["kubernetes/deployment.yaml"]["metadata"]["name"]
        == "reference"
    )


def test_kserve_pod_serves_the_exported_model_name(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """KServe's kserve-tensorflow-serving runtime (config/runtimes, vendored) passes
    `--model_name={{.Name}}`, the InferenceService's name; KServe appends the predictor's args to
    the runtime's (pkg/controller/v1beta1/inferenceservice/utils/utils.go
    `MergeRuntimeContainers`) and tensorflow_model_server keeps a flag's last value
    (tensorflow/core/util/command_line_flags.cc, as serving.flags parses): with the object named
    `ref-api`, the pod still serves `reference`, the name clients and `exporter parity` use."""
    from serving.server import parse_args

    docs = _deploy(exported, "--resource-name", "ref-api", capsys=capsys)
    isvc = docs["kserve/tensorflow.yaml"]
    assert isvc["metadata"]["name"] == "ref-api"
    runtime = yaml.safe_load((KSERVE_FILES_DIR / "kserve-tensorflow-serving.yaml").read_text())
    (container,) = runtime["spec"]["containers"]
    runtime_args = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in container["args"]]
    assert "--model_name=ref-api" in runtime_args
    args = parse_args(runtime_args + isvc["spec"]["predictor"]["tensorflow"]["args"])
    assert (args.model_name, args.model_base_path) == ("reference", "/mnt/models")


def test_savedmodel_only_export_gets_no_triton_service(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--formats savedmodel` wrote no ONNX model: no Triton InferenceService may point at it."""
    import shutil

    out = tmp_path / "artifacts"
    shutil.copytree(exported / "tfserving", out / "tfserving")
    report_path = out / "reports" / "reference" / "1.json"
    report = json.loads((exported / "reports" / "reference" / "1.json").read_text())
    report["artifacts"]["onnx_path"] = None
    report["formats"] = {"produced": ["savedmodel"], "not_produced": {"onnx": "not requested"}}
    report_path.parent.mkdir(parents=True)
    report_path.write_text(json.dumps(report))
    docs = _deploy(out, capsys=capsys)
    assert "kserve/tensorflow.yaml" in docs and "kserve/triton.yaml" not in docs
    assert not (out / "deploy" / "reference" / "kserve" / "triton.yaml").exists()
