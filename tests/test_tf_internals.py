"""Every TensorFlow/Keras private API the packages use is wrapped once, and still exists.

When a TensorFlow or Keras upgrade moves or drops one, the test below fails naming it and
what it is for, instead of an export or a load failing somewhere later."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import pytest
import tf_keras

from exporter import tf_internals as exporter_internals
from serving import tf_internals as serving_internals
from tests.conftest import REPO_ROOT

PRIVATE_IMPORTS = ("tensorflow.python", "keras.src", "tf_keras.src")


SHIMS = [(exporter_internals, i) for i in exporter_internals.INTERNALS] + [
    (serving_internals, i) for i in serving_internals.INTERNALS
]


@pytest.mark.parametrize(
    ("shim", "internal"), SHIMS, ids=[f"{s.__name__}:{i.module}.{i.name}" for s, i in SHIMS]
)
def test_internal_still_exists(shim: ModuleType, internal: Any) -> None:
    try:
        shim.resolve(internal)
    except (ImportError, AttributeError) as exc:
        pytest.fail(
            f"{internal.module}.{internal.name} is gone from this TensorFlow/Keras ({exc}); "
            f"it is used for: {internal.why}. Port {shim.__name__.replace('.', '/')}.py."
        )


@pytest.mark.parametrize("model_class", [keras.Model, tf_keras.Model], ids=["keras", "tf_keras"])
def test_keras_still_walks_layers_with_flatten_layers(model_class: type) -> None:
    assert callable(getattr(model_class, "_flatten_layers", None)), (
        f"{model_class.__module__}.Model._flatten_layers is gone: port "
        "exporter/tf_internals.flatten_layers (it finds every layer, tables and weights)"
    )
    inputs = keras.Input((2,)) if model_class is keras.Model else tf_keras.Input((2,))
    layers = keras.layers if model_class is keras.Model else tf_keras.layers
    model = model_class(inputs, layers.Dense(1, name="d")(inputs))
    assert "d" in [layer.name for layer in exporter_internals.flatten_layers(model)]


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [n for n in names if n.startswith(PRIVATE_IMPORTS)]
        if isinstance(node, ast.Attribute) and node.attr == "_flatten_layers":
            found.append("._flatten_layers")
    return found


@pytest.mark.parametrize("package", ["exporter", "serving"])
def test_private_apis_are_imported_only_by_the_shim(package: str) -> None:
    shim = REPO_ROOT / package / "tf_internals.py"
    offenders = {
        str(path.relative_to(REPO_ROOT)): names
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if path != shim and (names := _private_imports(path))
    }
    assert offenders == {}, f"import these through {shim.relative_to(REPO_ROOT)}: {offenders}"
