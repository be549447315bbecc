"""What a deployment is made of: the user's options, the export they apply to, the storage.

Validates every flag before anything is rendered, and sizes resources from the report's
weight bytes. Rendering lives in exporter/deploy/manifests.py and exporter/deploy/kserve.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.errors import DeployError
from exporter.savedmodel.compat import (
    DEFAULT_SERVING_VERSION,
    SERVING_IMAGE,
    image_tag,
)

STORAGE_SCHEMES = ("s3", "gs", "pvc")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
# KServe 0.20 names (formerly RawDeployment and Serverless).
KSERVE_DEPLOYMENT_MODES = ("Standard", "Knative")
DEFAULT_STORAGE_URI = "pvc://frozen-scalars-artifacts"
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_CPU = re.compile(r"\d+(\.\d+)?m?")
_MEMORY = re.compile(r"\d+(\.\d+)?([KMGTPE]i?)?")
MIB = 2**20
# Memory: the server's own footprint plus, per weight byte, the GraphDef proto and the
# Session's constant tensors (2x), twice over while a new version loads beside the old (4x).
BASE_MEMORY_MIB = 512
MEMORY_PER_WEIGHT_BYTE = 4


@dataclass(frozen=True)
class DeployOptions:
    """Every user-facing value of the manifests (one CLI flag each)."""

    namespace: str = "default"
    resource_name: str | None = None  # Kubernetes object name; default: from the model name
    serving_version: str = DEFAULT_SERVING_VERSION
    image: str | None = None  # default tensorflow/serving:<serving_version>
    storage_uri: str = DEFAULT_STORAGE_URI  # root of the exported tree (OUT) in storage
    replicas: int | None = None  # initial replicas; default min_replicas
    min_replicas: int = 2
    max_replicas: int = 10
    cpu_target: int = 70  # HPA: average CPU utilization, percent of the request
    cpu_request: str = "1"
    cpu_limit: str | None = None
    memory_request: str | None = None  # default sized from the weights
    memory_limit: str | None = None  # default 2x the request
    service_type: str = "ClusterIP"
    batching: bool = False
    max_batch_size: int = 64
    batch_timeout_micros: int = 2000
    num_batch_threads: int | None = None  # default: the CPU request, in whole cores
    num_versions: int = 1  # model_version_policy latest { num_versions }
    poll_seconds: int = 30  # --file_system_poll_wait_seconds
    load_timeout_seconds: int = 300  # startup probe budget for the first load
    min_available: int = 1  # PodDisruptionBudget
    service_account: str | None = None
    credentials_secret: str | None = None  # Secret with storage credentials, by name
    storage_initializer_image: str = "kserve/storage-initializer:v0.20.0"
    kserve_deployment_mode: str = "Standard"
    triton_version: str = "23.10-py3"


@dataclass(frozen=True)
class StorageUri:
    """`scheme://bucket-or-claim/prefix`, where prefix holds the exported tree."""

    scheme: str
    root: str  # bucket or PVC claim name
    prefix: str  # path inside it, no leading/trailing slash ("" for the root)

    def join(self, *parts: str) -> str:
        """URI of a path under the exported tree."""
        path = "/".join(p for p in (self.prefix, *parts) if p)
        return f"{self.scheme}://{self.root}/{path}"

    def subpath(self, *parts: str) -> str:
        """Path inside the bucket/claim (a volume subPath)."""
        return "/".join(p for p in (self.prefix, *parts) if p)


def parse_storage_uri(uri: str) -> StorageUri:
    """Split an s3:// / gs:// / pvc:// URI, or raise DeployError naming the conventions."""
    scheme, sep, rest = uri.partition("://")
    root, _, prefix = rest.strip("/").partition("/")
    if not sep or scheme not in STORAGE_SCHEMES or not root:
        raise DeployError(
            f"--storage-uri={uri!r}: expected s3://BUCKET/PATH, gs://BUCKET/PATH or "
            "pvc://CLAIM/PATH pointing at the exported tree (the directory holding tfserving/ "
            "and onnx/)."
        )
    return StorageUri(scheme, root, prefix.strip("/"))


@dataclass(frozen=True)
class Export:
    """What the manifests need from one export: names, paths and the report's facts."""

    name: str
    version: int
    resource_name: str
    weights_bytes: int
    has_savedmodel: bool
    has_onnx: bool
    report: Mapping[str, Any]


def resource_name(name: str, override: str | None) -> str:
    """A DNS-1123 label for the Kubernetes objects (TF Serving's model name may hold `_`)."""
    candidate = override or name.lower().replace("_", "-").replace(".", "-")
    if not _DNS_LABEL.fullmatch(candidate):
        raise DeployError(
            f"{candidate!r} is not a valid Kubernetes name (lowercase letters, digits and '-', "
            "starting with a letter, at most 63 characters): pass --resource-name."
        )
    return candidate


