"""Memory returned on unload (issue 8, failure 2): an unloaded version must not wait for
Python's cyclic garbage collector. With automatic collection off (as between two rare full
collections in a busy server), the old code kept every unloaded Session alive for ever.

The swaps run in a fresh interpreter, as in a server process: a pytest process that ran
in-process Keras exports before holds TF state of its own that says nothing about the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

MODEL = "half_plus_two"

# Four swaps of a ServerCore with automatic gc off; exits 0 once every unloaded version's
# Servable, tf.Graph and Session are freed (weak references dead), else prints what is alive.
_PROBE = """
import gc, shutil, sys, weakref
from pathlib import Path
from serving.core import ServerCore, ServerOptions
from serving.model_config import config_from_flags
from tests.conftest import wait_for

source, base, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
gc.disable()
shutil.copytree(source / "1", base / "1")
core = ServerCore(
    config_from_flags(model, str(base)),
    ServerOptions(file_system_poll_wait_seconds=0.1, max_num_load_retries=0),
)
core.start()
try:
    refs = []
    for version in range(2, 6):
        old = core.servable(model)
        # The Session and tf.Graph sit in reference cycles: they are what leaked.
        refs += [weakref.ref(old), weakref.ref(old._graph), weakref.ref(old._session)]
        del old
        # Copied beside, then renamed in: the poller never sees a half-copied version.
        shutil.copytree(source / "1", base / f".tmp-{version}")
        (base / f".tmp-{version}").rename(base / str(version))
        wait_for(lambda v=version: core.servable(model).version == v, f"version {version}")
    wait_for(lambda: all(r() is None for r in refs), "every unloaded version to be freed")
    assert core.servable(model).version == 5
finally:
    core.stop()
"""


def test_unloaded_versions_are_freed_without_waiting_for_gc(
    model_repo: Path, tmp_path: Path
) -> None:
    base = tmp_path / MODEL
    base.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model_repo / "tfserving" / MODEL), str(base), MODEL],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
