"""Session fixtures: one model repository and one model server for every serving test.

By default the embedded server (`python -m serving`) is started in a subprocess on free
127.0.0.1 ports over a repository built by `tests/tfs_models.py`. With TF_SERVING_GRPC_TARGET
(and TF_SERVING_REST_TARGET for the REST suite) set, the same tests run unchanged against that
server instead; it must serve the repository written by `python -m tests.tfs_models OUT`.
An embedded server that cannot start FAILS every test that needs it (tests/test_conftest.py
proves it); it never skips them.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving.launch import ServerProcess, ServerStartError, start_server_process

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ("pytester",)  # tests/test_conftest.py runs the fixtures on a broken server

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 120.0


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """The tests' one way to await state: poll `predicate` until truthy, fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`python -m exporter ARGV` in this process: (exit code, stdout, stderr)."""
    from exporter.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The single `error:` line a failed command prints (fails unless there is exactly one)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def tree(root: Path) -> list[str]:
    """Every path under `root`, relative and sorted: what a failed command must not change."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


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


def start_embedded_server(repo: Path) -> ServerProcess:
    """`python -m serving` over the test repository, returned once every test model is
    AVAILABLE; a server that exits, hangs or cannot load raises ServerStartError."""
    from serving.client import ServingClient, ServingClientError
    from tests.tfs_models import MODELS

    server = start_server_process(
        [
            f"--model_config_file={repo / 'tfserving' / 'models.config'}",
            "--file_system_poll_wait_seconds=1",
        ],
        log_path=repo / "server.log",
        timeout_s=STARTUP_TIMEOUT_S,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=REPO_ROOT,
    )
    try:
        with ServingClient(server.grpc_target, timeout=5.0) as client:
            for model in MODELS:
                client.wait_until_available(model, timeout=STARTUP_TIMEOUT_S)
        if not _rest_ready(server.rest_target or "", next(iter(MODELS))):
            raise ServerStartError(f"REST at {server.rest_target} did not answer")
    except (ServingClientError, ServerStartError) as err:
        tail = server.log_tail()
        server.stop()
        raise ServerStartError(f"embedded server is not serving: {err}; log:\n{tail}") from err
    return server


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest) -> Iterator[ServerEndpoints]:
    """The server under test: a remote one from the environment, or the embedded one."""
    grpc_target = os.environ.get("TF_SERVING_GRPC_TARGET")
    if grpc_target:
        yield ServerEndpoints(grpc_target, os.environ.get("TF_SERVING_REST_TARGET"), False, None)
        return
    out: Path = request.getfixturevalue("model_repo")
    running = start_embedded_server(out)  # fails the session's server tests if it cannot start
    try:
        yield ServerEndpoints(running.grpc_target, running.rest_target, True, out)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def client(server: ServerEndpoints) -> Iterator[object]:
    """One ServingClient on the server under test, shared by the session."""
    from serving.client import ServingClient

    with ServingClient(server.grpc_target, timeout=30.0) as c:
        yield c
