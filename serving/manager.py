"""Loading and unloading of model versions (TF Serving's `AspiredVersionsManager`).

For each model the source (`serving.source`) names the aspired versions; new ones load on
background threads with `--max_num_load_retries` retries, and versions no longer aspired are
unloaded only once an aspired version is AVAILABLE (the availability-preserving policy). Requests
get servables by Latest or Specific version, as `GetServableHandle` does.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError, code_from_number
from serving.reclaim import reclaim_when_released
from serving.servable import Servable
from serving.source import aspired_versions, versions_on_disk

State = get_model_status_pb2.ModelVersionStatus.State
_AVAILABLE = State.AVAILABLE  # each State.X is an EnumTypeWrapper.__getattr__ call
ModelConfig = model_server_config_pb2.ModelConfig

log = logging.getLogger(__name__)

LOAD_NICENESS = 10


@dataclass
class ServableVersion:
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
    versions: dict[int, ServableVersion] = field(default_factory=dict)


# (model config, version, version directory) -> a loaded servable; raises if it cannot load.
ServableFactory = Callable[[ModelConfig, int, str], Servable]


class AspiredVersionsManager:
    """Owns every version's state; the core tells it which models to manage.

    One job at ~175 lines, as TF Serving's AspiredVersionsManager: polling, loading with
    retries and warmup, availability-preserving unloads and memory reclaim all change the
    same per-version state machine under one condition variable."""

    def __init__(
        self,
        create: ServableFactory,
        *,
        poll_wait_s: float,
        max_load_retries: int,
        load_retry_interval_s: float,
        load_threads: int = 0,
    ) -> None:
        self._create = create
        self._poll_wait_s = poll_wait_s
        self._max_load_retries = max_load_retries
        self._retry_interval_s = load_retry_interval_s
        self._models: dict[str, _Model] = {}
        self._history: dict[str, _Model] = {}  # removed models keep reporting their status
        self._cond = threading.Condition(threading.RLock())
        # `--num_load_threads`; 0 is TF's serial load loop, i.e. one load at a time.
        self._loader = ThreadPoolExecutor(
            max_workers=max(1, load_threads), thread_name_prefix="load"
        )
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._reclaimers: list[threading.Thread] = []

    # --- life cycle -------------------------------------------------------------------------

    def start_polling(self) -> None:
        """Re-list every base path each `--file_system_poll_wait_seconds` (0: never again)."""
        if self._poll_wait_s > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="fs-poll", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        """Stops polling and cancels loads; returns once the loader threads are done."""
        self._stop.set()
        with self._cond:
            for model in self._models.values():
                for ver in model.versions.values():
                    ver.cancel.set()
            reclaimers = list(self._reclaimers)
        if self._poller is not None:
            self._poller.join(timeout=10)
        self._loader.shutdown(wait=True, cancel_futures=True)
        for thread in reclaimers:
            thread.join(timeout=10)

    def manage(self, configs: Sequence[ModelConfig]) -> list[str]:
        """Manage exactly these models (others are unloaded); poll each once; returns the names
        that were not managed before."""
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
        return added

    def wait_settled(self, names: Sequence[str]) -> list[tuple[str, ServableVersion]]:
        """Waits until each model has aspired versions and none is still loading; returns the
        aspired versions that ended in error. A model that left the config meanwhile counts as
        settled (nothing of it is aspired any more)."""
        with self._cond:
            while not all(_settled(self._models.get(n)) for n in names):
                if self._stop.is_set():
                    raise ServingError(grpc.StatusCode.CANCELLED, "Server is stopping")
                self._cond.wait(timeout=1.0)
            return [
                (n, v)
                for n in names
                if n in self._models
                for v in self._models[n].versions.values()
                if v.aspired and v.state == State.END and v.error
            ]

    # --- polling, loading, unloading --------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait_s):
            with self._cond:
                models = list(self._models.values())
            for model in models:
                self._poll(model)

    def _poll(self, model: _Model) -> None:
        """One file-system poll of one model: aspire, load new versions, retire old ones."""
        on_disk = versions_on_disk(model.config)
        aspired = aspired_versions(model.config, on_disk)
        with self._cond:
            if self._stop.is_set() or self._models.get(model.config.name) is not model:
                return  # stopping, or the model left the config while we listed its directory
            for ver in _aspire(model, on_disk, aspired):
                self._loader.submit(self._load, model, ver)
            self._retire(model)
            self._cond.notify_all()

    def _load(self, model: _Model, ver: ServableVersion) -> None:
        """Loads on a loader thread, then publishes AVAILABLE (or END with the error)."""
        _lower_priority()
        name = model.config.name
        servable, error = _load_with_retries(
            lambda: self._create(model.config, ver.version, ver.path),
            f"{{name: {name} version: {ver.version}}}",
            ver.cancel,
            self._max_load_retries,
            self._retry_interval_s,
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
        """Unloads what `_retire_versions` picks and reclaims each unloaded version's memory."""
        for ver, servable in _retire_versions(model):
            what = f"{{name: {model.config.name} version: {ver.version}}}"
            self._reclaimers = [t for t in self._reclaimers if t.is_alive()]
            self._reclaimers.append(reclaim_when_released(servable, what, self._stop))
            del servable

    # --- lookups ----------------------------------------------------------------------------

    def is_managed(self, name: str) -> bool:
        """Whether the model is in the current config."""
        with self._cond:
            return name in self._models

    def managed(self) -> list[str]:
        """The names of the models in the current config."""
        with self._cond:
            return list(self._models)

    def is_available(self, name: str, version: int) -> bool:
        """Whether that version can serve requests now."""
        with self._cond:
            model = self._models.get(name)
            ver = model.versions.get(version) if model is not None else None
            return ver is not None and ver.state == State.AVAILABLE

    def servable(self, name: str, version: int | None) -> Servable:
        """`GetServableHandle`: the newest AVAILABLE version (Latest) or that one (Specific)."""
        with self._cond:
            model = self._models.get(name)
            live = {
                v.version: v.servable
                for v in (model.versions.values() if model is not None else ())
                if v.state == _AVAILABLE and v.servable is not None
            }
        if version is None:
            if not live:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
                )
            return live[max(live)]
        if version not in live:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({name}, {version})",
            )
        return live[version]

    def version_states(self, name: str) -> dict[int, ServableVersion]:
        """Every version this model ever had (also after it left the config), by number."""
        with self._cond:
            model = self._history.get(name)
            return dict(model.versions) if model is not None else {}


