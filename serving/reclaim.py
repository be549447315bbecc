"""Giving an unloaded version's memory back (TF Serving frees a servable when its last handle
is released; Python needs help).

A TF Session and its tf.Graph sit in reference cycles, so dropping the manager's reference frees
nothing until the cyclic garbage collector happens to run: +1 model size per swap. After an
unload the manager hands a weak reference to `reclaim_when_released`, which forces collection
until the servable is gone (in-flight requests keep it alive until they finish, as a
ServableHandle would), then asks glibc to return freed heap pages to the OS (`malloc_trim`), so
RSS goes back down instead of only becoming reusable."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
import weakref

from serving.servable import Servable

RECLAIM_WAIT_S = 120.0  # longest an in-flight request may keep an unloaded version alive
_POLL_S = 0.2

log = logging.getLogger(__name__)


def _libc_malloc_trim() -> None:
    """glibc's malloc_trim(0); a no-op where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is not None:
        trim(0)


def reclaim(refs: list[weakref.ref], what: str, stop: threading.Event) -> bool:
    """Collects until every ref (the servable and what holds its memory) is dead, then trims
    the heap; False if one outlived the wait."""
    deadline = time.monotonic() + RECLAIM_WAIT_S
    while True:
        # In-flight requests keep the servable; once it is gone, its Session and Graph sit in
        # cycles (a Session's finalizer frees its Graph a round later): collect each poll.
        gc.collect()
        if all(ref() is None for ref in refs):
            _libc_malloc_trim()
            log.info("Released memory of servable version %s", what)
            return True
        if stop.wait(_POLL_S) or time.monotonic() > deadline:
            log.warning("Servable version %s still referenced; its memory stays in use", what)
            return False


def reclaim_when_released(servable: Servable, what: str, stop: threading.Event) -> threading.Thread:
    """Starts reclaiming `servable` on a daemon thread; the caller must drop its own reference."""
    refs = [weakref.ref(obj) for obj in (servable, *servable.memory_owners())]
    thread = threading.Thread(target=reclaim, args=(refs, what, stop), name="reclaim", daemon=True)
    thread.start()
    return thread
