"""Inputs for a signature: dtype-aware random batches and the user's own `.npz` batches, checked
and cast to the signature's dtypes. What parity checks and warmup files feed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def random_inputs(
    specs: Mapping[str, Any],
    batch: int,
    seed: int = 0,
    int_high: int = 10,
) -> dict[str, np.ndarray]:
    """One array per input: floats ~ N(0, 1), ints in [0, int_high), bools fair coins.

    `specs` maps input names to objects with `.shape` (leading dim is the batch) and
    `.dtype` (a tf.DType or numpy dtype); unknown inner dims become 1.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, spec in specs.items():
        dims = list(spec.shape)
        shape = [batch] + [1 if d is None else int(d) for d in dims[1:]]
        dtype = np.dtype(getattr(spec.dtype, "as_numpy_dtype", spec.dtype))
        if np.issubdtype(dtype, np.floating):
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            arrays[name] = rng.integers(0, int_high, size=shape).astype(dtype)
        elif dtype == np.bool_:
            arrays[name] = rng.random(shape) < 0.5
        else:
            raise TypeError(
                f"Cannot make random values for input {name!r} of dtype {dtype}: "
                "pass explicit inputs for it."
            )
    return arrays


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """User inputs from an `.npz` file whose keys are the model's input names."""
    from exporter.errors import ModelLoadError

    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"--inputs {path}: {exc}. Save inputs with np.savez(path, input_name=array, ...)."
        ) from exc


def checked_inputs(batch: Mapping[str, Any], specs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A user batch cast to the signature's dtypes (`specs` as for `random_inputs`), or an
    ExportError naming the missing or extra inputs."""
    from exporter.errors import ExportError

    if set(batch) != set(specs):
        raise ExportError(
            f"Parity inputs have keys {sorted(batch)} but the model's inputs are "
            f"{sorted(specs)}: name every input exactly once."
        )
    return {
        name: np.asarray(batch[name], dtype=getattr(spec.dtype, "as_numpy_dtype", spec.dtype))
        for name, spec in specs.items()
    }