def _lower_priority() -> None:
    """Loader threads run below the request threads (Linux niceness is per thread): loading
    and warming a large frozen graph is seconds of Grappler work that must not starve the
    version still serving. An extension: TF Serving has no such knob."""
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < LOAD_NICENESS:
            os.setpriority(os.PRIO_PROCESS, tid, LOAD_NICENESS)
    except (OSError, AttributeError) as err:  # not Linux, or not permitted: load at full speed
        log.debug("Loader thread keeps its priority: %s", err)


def _aspire(model: _Model, on_disk: Mapping[int, str], aspired: set[int]) -> list[ServableVersion]:
    """Marks the aspired versions (cancelling loads of the others) and returns the new ones to
    load: never seen, or cancelled before (a directory that came back). Highest first, as
    `AvailabilityPreservingPolicy::GetNextAction` picks the highest new aspired version."""
    for number, ver in model.versions.items():
        if ver.aspired and number not in aspired:
            ver.cancel.set()
        ver.aspired = number in aspired
    new = []
    for number in sorted(aspired, reverse=True):
        ver = model.versions.get(number)
        if ver is None or (ver.state == State.END and ver.cancel.is_set()):
            model.versions[number] = ver = ServableVersion(number, on_disk[number], State.LOADING)
            new.append(ver)
    return new


def _settled(model: _Model | None) -> bool:
    """Some version is aspired and none of the aspired ones is still loading (or the model is
    no longer managed)."""
    if model is None:
        return True
    aspired = [v for v in model.versions.values() if v.aspired]
    return bool(aspired) and not any(v.state in (State.START, State.LOADING) for v in aspired)


def _load_with_retries(
    create: Callable[[], Servable],
    what: str,
    cancel: threading.Event,
    max_retries: int,
    retry_interval_s: float,
) -> tuple[Servable | None, ServingError | None]:
    """`--max_num_load_retries` retries `--load_retry_interval_micros` apart; a cancel (the
    directory went away, the server stops) ends them early. Any failure becomes a ServingError."""
    error: ServingError | None = None
    for attempt in range(max_retries + 1):
        if attempt and cancel.wait(retry_interval_s):
            break
        if cancel.is_set():
            break
        try:
            return create(), None
        except ServingError as e:
            error = e
        except Exception as e:  # any load failure must end as END + status
            code = getattr(e, "error_code", None)  # a TF OpError keeps TF's code and text
            if isinstance(code, int) and isinstance(getattr(e, "message", None), str):
                error = ServingError(code_from_number(code), e.message)
            else:
                error = ServingError(grpc.StatusCode.UNKNOWN, f"{type(e).__name__}: {e}")
        log.error("Loading servable %s failed: %s", what, error)
    return None, error


def _retire_versions(model: _Model) -> list[tuple[ServableVersion, Servable]]:
    """`AvailabilityPreservingPolicy`: while nothing is aspired, or an aspired version is
    AVAILABLE, or more than one un-aspired version is AVAILABLE, unload the lowest un-aspired
    AVAILABLE version. So a failed new version leaves exactly the newest old one serving.
    Returns what was dropped, lowest first. Called with the manager's lock held."""
    aspired = [v for v in model.versions.values() if v.aspired]
    dropped = []
    while True:
        ready = sorted(
            (v for v in model.versions.values() if not v.aspired and v.state == State.AVAILABLE),
            key=lambda v: v.version,
        )
        serving = any(v.state == State.AVAILABLE for v in aspired)
        if not ready or (aspired and not serving and len(ready) == 1):
            return dropped
        ver = ready[0]
        ver.state = State.UNLOADING
        if ver.servable is not None:
            dropped.append((ver, ver.servable))
        ver.servable = None  # freed when the last in-flight request releases it
        ver.state = State.END
        ver.cancel.set()
        log.info("Unloaded servable version {name: %s version: %d}", model.config.name, ver.version)
