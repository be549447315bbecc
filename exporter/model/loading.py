"""Load the model a user points the CLI at: a file, a legacy SavedModel, or a factory.

`M` is a `.keras` file, an `.h5` file (written by Keras 3, loaded by Keras 3; by Keras 2,
loaded by tf_keras, as its `keras_version` attribute says), a Keras 2 SavedModel directory,
or `path/to/file.py:factory` / `package.module:factory` returning a model. A SavedModel
exported for serving (Keras 3 `model.export()`) holds no Keras model and is refused saying so.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from exporter.errors import ModelLoadError

_UNKNOWN_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'")


def _import(spec: str) -> ModuleType:
    """Import a module given as `path/to/file.py` or as a dotted module name."""
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise ModelLoadError(f"Python file not found: {spec}. Check the path.")
        module_name = f"_frozen_scalars_user_{path.stem}"
        spec_obj = importlib.util.spec_from_file_location(module_name, path)
        if spec_obj is None or spec_obj.loader is None:
            raise ModelLoadError(f"Cannot import {spec}: not a loadable Python file.")
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[module_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except Exception as exc:
            raise ModelLoadError(f"Importing {spec} failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        raise ModelLoadError(
            f"Cannot import module {spec!r}: {exc}. Pass a .py path or an importable module."
        ) from exc


def load_custom_objects(specs: Iterable[str]) -> dict[str, Any]:
    """Custom objects from each module: its `CUSTOM_OBJECTS` dict, else its public classes."""
    objects: dict[str, Any] = {}
    for spec in specs:
        module = _import(spec)
        declared = getattr(module, "CUSTOM_OBJECTS", None)
        if declared is not None:
            if not isinstance(declared, dict):
                raise ModelLoadError(f"{spec}: CUSTOM_OBJECTS must be a dict of name -> object.")
            objects.update(declared)
            continue
        found = {
            name: obj
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__
        }
        if not found:
            raise ModelLoadError(
                f"--custom-objects {spec}: defines no classes or functions and no CUSTOM_OBJECTS."
            )
        objects.update(found)
    return objects


def is_keras_model(obj: Any) -> bool:
    """True for Keras 3 and tf_keras (Keras 2) models alike."""
    return any(
        cls.__name__ == "Model" and cls.__module__.split(".")[0] in ("keras", "tf_keras")
        for cls in type(obj).__mro__
    )


def _from_factory(spec: str) -> Any:
    module_spec, _, attr = spec.rpartition(":")
    module = _import(module_spec)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"{module_spec} has no callable {attr!r}. Check the factory name.")
    try:
        model = factory()
    except Exception as exc:
        raise ModelLoadError(f"Factory {spec} raised {type(exc).__name__}: {exc}") from exc
    if not is_keras_model(model):
        raise ModelLoadError(
            f"Factory {spec} returned {type(model).__name__}, not a Keras model. "
            "Return a keras.Model (or tf_keras.Model)."
        )
    return model


def _custom_objects_hint(custom_objects: dict[str, Any]) -> str:
    if custom_objects:
        return (
            f"The --custom-objects given define {sorted(custom_objects)}: add the missing class "
            "to one of them."
        )
    return "If it uses custom layers, pass --custom-objects FILE_OR_MODULE defining them."


def _load_keras3(path: Path, custom_objects: dict[str, Any], allow_unsafe: bool) -> Any:
    """A `.keras` archive or a Keras 3 `.h5` file, through Keras 3's own loader."""
    import keras

    import exporter.model.layers  # noqa: F401  (registers Scale, Offset, ... for deserialization)

    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, safe_mode=not allow_unsafe
        )
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{path} is corrupt: {exc}. Copy or save the model again.") from exc
    except (ValueError, TypeError, OSError) as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe" in text.lower():
            raise ModelLoadError(
                f"{path} holds Python bytecode (a Lambda layer); Keras' safe mode refuses to "
                "load it. If you trust this file, pass --allow-unsafe-deserialization."
            ) from exc
        unknown = _UNKNOWN_CLASS.search(text)
        reason = f"unknown class {unknown.group(1)!r}." if unknown else text.splitlines()[0]
        raise ModelLoadError(
            f"Keras cannot load {path}: {reason[:300]} {_custom_objects_hint(custom_objects)}"
        ) from exc


