"""KServe `serving.kserve.io/v1beta1` InferenceServices for one export.

- `tensorflow.yaml`: the `tensorflow` predictor (KServe's kserve-tensorflow-serving runtime,
  the official image at `runtimeVersion`) over `STORAGE/tfserving/NAME` (its version dirs).
  The runtime passes `--model_name={{.Name}}` (the InferenceService's name, `_` made `-`);
  KServe appends the predictor's `args` to the runtime's (`MergeRuntimeContainers`) and
  tensorflow_model_server keeps the last value of a flag, so `--model_name=NAME` here makes the
  pod serve the exported name: REST is `/v1/models/NAME:predict`, as every client expects.
- `triton.yaml`: the `triton` predictor over `STORAGE/onnx`, the Triton model repository the
  exporter writes (`NAME/config.pbtxt`, `NAME/VERSION/model.onnx`); Triton loads only NAME
  (`--model-control-mode=explicit --load-model=NAME`) and speaks KServe's v2 protocol. The
  default runtimeVersion, 23.10-py3, is the newest Triton KServe's own samples use; its ONNX
  Runtime (1.16) reads the IR 8 / opset 17 models the exporter writes by default.

Field names follow the InferenceService CRD (config/crd/full/serving.kserve.io_inferenceservices
.yaml, KServe 0.20); tests validate against that CRD (vendored in tests/schemas/kserve) and
against tests/schemas/inferenceservice.schema.json (KServe's webhook rules beside it).
"""

from __future__ import annotations

from typing import Any

from exporter.deploy.spec import DeployOptions, Export, StorageUri, resources, serving_tag

API_VERSION = "serving.kserve.io/v1beta1"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"


def _predictor(options: DeployOptions) -> dict[str, Any]:
    """Autoscaling fields shared by both predictors (HPA on CPU in Standard mode)."""
    spec: dict[str, Any] = {
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        "scaleMetric": "cpu",
        "scaleTarget": options.cpu_target,
    }
    if options.service_account:
        spec["serviceAccountName"] = options.service_account
    if options.batching:
        # KServe's batcher: requests are grouped in front of the server, per replica.
        spec["batcher"] = {
            "maxBatchSize": options.max_batch_size,
            "maxLatency": max(1, options.batch_timeout_micros // 1000),
        }
    return spec


def _service(
    name: str, export: Export, options: DeployOptions, predictor: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": options.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "frozen-scalars",
                "frozen-scalars/model-version": str(export.version),
            },
            "annotations": {DEPLOYMENT_MODE_ANNOTATION: options.kserve_deployment_mode},
        },
        "spec": {"predictor": predictor},
    }


def tensorflow_service(
    export: Export, options: DeployOptions, storage: StorageUri
) -> dict[str, Any]:
    predictor = _predictor(options)
    predictor["tensorflow"] = {
        "storageUri": storage.join("tfserving", export.name),
        "runtimeVersion": serving_tag(options),
        "args": [f"--model_name={export.name}"],
        "resources": resources(options, export.weights_bytes),
    }
    return _service(export.resource_name, export, options, predictor)


def triton_service(export: Export, options: DeployOptions, storage: StorageUri) -> dict[str, Any]:
    predictor = _predictor(options)
    predictor["triton"] = {
        "storageUri": storage.join("onnx"),
        "runtimeVersion": options.triton_version,
        "args": ["--model-control-mode=explicit", f"--load-model={export.name}"],
        "resources": resources(options, export.weights_bytes),
    }
    return _service(f"{export.resource_name}-onnx", export, options, predictor)


def inference_services(
    export: Export, options: DeployOptions, storage: StorageUri
) -> dict[str, dict[str, Any]]:
    """File name -> InferenceService, one per artifact the deployed version has: TF Serving
    for its SavedModel, Triton for its ONNX model."""
    services = {}
    if export.has_savedmodel:
        services["tensorflow.yaml"] = tensorflow_service(export, options, storage)
    if export.has_onnx:
        services["triton.yaml"] = triton_service(export, options, storage)
    return services
