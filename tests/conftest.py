"""Session fixtures: one model repository and one model server for every serving test.

By default the embedded server (`python -m serving`) is started in a subprocess on free
127.0.0.1 ports over a repository built by `tests/tfs_models.py`. With TF_SERVING_GRPC_TARGET
(and TF_SERVING_REST_TARGET for the REST suite) set, the same tests run unchanged against that
server instead; it must serve the repository written by `python -m tests.tfs_models OUT`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 120.0
READY_LINE = "Serving REST on"  # printed by serving.server once both ports are open


@dataclass(frozen=True)
class ServerEndpoints:
    """Where the server under test listens, and whether we own its model directory."""

    grpc_target: str
    rest_target: str | None
    embedded: bool
    repo: Path | None  # the artifacts root (tfserving/, onnx/); None for a remote server

    @property
    def rest_url(self) -> str:
        if self.rest_target is None:
            pytest.skip("no REST target: set TF_SERVING_REST_TARGET next to TF_SERVING_GRPC_TARGET")
        return f"http://{self.rest_target}"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model repository (SavedModels, ONNX twins, models.config)."""
    from tests.tfs_models import build_repository

    out = tmp_path_factory.mktemp("artifacts")
    build_repository(out)
    return out


def _rest_ready(rest_target: str, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{rest_target}/v1/models/{model}", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(
    proc: subprocess.Popen[bytes], grpc_target: str, rest_target: str, log_path: Path
) -> str | None:
    """None once the server printed its REST ready line (ports open only after the initial
    load) and every test model is AVAILABLE; otherwise why not (bounded by the timeout)."""
    from serving.client import ServingClient, ServingClientError
    from tests.tfs_models import MODELS

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while READY_LINE not in log_path.read_text(errors="replace"):
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            return f"server exited with {proc.returncode}:\n{tail}"
        if time.monotonic() > deadline:
            return f"no {READY_LINE!r} line after {STARTUP_TIMEOUT_S:g}s"
        time.sleep(0.1)
    with ServingClient(grpc_target, timeout=5.0) as client:
        for model in MODELS:
            try:
                client.wait_until_available(model, timeout=max(1.0, deadline - time.monotonic()))
            except ServingClientError as err:
                return str(err)
    return None if _rest_ready(rest_target, next(iter(MODELS))) else "REST did not answer"


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest) -> Iterator[ServerEndpoints]:
    """The server under test: a remote one from the environment, or the embedded one."""
    grpc_target = os.environ.get("TF_SERVING_GRPC_TARGET")
    if grpc_target:
        yield ServerEndpoints(grpc_target, os.environ.get("TF_SERVING_REST_TARGET"), False, None)
        return
    out: Path = request.getfixturevalue("model_repo")
    config = out / "tfserving" / "models.config"
    grpc_port, rest_port = free_port(), free_port()
    log_path = out / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "serving",
                f"--port={grpc_port}",
                f"--rest_api_port={rest_port}",
                f"--model_config_file={config}",
                "--file_system_poll_wait_seconds=1",
            ],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    grpc_target, rest_target = f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}"
    try:
        problem = _wait_ready(proc, grpc_target, rest_target, log_path)
        if problem is not None:
            pytest.skip(f"embedded server could not start: {problem}")
        yield ServerEndpoints(grpc_target, rest_target, True, out)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def client(server: ServerEndpoints) -> Iterator[object]:
    """One ServingClient on the server under test, shared by the session."""
    from serving.client import ServingClient

    with ServingClient(server.grpc_target, timeout=30.0) as c:
        yield c
