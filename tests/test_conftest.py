"""The suite's own fixtures can fail: a server that cannot start is an error, never a skip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from serving.launch import ServerStartError, start_server_process
from tests.conftest import REPO_ROOT, start_embedded_server

BROKEN_CONFIG = "model_config_list { this is not a ModelServerConfig }"


def _broken_repo(root: Path) -> Path:
    (root / "tfserving").mkdir(parents=True)
    (root / "tfserving" / "models.config").write_text(BROKEN_CONFIG)
    return root


def test_start_raises_when_the_server_exits(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError) as info:
        start_embedded_server(_broken_repo(tmp_path / "repo"))
    message = str(info.value)
    assert "exited with code 1" in message
    assert "Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file" in message


def test_start_raises_when_the_ready_line_never_comes(tmp_path: Path) -> None:
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(ServerStartError, match="printed no 'Serving REST on' line within 1 s"):
        start_server_process([], command=silent, timeout_s=1, log_path=tmp_path / "log")


def test_server_fixture_fails_not_skips(pytester: pytest.Pytester, monkeypatch) -> None:
    """The real `server` fixture over a repository whose config does not parse."""
    monkeypatch.delenv("TF_SERVING_GRPC_TARGET", raising=False)
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    pytester.makeconftest(
        f"""
import pytest
from tests.conftest import server  # noqa: F401 - the fixture under test

@pytest.fixture(scope="session")
def model_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    (root / "tfserving").mkdir()
    (root / "tfserving" / "models.config").write_text({BROKEN_CONFIG!r})
    return root
"""
    )
    pytester.makepyfile(
        """
def test_needs_server(server):
    assert server.grpc_target
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ServerStartError*exited with code 1*"])
