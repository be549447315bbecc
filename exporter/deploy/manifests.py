"""Plain Kubernetes objects serving one exported SavedModel with the official TF Serving image.

ConfigMap (models.config, batching.config, monitoring.config: TF Serving's text protos),
Deployment, Service (gRPC 8500, REST 8501), HorizontalPodAutoscaler (autoscaling/v2) and
PodDisruptionBudget (policy/v1). The model comes from the exported tree in storage: a PVC is
mounted read-only (new version directories published there roll out live, TF Serving polls
them), s3:// and gs:// are copied into an emptyDir by KServe's storage-initializer image
before the server starts (new versions then need `kubectl rollout restart`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from exporter.deploy.spec import (
    DeployOptions,
    Export,
    StorageUri,
    batch_threads,
    resources,
    serving_image,
)
from serving.config_protos import BatchingParameters, MonitoringConfig

GRPC_PORT, REST_PORT = 8500, 8501
MODELS_DIR, CONFIG_DIR = "/models", "/config"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
SERVER_BINARY = "/usr/bin/tensorflow_model_server"
NON_ROOT_UID = 1000
# The same probe as docker/Dockerfile's HEALTHCHECK (tests/test_deploy.py holds them equal):
# the image has no curl/wget, and a 200 from the status route is not enough (it answers 200
# when every version is END), so bash's /dev/tcp asks for a version in state AVAILABLE.
READINESS_SCRIPT = (
    "exec 3<>/dev/tcp/127.0.0.1/8501 && "
    "printf 'GET /v1/models/%s HTTP/1.0\\r\\n\\r\\n' \"$MODEL_NAME\" >&3 && "
    "grep -q '\"AVAILABLE\"' <&3"
)


def models_config(name: str, num_versions: int) -> str:
    """ModelServerConfig text proto: one model, the newest `num_versions` versions."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(
        name=name, base_path=f"{MODELS_DIR}/{name}", model_platform="tensorflow"
    )
    model.model_version_policy.latest.num_versions = num_versions
    return text_format.MessageToString(config)


def batching_config(options: DeployOptions) -> str:
    """BatchingParameters text proto (used with --enable_batching)."""
    params = BatchingParameters()
    params.max_batch_size.value = options.max_batch_size
    params.batch_timeout_micros.value = options.batch_timeout_micros
    params.max_enqueued_batches.value = 100
    params.num_batch_threads.value = batch_threads(options)
    params.pad_variable_length_inputs = False
    return text_format.MessageToString(params)


def monitoring_config() -> str:
    """MonitoringConfig text proto: Prometheus metrics on the REST port."""
    config = MonitoringConfig()
    config.prometheus_config.enable = True
    config.prometheus_config.path = PROMETHEUS_PATH
    return text_format.MessageToString(config)


def _labels(export: Export) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": export.resource_name,
        "app.kubernetes.io/component": "tfserving",
        "app.kubernetes.io/part-of": "frozen-scalars",
    }


def _metadata(export: Export, options: DeployOptions) -> dict[str, Any]:
    return {"name": export.resource_name, "namespace": options.namespace, "labels": _labels(export)}


def config_map(export: Export, options: DeployOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(export, options),
        "data": {
            "models.config": models_config(export.name, options.num_versions),
            "batching.config": batching_config(options),
            "monitoring.config": monitoring_config(),
        },
    }


def server_args(options: DeployOptions) -> list[str]:
    """tensorflow_model_server's own flags."""
    args = [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={CONFIG_DIR}/models.config",
        f"--file_system_poll_wait_seconds={options.poll_seconds}",
        f"--monitoring_config_file={CONFIG_DIR}/monitoring.config",
    ]
    if options.batching:
        args += ["--enable_batching", f"--batching_parameters_file={CONFIG_DIR}/batching.config"]
    return args


def _model_source(
    export: Export, options: DeployOptions, storage: StorageUri
) -> tuple[dict[str, Any], list[dict[str, Any]], dict]:
    """(models volume, initContainers, the server's models mount) for the storage URI."""
    if storage.scheme == "pvc":
        volume = {
            "name": "models",
            "persistentVolumeClaim": {"claimName": storage.root, "readOnly": True},
        }
        mount = {
            "name": "models",
            "mountPath": MODELS_DIR,
            "readOnly": True,
            "subPath": storage.subpath("tfserving"),
        }
        return volume, [], mount
    initializer: dict[str, Any] = {
        "name": "storage-initializer",
        "image": options.storage_initializer_image,
        "args": [storage.join("tfserving", export.name), f"{MODELS_DIR}/{export.name}"],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if options.credentials_secret:
        initializer["envFrom"] = [{"secretRef": {"name": options.credentials_secret}}]
    mount = {"name": "models", "mountPath": MODELS_DIR, "readOnly": True}
    return {"name": "models", "emptyDir": {}}, [initializer], mount


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _probe_exec() -> dict[str, Any]:
    return {"exec": {"command": ["/bin/bash", "-c", READINESS_SCRIPT]}}


def deployment(
    export: Export, options: DeployOptions, storage: StorageUri, config: dict[str, Any]
) -> dict[str, Any]:
    volume, init_containers, models_mount = _model_source(export, options, storage)
    # Changing the ConfigMap changes the pod template, so pods roll onto the new config.
    config_hash = hashlib.sha256(repr(sorted(config["data"].items())).encode()).hexdigest()[:16]
    period = 5
    container = {
        "name": "tfserving",
        "image": serving_image(options),
        "command": [SERVER_BINARY],
        "args": server_args(options),
        "env": [{"name": "MODEL_NAME", "value": export.name}],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
        ],
        "resources": resources(options, export.weights_bytes),
        # The first load may take a while: readiness/liveness start once a version is up.
        "startupProbe": {
            **_probe_exec(),
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": -(-options.load_timeout_seconds // period),
        },
        "readinessProbe": {
            **_probe_exec(),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "grpc"},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": _container_security(),
        "volumeMounts": [
            models_mount,
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            volume,
            {"name": "config", "configMap": {"name": export.resource_name}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if options.service_account:
        pod_spec["serviceAccountName"] = options.service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(export, options),
        "spec": {
            "replicas": options.replicas or options.min_replicas,
            "selector": {"matchLabels": _labels(export)},
            # Surge first: a new pod must report AVAILABLE before an old one goes.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": _labels(export),
                    "annotations": {
                        "frozen-scalars/config-sha256": config_hash,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(REST_PORT),
                        "prometheus.io/path": PROMETHEUS_PATH,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def service(export: Export, options: DeployOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(export, options),
        "spec": {
            "type": options.service_type,
            "selector": _labels(export),
            "ports": [
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {"name": "http", "port": REST_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }


def autoscaler(export: Export, options: DeployOptions) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(export, options),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": export.resource_name,
            },
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": options.cpu_target},
                    },
                }
            ],
        },
    }


def disruption_budget(export: Export, options: DeployOptions) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(export, options),
        "spec": {
            "minAvailable": options.min_available,
            "selector": {"matchLabels": _labels(export)},
        },
    }


def kubernetes_objects(
    export: Export, options: DeployOptions, storage: StorageUri
) -> dict[str, dict[str, Any]]:
    """File name -> object, in the order `kubectl apply -f` should see them."""
    config = config_map(export, options)
    return {
        "configmap.yaml": config,
        "deployment.yaml": deployment(export, options, storage, config),
        "service.yaml": service(export, options),
        "hpa.yaml": autoscaler(export, options),
        "pdb.yaml": disruption_budget(export, options),
    }
