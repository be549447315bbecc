"""The lookup tables a Keras model reads: found on its layers, matched to the traced captures.

A `StringLookup`/`IntegerLookup`/`TextVectorization` keeps its table as a layer attribute and
the traced function reads it through a captured resource handle; `captured_tables` pairs each
capture with its table object and owning top-level layer, for `freeze/tables.py` to freeze.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from exporter import tf_internals


@dataclass(frozen=True)
class CapturedTable:
    """A table object the traced function reads through a captured handle."""

    table: Any = field(repr=False)  # tf.lookup table object
    layer: str  # the model's top-level layer that owns it

    @property
    def mutable(self) -> bool:
        return not tf_internals.is_initialised_once(self.table)

    @property
    def vocabulary_file(self) -> str | None:
        """The text file the table was initialised from, if any (TextFileInitializer)."""
        params = tf_internals.text_file_initializer(self.table)
        return params["filename"] if params else None


def _owned_tables(layer: Any) -> Iterable[Any]:
    for sub in tf_internals.flatten_layers(layer):
        for value in vars(sub).values():
            if tf_internals.is_lookup_table(value):
                yield value


def captured_tables(model: Any, function: Any) -> dict[str, CapturedTable]:
    """Capture placeholder op name -> the table behind it, for every table `function` reads.

    Tables are found on the model's layers (Keras keeps them as layer attributes); the
    owner reported is the top-level layer (a TextVectorization, not its inner StringLookup).
    """
    owners: dict[int, CapturedTable] = {}
    top = tf_internals.flatten_layers(model, include_self=False, recursive=False)
    for layer in top:
        for table in _owned_tables(layer):
            owners.setdefault(id(table.resource_handle), CapturedTable(table, layer.name))
    found = {}
    for external, internal in function.graph.captures:
        if external.dtype != tf.resource:
            continue
        owner = owners.get(id(external))
        if owner is not None:
            found[internal.op.name] = owner
    return found
