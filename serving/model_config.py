"""The `ModelServerConfig`: reading it, and the checks `ServerCore::ReloadConfig` runs before a
config replaces the one being served.

Startup, the `--model_config_file` poller and gRPC `HandleReloadConfigRequest` all go through
`validate_config`, so a config that TF Serving would refuse never reaches the manager: an
unreadable or empty file, a config that is not a `model_config_list` once one is served, a
duplicate name, a relative base path, a model whose platform this server has no runtime for
(`CreateStoragePathRoutes`), or a served model whose platform changes
(`ValidateNoModelsChangePlatforms`).
"""

from __future__ import annotations

import os

import grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.config_protos import parse_text, read_text_file
from serving.errors import ServingError, UsageError, invalid_argument

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

TENSORFLOW = "tensorflow"  # kTensorFlowModelPlatform
ONNX = "onnx"  # an extension: the version directories hold model.onnx, run by ONNX Runtime
ONNX_PLATFORMS = (ONNX, "onnxruntime_onnx")  # and Triton's name for the same runtime
PLATFORMS = (TENSORFLOW, *ONNX_PLATFORMS)


def parse_config_text(text: str, origin: str = "<text>") -> ModelServerConfig:
    """Parses a text ModelServerConfig; a parse error is INVALID_ARGUMENT `Invalid protobuf
    file: '<origin>'` as `ParseProtoTextFile` says it (the parser's reason appended)."""
    return parse_text(text, ModelServerConfig(), origin)


def load_config_file(path: str) -> ModelServerConfig:
    """Reads `--model_config_file` as server.cc's `BuildAndStart` does (`ParseProtoTextFile`):
    a missing file is NOT_FOUND `<path>; No such file or directory`, a typo INVALID_ARGUMENT
    `Invalid protobuf file: '<path>'`, so startup ends `Failed to start server. Error: ...`.
    An empty file is refused too, as the real server's read of it fails (it maps the file, and
    a 0-byte mapping is an error): a config caught mid-rewrite must never read as "no models"."""
    text = read_text_file(path)
    if not text:
        raise UsageError(
            f"Could not read model config file {path}: the file is empty (0 bytes); write the "
            "new config beside it and rename it over the old one"
        )
    return parse_config_text(text, path)


def config_from_flags(model_name: str, model_base_path: str) -> ModelServerConfig:
    """The single-model config `--model_name/--model_base_path` stand for."""
    config = ModelServerConfig()
    config.model_config_list.config.add(
        name=model_name, base_path=model_base_path, model_platform=TENSORFLOW
    )
    return config


def model_platform(model: ModelConfig) -> str:
    """`GetPlatform`: `model_platform`, or the deprecated `model_type` (TENSORFLOW only)."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise invalid_argument(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise invalid_argument(
                f"ModelServerConfig::model_type choice {model.model_type} not supported."
            )
        return TENSORFLOW
    if not model.model_platform:
        raise invalid_argument(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}"
        )
    return model.model_platform


def _check_list(models: list[ModelConfig]) -> None:
    """`ValidateModelConfigList`: unique names, then absolute base paths (or URIs)."""
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
    for model in models:
        if not (os.path.isabs(model.base_path) or "://" in model.base_path):
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )


def _check_platforms(old: list[ModelConfig], new: list[ModelConfig]) -> None:
    """`ValidateNoModelsChangePlatforms`, then `CreateStoragePathRoutes`'s platform lookup."""
    was = {model.name: model_platform(model) for model in old}
    for model in new:
        if model.name in was and model_platform(model) != was[model.name]:
            raise invalid_argument(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{was[model.name]} and new platform requested is {model_platform(model)}"
            )
    for model in new:
        platform = model_platform(model)
        if platform not in PLATFORMS:
            raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")


def validate_config(
    new: ModelServerConfig, current: ModelServerConfig | None = None
) -> list[ModelConfig] | None:
    """`ServerCore::ReloadConfig`'s checks, in its order, against the config being served
    (`current`, None before the first). Returns the models to serve, or None when there is
    nothing to do (an empty first config: "Taking no action for empty config.")."""
    current = current if current is not None else ModelServerConfig()
    old_kind, kind = current.WhichOneof("config"), new.WhichOneof("config")
    if (
        old_kind is not None
        and new != current
        and (old_kind != "model_config_list" or kind != "model_config_list")
    ):
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "Cannot transition to requested config. It is only legal to transition from one "
            "ModelConfigList to another.",
        )
    if kind is None:
        return None
    if kind != "model_config_list":
        raise invalid_argument(
            "ServerModelConfig type not supported: only model_config_list is supported"
        )
    models = list(new.model_config_list.config)
    _check_list(models)
    _check_platforms(list(current.model_config_list.config), models)
    return models
