"""ServerCore: which model versions exist, which are served, and how requests find them.

It mirrors TF Serving's ServerCore + AspiredVersionsManager: a `ModelServerConfig` names the
models; each base path is polled for numeric version directories; the version policy picks the
aspired versions; new versions load on background threads (with retries and warmup) and old ones
are unloaded only once an aspired version is ready (availability-preserving policy)."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import inference
from serving.batching import BatchingParameters, BatchingServable, BatchScheduler
from serving.errors import ServingError, UsageError, invalid_argument
from serving.servable import Servable, SignatureDef, TFServable
from serving.warmup import run_warmup

State = get_model_status_pb2.ModelVersionStatus.State
ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

# `absl::SimpleAtoi` on a directory name: optional sign and surrounding spaces, then digits.
_VERSION_NAME = re.compile(r"^\s*\+?(\d+)\s*$")
_INT64_MAX = 2**63 - 1

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


@dataclass
class _Version:
    """One version's life cycle: START -> LOADING -> AVAILABLE -> UNLOADING -> END (or END with
    an error after failed loads)."""

    version: int
    path: str
    state: int = State.START
    error: ServingError | None = None
    servable: Servable | None = None
    aspired: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, _Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


def parse_config_text(text: str) -> ModelServerConfig:
    """Parses a text ModelServerConfig; the error text matches the real server's."""
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise UsageError(
            f"Error parsing text-format tensorflow.serving.ModelServerConfig: {e}"
        ) from e
    return config


def load_config_file(path: str) -> ModelServerConfig:
    """Reads `--model_config_file`; unreadable or unparsable files are usage errors."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"Could not read model config file {path}: {e.strerror}") from e
    return parse_config_text(text)


def config_from_flags(model_name: str, model_base_path: str) -> ModelServerConfig:
    """The single-model config `--model_name/--model_base_path` stand for."""
    config = ModelServerConfig()
    config.model_config_list.config.add(
        name=model_name, base_path=model_base_path, model_platform="tensorflow"
    )
    return config


def validate_config(config: ModelServerConfig) -> list[ModelConfig]:
    """The checks ServerCore runs before touching the file system."""
    kind = config.WhichOneof("config")
    if kind not in (None, "model_config_list"):
        raise invalid_argument(
            "ServerModelConfig type not supported: only model_config_list is supported"
        )
    seen: set[str] = set()
    models = list(config.model_config_list.config)
    for model in models:
        if not model.model_platform and not model.model_type:
            raise invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.name in seen:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
        if not (os.path.isabs(model.base_path) or "://" in model.base_path):
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
    return models


def _versions_on_disk(config: ModelConfig) -> dict[int, str]:
    """Numeric children of the base path (`1`, `00000123`); others (`v1`, `.tmp-3`) ignored."""
    try:
        names = sorted(os.listdir(config.base_path))
    except OSError as e:
        log.error(
            "FileSystemStoragePathSource encountered a filesystem access error: "
            "Could not find base path %s for servable %s with error %s",
            config.base_path,
            config.name,
            e.strerror,
        )
        return {}
    found: dict[int, str] = {}
    for name in names:
        match = _VERSION_NAME.match(name)
        if match is None or int(match.group(1)) > _INT64_MAX:
            continue
        version = int(match.group(1))
        if version in found:
            log.warning(
                "Duplicate version directories detected for %s version %d", config.name, version
            )
            continue
        found[version] = os.path.join(config.base_path, name)
    if not found:
        log.warning(
            "No versions of servable %s found under base path %s. Did you forget to name your leaf "
            "directory as a number (eg. '/1/')?",
            config.name,
            config.base_path,
        )
    return found


def _aspired(config: ModelConfig, on_disk: Mapping[int, str]) -> set[int]:
    """The version policy: latest N (default 1), all, or specific versions."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(on_disk)
    if kind == "specific":
        wanted = set(policy.specific.versions)
        if not wanted:
            log.warning("No specific versions requested for servable %s.", config.name)
        for v in sorted(wanted - set(on_disk)):
            log.warning(
                "Version %d of servable %s, which was requested to be served as a 'specific' "
                "version in the servable's version policy, was not found in the file system",
                v,
                config.name,
            )
        return wanted & set(on_disk)
    count = max(1, policy.latest.num_versions) if kind == "latest" else 1
    return set(sorted(on_disk, reverse=True)[:count])


