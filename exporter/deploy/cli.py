"""`python -m exporter deploy` flags: one per DeployOptions field, no logic beyond parsing."""

from __future__ import annotations

import argparse
import dataclasses

from exporter.deploy.spec import (
    KSERVE_DEPLOYMENT_MODES,
    SERVICE_TYPES,
    STORAGE_SCHEMES,
    DeployOptions,
)

_DEFAULTS = DeployOptions()

# flag dest -> (type, help); every dest is a DeployOptions field.
_FLAGS: dict[str, tuple[type, str]] = {
    "namespace": (str, "Kubernetes namespace"),
    "resource_name": (str, "Kubernetes object name (default: the model name, '_' -> '-')"),
    "serving_version": (str, "TF Serving version X.Y[.Z]: image tag, and the op set checked"),
    "image": (str, "full TF Serving image reference (default tensorflow/serving:VERSION)"),
    "storage_uri": (
        str,
        f"where the exported tree (--out) lives: {', '.join(s + '://' for s in STORAGE_SCHEMES)}",
    ),
    "replicas": (int, "initial replicas (default: --min-replicas)"),
    "min_replicas": (int, "autoscaler minimum"),
    "max_replicas": (int, "autoscaler maximum"),
    "cpu_target": (int, "autoscaler target: average CPU utilization, percent of the request"),
    "cpu_request": (str, "CPU request per replica"),
    "cpu_limit": (str, "CPU limit per replica (default none)"),
    "memory_request": (str, "memory request (default: sized from the report's weight bytes)"),
    "memory_limit": (str, "memory limit (default: 2x the request)"),
    "service_type": (str, f"Service type: {', '.join(SERVICE_TYPES)}"),
    "max_batch_size": (int, "batching: largest batch"),
    "batch_timeout_micros": (int, "batching: longest wait to fill a batch"),
    "num_batch_threads": (
        int,
        "batching: batches run in parallel per replica (default: the CPU request in whole cores)",
    ),
    "num_versions": (int, "how many of the newest versions each replica serves"),
    "poll_seconds": (int, "TF Serving --file_system_poll_wait_seconds (new version dirs)"),
    "load_timeout_seconds": (int, "startup probe budget for the first model load"),
    "min_available": (int, "PodDisruptionBudget minAvailable"),
    "service_account": (str, "ServiceAccount (e.g. one bound to storage credentials)"),
    "credentials_secret": (
        str,
        "Secret (by name) with s3/gs credentials for the initializer "
        "(KServe reads them through --service-account)",
    ),
    "storage_initializer_image": (str, "image that copies s3:// / gs:// models into the pod"),
    "kserve_deployment_mode": (str, f"KServe mode: {', '.join(KSERVE_DEPLOYMENT_MODES)}"),
    "triton_version": (str, "Triton runtimeVersion for the ONNX InferenceService"),
}


def add_deploy_parser(sub: argparse._SubParsersAction) -> None:
    """Register `deploy` with one flag per DeployOptions field."""
    deploy = sub.add_parser(
        "deploy", help="write Kubernetes + KServe manifests for an export (OUT/deploy/NAME/)"
    )
    deploy.add_argument("--out", required=True, help="the export's output root, e.g. artifacts")
    deploy.add_argument("--name", required=True, help="model name (as exported)")
    deploy.add_argument(
        "--version",
        type=int,
        help="the export whose report sizes and checks the manifests (default: "
        "the newest); the servers serve the newest --num-versions",
    )
    for dest, (kind, text) in _FLAGS.items():
        default = getattr(_DEFAULTS, dest)
        deploy.add_argument(
            f"--{dest.replace('_', '-')}",
            dest=dest,
            type=kind,
            default=default,
            help=f"{text} (default: {default})",
        )
    deploy.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULTS.batching,
        help="server-side batching per replica",
    )


def deploy_options(args: argparse.Namespace) -> DeployOptions:
    """The DeployOptions the parsed flags name."""
    return DeployOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(DeployOptions)}
    )