def _load_keras_file(path: Path, custom_objects: dict[str, Any], allow_unsafe: bool) -> Any:
    if not zipfile.is_zipfile(path):  # Keras would call it "File not found"
        raise ModelLoadError(
            f"{path} is corrupt or truncated: a .keras file is a zip archive and this one "
            "has no readable zip directory. Copy or save the model again."
        )
    return _load_keras3(path, custom_objects, allow_unsafe)


def _h5_keras_major(path: Path) -> int | None:
    """The major Keras version an `.h5` model file was written by (its `keras_version`
    attribute: Keras 3 writes 3.x, tf_keras 2.x), None when it does not say."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version")
    except OSError as exc:
        raise ModelLoadError(
            f"{path} is not a readable HDF5 file ({exc}): it is corrupt, truncated or not a "
            "model. Copy or save the model again."
        ) from exc
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    major = str(version or "").split(".")[0]
    return int(major) if major.isdigit() else None


_SERVING_ONLY = (
    "{path} is a SavedModel written for serving (Keras 3 `model.export()`, "
    "`tf.saved_model.save` or an exporter): it holds traced functions, not a Keras model, so "
    "there is no model to audit or export again. Pass the model itself: a .keras file "
    "(`model.save('model.keras')`) or FILE.py:factory; `python -m exporter inspect {path}` "
    "shows what this SavedModel holds."
)


def _load_legacy(path: Path, custom_objects: dict[str, Any]) -> Any:
    try:
        import tf_keras
    except ImportError as exc:
        raise ModelLoadError(f"{path} is a Keras 2 model: pip install tf_keras.") from exc
    try:
        model = tf_keras.models.load_model(str(path), custom_objects=custom_objects, compile=False)
    except (ValueError, OSError, TypeError) as exc:
        raise ModelLoadError(
            f"tf_keras cannot load {path}: {str(exc).splitlines()[0]} "
            f"{_custom_objects_hint(custom_objects)}"
        ) from exc
    if not is_keras_model(model):  # a SavedModel tf_keras could only revive as an object
        raise ModelLoadError(_SERVING_ONLY.format(path=path))
    return model


def _load_file(path: Path, custom_objects: dict[str, Any], allow_unsafe: bool) -> Any:
    if path.suffix == ".keras":
        if not path.is_file():
            raise ModelLoadError(f"Model file not found: {path}. Check the path.")
        return _load_keras_file(path, custom_objects, allow_unsafe)
    if path.suffix == ".h5":
        if not path.is_file():
            raise ModelLoadError(f"Model file not found: {path}. Check the path.")
        if _h5_keras_major(path) == 3:
            return _load_keras3(path, custom_objects, allow_unsafe)
        return _load_legacy(path, custom_objects)
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{path} is a directory without saved_model.pb.")
    if not (path / "keras_metadata.pb").is_file():  # tf_keras writes it beside every model
        raise ModelLoadError(_SERVING_ONLY.format(path=path))
    return _load_legacy(path, custom_objects)


def load_model(
    spec: str,
    custom_objects: Iterable[str] = (),
    *,
    allow_unsafe_deserialization: bool = False,
) -> Any:
    """Load or build the model named by `spec`; raise ModelLoadError saying what to fix.

    Every variable is created inside `record_initial_values()`, so the audit can tell which
    trainable weights never moved from their initial values.
    """
    from exporter.model.initial_values import record_initial_values

    objects = load_custom_objects(custom_objects)
    path = Path(spec)
    with record_initial_values():
        if path.suffix in (".keras", ".h5") or path.is_dir():
            return _load_file(path, objects, allow_unsafe_deserialization)
        if ":" in spec:
            return _from_factory(spec)
    raise ModelLoadError(
        f"Model not found: {spec}. Pass a .keras file, an .h5 file (Keras 3 or 2), a Keras 2 "
        "SavedModel directory, or MODULE_OR_FILE.py:factory."
    )
