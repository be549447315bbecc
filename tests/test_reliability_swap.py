"""Availability-preserving swaps (issue 8, failure 1): a version exported with the exporter's
defaults is warmed (its warmup records replayed) before it becomes AVAILABLE, so no client
request is ever a version's first run, and swaps under concurrent load fail no request.
The 50M-parameter version of this is `make soak` (bench/soak.py)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from exporter import ExportOptions, export_model
from serving.core import ServerCore, ServerOptions
from serving.model_config import config_from_flags
from tests import models
from tests.conftest import wait_for
from tests.serving_helpers import publish

MODEL = "m"
CLIENTS = 4
SWAPS = 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("swap")
    report = export_model(models.reference_model(), out, MODEL, ExportOptions(parity_samples=1))
    return report.savedmodel_dir


def test_warm_swaps_under_load_fail_no_request(exported: Path, tmp_path: Path) -> None:
    base = tmp_path / MODEL
    base.mkdir()
    shutil.copytree(exported, base / "1")
    core = ServerCore(
        config_from_flags(MODEL, str(base)),
        ServerOptions(file_system_poll_wait_seconds=0.1, max_num_load_retries=0),
    )
    core.start()
    stop = threading.Event()
    lock = threading.Lock()
    ok, failures = [0], []
    runs_before_first_request: dict[int, int] = {}
    x = {"features": np.ones((1, 10), np.float32)}

    def client() -> None:
        while not stop.is_set():
            try:
                servable = core.servable(MODEL)
                with lock:
                    runs_before_first_request.setdefault(servable.version, servable.run_count)
                servable.run("serving_default", x, ["target"], timeout_s=10.0)
                with lock:
                    ok[0] += 1
            except Exception as err:  # every failure is counted, whatever its type
                with lock:
                    failures.append(repr(err))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        for version in range(2, SWAPS + 2):
            publish(exported, base, version)
            wait_for(lambda v=version: core.servable(MODEL).version == v, f"version {version}")
            seen = ok[0]
            wait_for(lambda s=seen: ok[0] > s + CLIENTS, "requests on the new version")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        core.stop()
    assert failures == []
    assert set(runs_before_first_request) == set(range(1, SWAPS + 2))
    # Each version had run its warmup record before any client could reach it.
    assert all(count >= 1 for count in runs_before_first_request.values()), (
        runs_before_first_request
    )


@pytest.mark.slow
def test_soak_swaps_and_bad_inputs(tmp_path: Path) -> None:
    """The long run (`make soak` at 50M parameters): a 2M-parameter export, 5 warm swaps under
    8 gRPC clients through the real server, then the whole malformed catalogue."""
    from bench import soak

    source = soak.export_source(2_000_000, tmp_path / "cache")
    swaps = soak.swaps(source, tmp_path, clients=8, count=5, steady_s=3.0)
    assert swaps["requests_failed"] == 0, swaps["failed_by_status"]
    assert swaps["versions_served"] == list(range(1, 7))
    bad = soak.malformed_requests(tmp_path)
    assert bad["bad_inputs_tried"] >= 40
    assert bad["answered_as_expected"] == bad["bad_inputs_tried"], bad["cases"]
    assert bad["server_alive_after_all"]
