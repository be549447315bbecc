"""ServerCore: the models the server is configured with, and how requests find them.

Like TF Serving's `ServerCore`, it holds the `ModelServerConfig` (validated the same way), hands
the model list to the manager (`serving.manager`, which loads versions the source in
`serving.source` aspires), assigns version labels, and routes each request's model spec
(name, version or label) to a servable; status and metadata answers are built here too."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import metrics
from serving.batching import (
    BATCHING_PARAMS_FILE,
    BatchingParameters,
    BatchingServable,
    BatchScheduler,
    load_batching_parameters,
)
from serving.errors import ServingError, invalid_argument
from serving.limits import DEFAULT_MAX_REQUEST_BYTES
from serving.manager import AspiredVersionsManager
from serving.model_config import ONNX, ONNX_PLATFORMS, model_platform, validate_config
from serving.servable import Servable, TFServable
from serving.warmup import run_warmup

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

log = logging.getLogger(__name__)


@dataclass
class ServerOptions:
    """The server flags the core needs (names follow tensorflow_model_server's flags)."""

    file_system_poll_wait_seconds: float = 1.0
    backend: str = "tensorflow"
    saved_model_tags: tuple[str, ...] = ("serve",)
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    batching: BatchingParameters | None = None
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    rest_api_timeout_in_ms: int = 30000
    # The SavedModel bundle options (`--platform_config_file` or the flags that build it).
    session_config: Any = None  # tensorflow.ConfigProto for each version's session
    remove_unused_fields_from_bundle_metagraph: bool = True
    enable_per_model_batching_params: bool = False
    num_load_threads: int = 0  # 0: one version loads at a time (TF's serial load loop)
    enable_serialization_as_tensor_content: bool = False  # gRPC Predict responses
    rest_api_max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # extension flag


class ServerCore:
    """Owns the config, the manager and the version labels; answers lookups for the front-ends.

    One job at ~150 lines, as TF Serving's ServerCore: config (re)loads, label resolution
    and the status/metadata answers all read the same model table under one lock."""

    def __init__(self, config: ModelServerConfig, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        validate_config(config)  # a bad first config fails before anything starts
        self._initial_config = config
        self._config = ModelServerConfig()  # what is served: none until the first reload
        # `config_mu_`: one reload at a time (startup, the config-file poller, gRPC reloads);
        # the next one validates against what the previous one applied.
        self._config_lock = threading.Lock()
        self._scheduler = BatchScheduler(self.options.batching) if self.options.batching else None
        self._manager = AspiredVersionsManager(
            self._create,
            poll_wait_s=self.options.file_system_poll_wait_seconds,
            max_load_retries=self.options.max_num_load_retries,
            load_retry_interval_s=self.options.load_retry_interval_micros / 1e6,
            load_threads=self.options.num_load_threads,
        )
        self._labels: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Loads the initial models and returns once each reached AVAILABLE or END (ports must
        not open earlier); fails like `load_servables_fast.cc` if a servable did not load."""
        self._manager.start_polling()
        try:
            self._reload(self._initial_config, initial=True)
        except ServingError:
            self.stop()
            raise

    def reload_config(self, config: ModelServerConfig) -> None:
        """`ServerCore::ReloadConfig` (gRPC reloads, the config-file poller): serve exactly the
        new list, blocking until new models load; a config TF Serving refuses changes nothing."""
        self._reload(config, initial=False)

    def _reload(self, config: ModelServerConfig, initial: bool) -> None:
        with self._config_lock:
            models = validate_config(config, self._config)
            if models is None:
                log.info("Taking no action for empty config.")
                return
            self._config = ModelServerConfig()
            self._config.CopyFrom(config)
            self._apply(models, initial)

    def stop(self) -> None:
        """Stops polling and loading; queued batches still run."""
        self._manager.stop()
        if self._scheduler is not None:
            self._scheduler.stop()

    def _create(self, model: ModelConfig, version: int, path: str) -> Servable:
        """The loader: the runtime the model's platform names (ONNX Runtime for `onnx` or
        Triton's `onnxruntime_onnx`, and for `tensorflow` under `--backend=onnx`), warmed up,
        behind the batcher if batching is on."""
        name = model.name
        if model_platform(model) in ONNX_PLATFORMS or self.options.backend == ONNX:
            from serving.onnx_servable import OnnxServable

            servable: Servable = OnnxServable(name, version, path)
        else:
            start, loaded = time.monotonic(), False
            try:
                servable = TFServable(
                    name,
                    version,
                    path,
                    self.options.saved_model_tags,
                    self.options.session_config,
                    self.options.remove_unused_fields_from_bundle_metagraph,
                )
                loaded = True
            finally:
                metrics.record_load(path, loaded, time.monotonic() - start)
        if self.options.enable_model_warmup:
            run_warmup(servable, self.options.num_request_iterations_for_warmup)
        if self._scheduler is not None:
            queue = None
            if self.options.enable_per_model_batching_params:
                # `GetPerModelBatchingParams`: only a version with its own file is batched.
                own = os.path.join(path, BATCHING_PARAMS_FILE)
                if not os.path.exists(own):
                    return servable
                queue = load_batching_parameters(own)
            servable = BatchingServable(servable, self._scheduler, queue)
        return servable

    def _apply(self, configs: Sequence[ModelConfig], initial: bool) -> None:
        added = self._manager.manage(configs)
        failed = self._manager.wait_settled(added)
        if failed:
            unit = "servable(s)" if initial else "model(s)"
            details = "".join(
                f"{{name: {name} version: {v.version}}} due to error: {v.error}}}, "
                for name, v in failed
            )
            raise ServingError(
                grpc.StatusCode.UNKNOWN,
                f"{len(failed)} {unit} did not become available: {{{details}}}",
            )
        with self._lock:
            for cfg in configs:
                self._set_labels(cfg.name, dict(cfg.version_labels), initial)

    def _set_labels(self, name: str, labels: dict[str, int], initial: bool) -> None:
        allow_unavailable = initial and self.options.allow_version_labels_for_unavailable_models
        current = self._labels.get(name, {})
        for label, version in labels.items():
            available = self._manager.is_available(name, version)
            if not available and not allow_unavailable and current.get(label) != version:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {name}, "
                    "which is not currently available for inference",
                )
        self._labels[name] = labels

    # --- lookups used by the front-ends ---------------------------------------------------

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """`ServerCore::GetServableHandle`: label -> version, then Latest or Specific lookup."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        if label:
            with self._lock:
                labels = self._labels.get(name, {}) if self._manager.is_managed(name) else {}
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        return self._manager.servable(name, version)

    def model_names(self) -> list[str]:
        """The models of the current config."""
        return self._manager.managed()

    def version_states(self, name: str) -> dict[int, int] | None:
        """Each known version's ModelVersionStatus.State for a model of the current config;
        None for a model that is not in it (the Open Inference Protocol's lookups)."""
        if not self._manager.is_managed(name):
            return None
        return {v: ver.state for v, ver in self._manager.version_states(name).items()}

    def model_status(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """`GetModelStatus`: one version or all known ones, highest first; END keeps its error."""
        versions = self._manager.version_states(name)
        if version is not None:
            if version not in versions:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            versions = {version: versions[version]}
        elif not versions:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in sorted(versions, reverse=True):
            ver = versions[number]
            status = response.model_version_status.add(version=number, state=ver.state)
            status.status.SetInParent()  # the real server always sets it (OK = error_code 0)
            if ver.error is not None:
                status.status.error_code = ver.error.code.value[0]
                status.status.error_message = ver.error.message
        return response

    def model_metadata(self, servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Every SignatureDef of the MetaGraph, packed in Any as a SignatureDefMap."""
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in servable.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sig)
        response.metadata["signature_def"].Pack(sig_map)
        return response