class ServerCore:
    """Owns the models: config, polling, loading/unloading, lookups, status and metadata."""

    def __init__(self, config: ModelServerConfig, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        self._configs = validate_config(config)
        self._models: dict[str, _Model] = {}
        self._history: dict[str, _Model] = {}
        self._cond = threading.Condition(threading.RLock())
        self._loader = ThreadPoolExecutor(max_workers=4, thread_name_prefix="load")
        self._scheduler = BatchScheduler(self.options.batching) if self.options.batching else None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Loads the initial models and returns once each reached AVAILABLE or END (ports must
        not open earlier); fails like `load_servables_fast.cc` if a servable did not load."""
        if self.options.file_system_poll_wait_seconds > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="fs-poll", daemon=True)
            self._poller.start()
        try:
            self._apply(self._configs, initial=True)
        except ServingError:
            self.stop()
            raise

    def reload_config(self, config: ModelServerConfig) -> None:
        """`HandleReloadConfigRequest`: serve exactly the new list; blocks until new models load."""
        self._apply(validate_config(config), initial=False)

    def stop(self) -> None:
        """Stops polling and loading; queued batches still run."""
        self._stop.set()
        with self._cond:
            for model in self._models.values():
                for ver in model.versions.values():
                    ver.cancel.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        self._loader.shutdown(wait=True, cancel_futures=True)
        if self._scheduler is not None:
            self._scheduler.stop()

    def _apply(self, configs: Sequence[ModelConfig], initial: bool) -> None:
        wanted = {c.name: c for c in configs}
        with self._cond:
            for name in [n for n in self._models if n not in wanted]:
                removed = self._models.pop(name)
                for ver in removed.versions.values():
                    ver.aspired = False
                    ver.cancel.set()
                self._retire(removed)
            added = [n for n in wanted if n not in self._models]
            for name, cfg in wanted.items():
                model = self._models.get(name) or self._history.get(name) or _Model(cfg)
                model.config = cfg
                self._models[name] = self._history[name] = model
        for name in wanted:
            self._poll(self._models[name])
        failed = self._wait_settled(added)
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
        with self._cond:
            for cfg in configs:
                self._set_labels(self._models[cfg.name], dict(cfg.version_labels), initial)

    def _set_labels(self, model: _Model, labels: dict[str, int], initial: bool) -> None:
        allow_unavailable = initial and self.options.allow_version_labels_for_unavailable_models
        for label, version in labels.items():
            ver = model.versions.get(version)
            available = ver is not None and ver.state == State.AVAILABLE
            if not available and not allow_unavailable and model.labels.get(label) != version:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {model.config.name}, "
                    "which is not currently available for inference",
                )
        model.labels = labels

    def _wait_settled(self, names: Sequence[str]) -> list[tuple[str, _Version]]:
        """Waits until each model has aspired versions and none is still loading; returns the
        aspired versions that ended in error."""

        def aspired(name: str) -> list[_Version]:
            return [v for v in self._models[name].versions.values() if v.aspired]

        def settled() -> bool:
            return all(
                aspired(n) and not any(v.state in (State.START, State.LOADING) for v in aspired(n))
                for n in names
            )

        with self._cond:
            while not settled():
                if self._stop.is_set():
                    raise ServingError(grpc.StatusCode.CANCELLED, "Server is stopping")
                self._cond.wait(timeout=1.0)
            return [(n, v) for n in names for v in aspired(n) if v.state == State.END and v.error]

    # --- polling, loading, unloading --------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.options.file_system_poll_wait_seconds):
            with self._cond:
                models = list(self._models.values())
            for model in models:
                self._poll(model)

    def _poll(self, model: _Model) -> None:
        """One file-system poll of one model: aspire, load new versions, retire old ones."""
        on_disk = _versions_on_disk(model.config)
        aspired = _aspired(model.config, on_disk)
        with self._cond:
            if self._stop.is_set() or self._models.get(model.config.name) is not model:
                return  # stopping, or the model left the config while we listed its directory
            for number, ver in model.versions.items():
                if ver.aspired and number not in aspired:
                    ver.cancel.set()
                ver.aspired = number in aspired
            for number in sorted(aspired):
                ver = model.versions.get(number)
                if ver is not None and not (ver.state == State.END and ver.cancel.is_set()):
                    continue
                ver = _Version(number, on_disk[number], state=State.LOADING)
                model.versions[number] = ver
                self._loader.submit(self._load, model, ver)
            self._retire(model)
            self._cond.notify_all()

    def _create(self, name: str, ver: _Version) -> Servable:
        if self.options.backend == "onnx":
            from serving.onnx_servable import OnnxServable

            servable: Servable = OnnxServable(name, ver.version, ver.path)
        else:
            servable = TFServable(name, ver.version, ver.path, self.options.saved_model_tags)
        if self.options.enable_model_warmup:
            run_warmup(servable, self.options.num_request_iterations_for_warmup)
        if self._scheduler is not None:
            servable = BatchingServable(servable, self._scheduler)
        return servable

    def _load(self, model: _Model, ver: _Version) -> None:
        """Loads with `max_num_load_retries` retries; removal of the directory cancels them."""
        name = model.config.name
        error: ServingError | None = None
        servable: Servable | None = None
        for attempt in range(self.options.max_num_load_retries + 1):
            if attempt and ver.cancel.wait(self.options.load_retry_interval_micros / 1e6):
                break
            if ver.cancel.is_set():
                break
            try:
                servable = self._create(name, ver)
                error = None
                break
            except ServingError as e:
                error = e
            except Exception as e:  # any load failure must end as END + status
                error = ServingError(grpc.StatusCode.UNKNOWN, f"{type(e).__name__}: {e}")
            log.error(
                "Loading servable {name: %s version: %d} failed: %s", name, ver.version, error
            )
        with self._cond:
            if servable is not None and not ver.cancel.is_set():
                ver.servable, ver.state = servable, State.AVAILABLE
                log.info(
                    "Successfully loaded servable version {name: %s version: %d}", name, ver.version
                )
            else:
                ver.state, ver.error = State.END, error
            self._retire(model)
            self._cond.notify_all()

    def _retire(self, model: _Model) -> None:
        """Availability-preserving unload: drop versions no longer aspired once an aspired one is
        AVAILABLE, or when nothing is aspired at all."""
        aspired = [v for v in model.versions.values() if v.aspired]
        if aspired and not any(v.state == State.AVAILABLE for v in aspired):
            return
        for ver in model.versions.values():
            if not ver.aspired and ver.state == State.AVAILABLE:
                ver.state = State.UNLOADING
                ver.servable = None  # freed when the last in-flight request releases it
                ver.state = State.END
                ver.cancel.set()
                log.info(
                    "Unloaded servable version {name: %s version: %d}",
                    model.config.name,
                    ver.version,
                )

    # --- lookups used by the front-ends ---------------------------------------------------

    def model_names(self) -> list[str]:
        """Names of the configured models."""
        with self._cond:
            return sorted(self._models)

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """`ServerCore::GetServableHandle`: label -> version, then Latest or Specific lookup."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        with self._cond:
            model = self._models.get(name)
            if label:
                if model is None or label not in model.labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = model.labels[label]
            versions = model.versions if model is not None else {}
            if version is None:
                live = [v for v in versions.values() if v.state == State.AVAILABLE and v.servable]
                if not live:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
                    )
                return max(live, key=lambda v: v.version).servable  # type: ignore[return-value]
            ver = versions.get(version)
            if ver is None or ver.state != State.AVAILABLE or ver.servable is None:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({name}, {version})",
                )
            return ver.servable

    def signature_def(self, servable: Servable, signature_name: str) -> tuple[str, SignatureDef]:
        """Empty means serving_default; unknown is FAILED_PRECONDITION (gRPC Predict wording)."""
        return inference.signature_def(servable, signature_name)

    def predict_arrays(
        self,
        servable: Servable,
        signature_key: str,
        inputs: Mapping[str, Any],
        output_filter: Sequence[str] = (),
        *,
        decode: Callable[[Any], np.ndarray] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict's checks (TF Serving's order and messages), then one run; see inference."""
        return inference.predict_arrays(
            servable, signature_key, inputs, output_filter, decode=decode, timeout_s=timeout_s
        )

    def model_status(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """`GetModelStatus`: one version or all known ones, highest first; END keeps its error."""
        with self._cond:
            model = self._history.get(name)
            versions = dict(model.versions) if model is not None else {}
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