def load_export(out: Path, name: str, version: int | None, override: str | None) -> Export:
    """The report of `version` (default: the newest) of model `name` under `out`."""
    reports = out / "reports" / name
    versions = sorted(int(p.stem) for p in reports.glob("*.json") if p.stem.isdigit())
    if version is None and versions:
        version = versions[-1]
    path = reports / f"{version}.json"
    if version is None or not path.is_file():
        raise DeployError(
            f"No export report {reports / 'VERSION.json' if version is None else path}: run "
            f"`python -m exporter export --name {name} --out {out}` first (or fix --version)."
        )
    report = json.loads(path.read_text())
    if "weights_bytes" not in report:
        raise DeployError(f"{path} predates weights_bytes: re-export the model.")
    return Export(
        name=name,
        version=version,
        resource_name=resource_name(name, override),
        weights_bytes=int(report["weights_bytes"]),
        has_savedmodel=bool(report["artifacts"]["savedmodel_dir"]),
        has_onnx=bool(report["artifacts"].get("onnx_path")),
        report=report,
    )


def memory_request(weights_bytes: int) -> str:
    """Memory request for one server holding the model (see MEMORY_PER_WEIGHT_BYTE)."""
    need = BASE_MEMORY_MIB * MIB + MEMORY_PER_WEIGHT_BYTE * weights_bytes
    return f"{-(-need // MIB)}Mi"


def _mebibytes(quantity: str) -> int:
    """Whole MiB of a memory quantity the manifests write (always `<n>Mi`)."""
    return int(quantity.removesuffix("Mi"))


def resources(options: DeployOptions, weights_bytes: int) -> dict[str, dict[str, str]]:
    """Requests/limits: CPU from the flags, memory from the weights unless overridden."""
    memory = options.memory_request or memory_request(weights_bytes)
    limit = options.memory_limit or (
        f"{2 * _mebibytes(memory)}Mi" if memory.endswith("Mi") else memory
    )
    result = {
        "requests": {"cpu": options.cpu_request, "memory": memory},
        "limits": {"memory": limit},
    }
    if options.cpu_limit:
        result["limits"]["cpu"] = options.cpu_limit
    return result


def check_options(options: DeployOptions) -> None:
    """Raise DeployError on values no cluster would accept, before anything is written."""
    for flag, value, pattern in (
        ("--cpu-request", options.cpu_request, _CPU),
        ("--cpu-limit", options.cpu_limit, _CPU),
        ("--memory-request", options.memory_request, _MEMORY),
        ("--memory-limit", options.memory_limit, _MEMORY),
    ):
        if value is not None and not pattern.fullmatch(value):
            raise DeployError(
                f"{flag}={value!r} is not a Kubernetes quantity: use e.g. 500m or 2 (CPU), "
                "512Mi or 4Gi (memory)."
            )
    replicas = options.replicas or options.min_replicas
    if not 1 <= options.min_replicas <= replicas <= options.max_replicas:
        raise DeployError(
            f"Replicas must satisfy 1 <= --min-replicas ({options.min_replicas}) <= --replicas "
            f"({replicas}) <= --max-replicas ({options.max_replicas})."
        )
    if not 1 <= options.cpu_target <= 100:
        raise DeployError(f"--cpu-target={options.cpu_target}: a percentage in 1..100.")
    if not 0 <= options.min_available <= options.min_replicas:
        raise DeployError(
            f"--min-available={options.min_available} must be 0..--min-replicas "
            f"({options.min_replicas}): above it, no pod could ever be evicted."
        )
    positives = {
        "--max-batch-size": options.max_batch_size,
        "--batch-timeout-micros": options.batch_timeout_micros,
        "--num-batch-threads": batch_threads(options),
        "--num-versions": options.num_versions,
        "--poll-seconds": options.poll_seconds,
        "--load-timeout-seconds": options.load_timeout_seconds,
    }
    for flag, value in positives.items():
        if value < 1:
            raise DeployError(f"{flag}={value}: must be a positive integer.")
    choices = {
        "--service-type": (options.service_type, SERVICE_TYPES),
        "--kserve-deployment-mode": (options.kserve_deployment_mode, KSERVE_DEPLOYMENT_MODES),
    }
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise DeployError(f"{flag}={value!r}: expected one of {', '.join(allowed)}.")
    for flag, value in (
        ("--namespace", options.namespace),
        ("--service-account", options.service_account),
        ("--credentials-secret", options.credentials_secret),
    ):
        if value is not None and not _DNS_LABEL.fullmatch(value):
            raise DeployError(f"{flag}={value!r} is not a valid Kubernetes name.")


def batch_threads(options: DeployOptions) -> int:
    """TF Serving's advice: one batch thread per core the replica gets."""
    if options.num_batch_threads is not None:
        return options.num_batch_threads
    cpu = options.cpu_request
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, math.ceil(cores))


def serving_image(options: DeployOptions) -> str:
    """The TF Serving image: --image, else the official one at --serving-version."""
    return options.image or f"{SERVING_IMAGE}:{image_tag(options.serving_version)}"


def serving_tag(options: DeployOptions) -> str:
    """The image's tag (KServe's runtimeVersion): --image's own, else --serving-version's."""
    last = serving_image(options).rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else image_tag(options.serving_version)
