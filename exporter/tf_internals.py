"""Every private TensorFlow/Keras API the exporter uses, each wrapped once, here.

The `tensorflow<2.22` pin contains the risk today; a later release may move or drop any of
these. `INTERNALS` lists them with what each is for, and `tests/test_tf_internals.py` resolves
every one against the installed TensorFlow and Keras, so an upgrade that removes one fails
that test by name, not an export somewhere downstream. No other exporter module may import
`tensorflow.python`, `keras.src` or call a private method of a TF/Keras object.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator
from typing import Any, NamedTuple


class Internal(NamedTuple):
    module: str
    name: str
    why: str


INTERNALS = (
    Internal(
        "tensorflow.python.framework.convert_to_constants",
        "_FunctionConverterDataInEager",
        "freeze: the GraphDef of convert_variables_to_constants_v2 without re-importing it",
    ),
    Internal(
        "tensorflow.python.framework.convert_to_constants",
        "_replace_variables_by_constants",
        "freeze: the conversion itself",
    ),
    Internal(
        "tensorflow.python.framework.meta_graph",
        "stripped_op_list_for_graph",
        "SavedModel: the MetaGraph's stripped op list, as the TF1 Builder writes it",
    ),
    Internal(
        "tensorflow.python.framework.meta_graph",
        "strip_graph_default_valued_attrs",
        "SavedModel: strip default attrs as the TF1 Builder does (older TF Serving)",
    ),
    Internal("tensorflow.python.framework.op_def_registry", "get", "OpDefs of graph rewrites"),
    Internal(
        "tensorflow.python.saved_model.loader_impl",
        "parse_saved_model",
        "read saved_model.pb without a Session",
    ),
    Internal("tensorflow.python.util.deprecation", "silence", "quiet TF1 loader in parity"),
    Internal("tensorflow.python.ops.lookup_ops", "LookupInterface", "find a layer's tables"),
    Internal(
        "tensorflow.python.ops.lookup_ops",
        "InitializableLookupTableBase",
        "tell a frozen (initialised once) table from a mutable one",
    ),
    Internal(
        "tensorflow.python.ops.lookup_ops",
        "TextFileInitializer",
        "a vocabulary file's parse parameters (_key_index, _value_index, ...)",
    ),
    Internal(
        "keras.src.export.export_utils",
        "get_input_signature",
        "trace: the input structure Keras' own exporter infers",
    ),
)


def resolve(internal: Internal) -> Any:
    """The object `internal` names (ImportError/AttributeError when TF dropped it)."""
    return getattr(importlib.import_module(internal.module), internal.name)


@functools.cache
def _get(module: str, name: str) -> Any:
    return resolve(next(i for i in INTERNALS if i.module == module and i.name == name))


# --- freeze -----------------------------------------------------------------------------------


def variables_to_constants(function: Any, keep: list[str] | None) -> Any:
    """The GraphDef of `function` with every captured variable but `keep` turned into a Const."""
    module = "tensorflow.python.framework.convert_to_constants"
    data = _get(module, "_FunctionConverterDataInEager")(
        func=function,
        lower_control_flow=False,
        aggressive_inlining=False,
        variable_names_denylist=keep,
    )
    graph_def, _ = _get(module, "_replace_variables_by_constants")(converter_data=data)
    return graph_def


def is_lookup_table(value: Any) -> bool:
    return isinstance(value, _get("tensorflow.python.ops.lookup_ops", "LookupInterface"))


def is_initialised_once(table: Any) -> bool:
    """A table whose contents are fixed by its initializer (not a MutableHashTable)."""
    base = _get("tensorflow.python.ops.lookup_ops", "InitializableLookupTableBase")
    return isinstance(table, base)


def text_file_initializer(table: Any) -> dict[str, Any] | None:
    """A vocabulary-file table's file and parse parameters; None for other tables."""
    init = getattr(table, "_initializer", None)
    if not isinstance(init, _get("tensorflow.python.ops.lookup_ops", "TextFileInitializer")):
        return None
    filename = getattr(init, "_filename_arg", None)  # the path as given
    return {
        "filename": filename if isinstance(filename, str) else None,
        "key_index": int(init._key_index),
        "value_index": int(init._value_index),
        "vocab_size": -1 if init._vocab_size is None else int(init._vocab_size),
        "delimiter": str(init._delimiter),
        "offset": int(getattr(init, "_offset", 0) or 0),
    }


# --- Keras --------------------------------------------------------------------------------------


def flatten_layers(model: Any, *, include_self: bool = True, recursive: bool = True) -> list[Any]:
    """Every layer of a Keras 3 or tf_keras model (Keras' own private walk, which also finds
    layers held in attributes); an object that is no Keras layer is its own only layer."""
    walk = getattr(model, "_flatten_layers", None)
    if walk is None:
        return [model] if include_self else []
    return list(walk(include_self=include_self, recursive=recursive))


def keras_inputs_struct(model: Any) -> Any:
    """A built functional (or Sequential) Keras 3 model's own input structure, else None."""
    functional = getattr(model, "_functional", None) or model  # Sequential wraps a Functional
    return getattr(functional, "_inputs_struct", None)


def keras_input_signature(model: Any) -> Any:
    """The input specs Keras' own `model.export()` infers (ValueError when it cannot)."""
    return _get("keras.src.export.export_utils", "get_input_signature")(model)


# --- graphs and SavedModels ---------------------------------------------------------------------


def op_def(op: str) -> Any:
    """The registered OpDef of `op` (None when this TensorFlow does not know it)."""
    return _get("tensorflow.python.framework.op_def_registry", "get")(op)


def stripped_op_list(graph_def: Any) -> Any:
    return _get("tensorflow.python.framework.meta_graph", "stripped_op_list_for_graph")(graph_def)


def strip_default_attrs(meta_graph_def: Any) -> None:
    _get("tensorflow.python.framework.meta_graph", "strip_graph_default_valued_attrs")(
        meta_graph_def
    )


def parse_saved_model(path: str) -> Any:
    """saved_model.pb (or .pbtxt) of a SavedModel directory, parsed, no Session."""
    return _get("tensorflow.python.saved_model.loader_impl", "parse_saved_model")(path)


@contextlib.contextmanager
def silence_deprecation() -> Iterator[None]:
    """No deprecation warnings from the TF1 APIs TF Serving itself runs (loader, Session)."""
    with _get("tensorflow.python.util.deprecation", "silence")():
        yield
