"""Every private TensorFlow API the server uses, each wrapped once, here.

TF Serving is C++ and reaches these through TensorFlow's C API; the embedded server reaches
the same entry points through TF's Python internals. `INTERNALS` names them with what each is
for; `tests/test_tf_internals.py` resolves every one, so a TensorFlow upgrade that drops one
fails by name. No other serving module imports `tensorflow.python`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple


class Internal(NamedTuple):
    module: str
    name: str
    why: str


INTERNALS = (
    Internal(
        "tensorflow.python.saved_model.loader_impl",
        "parse_saved_model",
        "read saved_model.pb's tag sets as loader.cc does, before loading",
    ),
    Internal("tensorflow.python.util.deprecation", "silence", "the TF1 loader TF Serving runs"),
    Internal(
        "tensorflow.python.client.pywrap_tf_session",
        "TF_NewBufferFromString",
        "RunOptions (the request deadline) for one Session::Run",
    ),
    Internal("tensorflow.python.client.pywrap_tf_session", "TF_DeleteBuffer", "free them"),
    Internal(
        "tensorflow.python.client.session",
        "BaseSession._call_tf_sessionrun",
        "the raw Session::Run (what make_callable uses): no casting or reshaping of feeds",
    ),
    Internal(
        "tensorflow.python.framework.ops",
        "SymbolicTensor._as_tf_output",
        "a graph tensor as the TF_Output that raw Session::Run takes",
    ),
)


def resolve(internal: Internal) -> Any:
    """The object `internal` names (ImportError/AttributeError when TF dropped it)."""
    target: Any = importlib.import_module(internal.module)
    for part in internal.name.split("."):
        target = getattr(target, part)
    return target


@functools.cache  # resolved once: session_run is on every request's path
def _get(module: str, name: str) -> Any:
    return resolve(next(i for i in INTERNALS if i.module == module and i.name == name))


def parse_saved_model(path: str) -> Any:
    return _get("tensorflow.python.saved_model.loader_impl", "parse_saved_model")(path)


@contextlib.contextmanager
def silence_deprecation() -> Iterator[None]:
    with _get("tensorflow.python.util.deprecation", "silence")():
        yield


def tf_output(tensor: Any) -> Any:
    """The C API endpoint of a graph tensor, to feed or fetch in `session_run`."""
    return _get("tensorflow.python.framework.ops", "SymbolicTensor._as_tf_output")(tensor)


def session_run(
    session: Any,
    feeds: dict[Any, Any],
    fetches: Sequence[Any],
    run_options: bytes | None = None,
) -> list[Any]:
    """One raw Session::Run of TF_Output feeds/fetches, with serialized RunOptions if given."""
    module = "tensorflow.python.client.pywrap_tf_session"
    options = _get(module, "TF_NewBufferFromString")(run_options) if run_options else None
    try:
        run = _get("tensorflow.python.client.session", "BaseSession._call_tf_sessionrun")
        return run(session, options, feeds, list(fetches), [], None)
    finally:
        if options is not None:
            _get(module, "TF_DeleteBuffer")(options)
