"""What each weight held when it was created, so the audit can tell a trained weight from one
that never moved.

Keras keeps no trace of a weight's initializer once the weight exists: a Keras 3 `Variable`
drops it after initializing (`keras/src/backend/common/variables.py`), a tf_keras weight is a
`tf.Variable` built from a callable. So the value is recorded as each variable is created:
`record_initial_values()` enters TensorFlow's `tf.variable_creator_scope`, which sees every
`tf.Variable` Keras 3 and tf_keras make (`add_weight` with any initializer, `keras.Variable`,
a raw `tf.Variable` attribute, a layer built on its first call). The CLI loads or builds every
model inside it; Python users wrap their model's construction the same way.

A one-element weight's value is kept (the audit prints it); a larger one's only as a SHA-256
digest of its bytes, so no second copy of the weights is held, plus its fill value when a small
one (a per-channel scale such as ConvNeXt's `LayerScale.gamma`) holds one constant throughout.
A variable created from a checkpoint's value (tf_keras restoring while it builds) has no initial
value to record and is skipped. Recordings live as long as their variable.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

_RECORDED: dict[int, InitialValue] = {}  # id(tf.Variable) -> its value at creation
FILL_MAX_ELEMENTS = 1 << 16  # larger weights are only digested: no pass to find a fill value


@dataclass(frozen=True)
class InitialValue:
    """A weight's value at creation: the value itself when it has one element, else a digest."""

    digest: str
    scalar: float | int | bool | None = None  # the value of a one-element weight
    fill: float | int | bool | None = None  # the one value of a small constant-filled weight

    @classmethod
    def of(cls, value: Any) -> InitialValue:
        array = np.asarray(value)
        scalar = array.reshape(()).item() if array.size == 1 else None
        fill = scalar
        if 1 < array.size <= FILL_MAX_ELEMENTS:
            flat = array.reshape(-1)
            fill = flat[0].item() if bool((flat == flat[0]).all()) else None
        return cls(_digest(array), scalar, fill)

    def matches(self, value: Any) -> bool:
        """True when `value` is bit for bit what the weight was created with."""
        return _digest(np.asarray(value)) == self.digest


def _digest(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def _restored_from_checkpoint(initial_value: Any) -> bool:
    """tf_keras passes `CheckpointInitialValue(Callable)`, often inside a functools.partial,
    when a variable is created from a checkpoint it is being restored from."""
    return type(getattr(initial_value, "func", initial_value)).__name__.startswith(
        "CheckpointInitialValue"
    )


def _record(variable: tf.Variable) -> None:
    try:
        with tf.init_scope():  # a layer built inside a tf.function trace: read eagerly
            value = np.asarray(variable.read_value())
    except (TypeError, ValueError, AttributeError, tf.errors.OpError):
        return  # graph-mode or uninitialised: nothing to compare against later
    key = id(variable)
    _RECORDED[key] = InitialValue.of(value)
    weakref.finalize(variable, _RECORDED.pop, key, None)


@contextlib.contextmanager
def record_initial_values() -> Iterator[None]:
    """Record the value of every variable created inside the block (see the module docstring):

    >>> with record_initial_values():
    ...     model = build_model()
    >>> audit_model(model)  # flags a trainable weight still at its initial value
    """

    def creator(next_creator: Any, **kwargs: Any) -> Any:
        variable = next_creator(**kwargs)
        if not _restored_from_checkpoint(kwargs.get("initial_value")):
            _record(variable)
        return variable

    with tf.variable_creator_scope(creator):
        yield


def initial_value_of(variable: tf.Variable) -> InitialValue | None:
    """The recorded value of `variable` at creation, if it was created while recording."""
    return _RECORDED.get(id(variable))
