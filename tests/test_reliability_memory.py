"""Memory returned on unload (issue 8, failure 2): an unloaded version must not wait for
Python's cyclic garbage collector. With automatic collection off (as between two rare full
collections in a busy server), the old code kept every unloaded Session alive for ever."""

from __future__ import annotations

import gc
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.core import ServerCore, ServerOptions, config_from_flags
from tests.conftest import wait_for

MODEL = "half_plus_two"


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_unloaded_versions_are_freed_without_waiting_for_gc(
    model_repo: Path, tmp_path: Path, no_automatic_gc: None
) -> None:
    source = model_repo / "tfserving" / MODEL
    base = tmp_path / MODEL
    base.mkdir()
    shutil.copytree(source / "1", base / "1")
    core = ServerCore(
        config_from_flags(MODEL, str(base)),
        ServerOptions(file_system_poll_wait_seconds=0.1, max_num_load_retries=0),
    )
    core.start()
    try:
        refs = []
        for version in range(2, 6):  # four swaps
            old = core.servable(MODEL)
            # The Session and tf.Graph sit in reference cycles: they are what leaked.
            refs += [weakref.ref(old), weakref.ref(old._graph), weakref.ref(old._session)]
            del old
            # Copied beside, then renamed in: the poller never sees a half-copied version.
            shutil.copytree(source / "1", base / f".tmp-{version}")
            (base / f".tmp-{version}").rename(base / str(version))
            wait_for(lambda v=version: core.servable(MODEL).version == v, f"version {version}")
        wait_for(lambda: all(r() is None for r in refs), "every unloaded version to be freed")
        assert core.servable(MODEL).version == 5
    finally:
        core.stop()
