"""Inputs for a signature: dtype-aware random ones (parity checks, warmup files) and the
user's own (`--inputs`), checked against it before anything is traced."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Share of drawn tokens that are out of the vocabulary (they exercise the OOV/default path).
OOV_SHARE = 0.2


def _strings(
    rng: np.random.Generator, shape: list[int], vocabulary: np.ndarray | None
) -> np.ndarray:
    """Bytes strings of 1-3 space-joined tokens: vocabulary tokens, some out of vocabulary."""
    tokens = [bytes(t) for t in vocabulary if t] if vocabulary is not None else []
    out = np.empty(int(np.prod(shape)), dtype=object)
    for i in range(out.size):
        words = [
            tokens[rng.integers(len(tokens))]
            if tokens and rng.random() >= OOV_SHARE
            else f"oov{rng.integers(1000)}".encode()
            for _ in range(1 if rng.random() < 0.5 else rng.integers(2, 4))
        ]
        out[i] = b" ".join(words)
    return out.reshape(shape)


def _integers(
    rng: np.random.Generator, shape: list[int], int_high: int, vocabulary: np.ndarray | None
) -> np.ndarray:
    """Ints in [0, int_high), or vocabulary keys with some out-of-vocabulary ones."""
    if vocabulary is None or not vocabulary.size:
        return rng.integers(0, int_high, size=shape)
    oov = int(vocabulary.max()) + 1 + rng.integers(0, 100, size=shape)
    return np.where(rng.random(shape) < OOV_SHARE, oov, rng.choice(vocabulary, size=shape))


def random_inputs(
    specs: Mapping[str, Any],
    batch: int,
    seed: int = 0,
    int_high: int = 10,
    vocabularies: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One array per input: floats ~ N(0, 1), ints in [0, int_high), bools fair coins.

    Inputs with a vocabulary (a lookup table's keys, see `exporter.freeze.tables`) draw from it,
    plus out-of-vocabulary values; strings without one are made-up tokens.
    `specs` maps input names to objects with `.shape` (leading dim is the batch) and
    `.dtype` (a tf.DType or numpy dtype); unknown inner dims become 1.
    """
    rng = np.random.default_rng(seed)
    vocabularies = vocabularies or {}
    arrays = {}
    for name, spec in specs.items():
        dims = list(spec.shape)
        shape = [batch] + [1 if d is None else int(d) for d in dims[1:]]
        dtype = np.dtype(getattr(spec.dtype, "as_numpy_dtype", spec.dtype))
        vocabulary = vocabularies.get(name)
        if np.issubdtype(dtype, np.floating):
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            arrays[name] = _integers(rng, shape, int_high, vocabulary).astype(dtype)
        elif dtype == np.dtype(object):  # tf.string
            arrays[name] = _strings(rng, shape, vocabulary)
        elif dtype == np.bool_:
            arrays[name] = rng.random(shape) < 0.5
        else:
            raise TypeError(
                f"Cannot make random values for input {name!r} of dtype {dtype}: "
                "pass explicit inputs for it."
            )
    return arrays


# Which array kinds (numpy dtype.kind) may feed an input of each kind, losslessly enough
# for a parity check: floats take any number, ints only ints, strings any text.
_ACCEPTED_KINDS = {"f": "fiub", "i": "iu", "u": "iu", "b": "b", "O": "OSU", "S": "OSU", "U": "OSU"}


def _spec_dims(spec: Any) -> list[int | None] | None:
    shape = spec.shape
    if getattr(shape, "rank", 0) is None:
        return None
    return [None if d is None else int(d) for d in shape]


def conform_inputs(
    batch: Mapping[str, Any], specs: Mapping[str, Any], source: str
) -> dict[str, np.ndarray]:
    """User inputs checked against the signature (names, dtype kind, rank, static dims, one
    batch size) and cast to its dtypes; `source` names where they came from in the error."""
    from exporter.errors import ExportError

    def refuse(problem: str, fix: str) -> ExportError:
        return ExportError(f"{source}: {problem}; {fix}.")

    if set(batch) != set(specs):
        raise refuse(
            f"holds inputs {sorted(batch)} but the model's inputs are {sorted(specs)}",
            "save one array per model input, named exactly like it",
        )
    arrays, batch_sizes = {}, set()
    for name, spec in specs.items():
        array = np.asarray(batch[name])
        dtype = np.dtype(getattr(spec.dtype, "as_numpy_dtype", spec.dtype))
        if array.dtype.kind not in _ACCEPTED_KINDS.get(dtype.kind, dtype.kind):
            want = "string" if dtype.kind in "OSU" else dtype.name
            got = f"string ({array.dtype})" if array.dtype.kind in "OSU" else array.dtype.name
            raise refuse(
                f"input {name!r} holds {got} values but the model expects {want}",
                f"save it as {want} (e.g. arr.astype({want!r}))",
            )
        dims = _spec_dims(spec)
        if dims is not None and (
            array.ndim != len(dims)
            or any(d is not None and d != got for d, got in zip(dims, array.shape, strict=True))
        ):
            expected = "(" + ", ".join("None" if d is None else str(d) for d in dims) + ")"
            raise refuse(
                f"input {name!r} has shape {array.shape} but the model expects {expected} "
                "(None: any size)",
                "reshape it to match, with the batch as the first dimension",
            )
        if array.ndim:
            batch_sizes.add(array.shape[0])
        arrays[name] = array.astype(object if dtype.kind in "OSU" else dtype, copy=False)
    if len(batch_sizes) > 1:
        raise refuse(
            f"inputs have different batch sizes {sorted(batch_sizes)}",
            "give every input the same first dimension",
        )
    return arrays


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """User inputs from an `.npz` file whose keys are the model's input names.

    Any dtype is honoured, object arrays (strings) included: those are pickled inside the
    file, so the file must be one you trust, like the model file itself.
    """
    from exporter.errors import ModelLoadError

    try:
        with np.load(path, allow_pickle=True) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"--inputs {path}: {exc}. Save inputs with np.savez(path, input_name=array, ...)."
        ) from exc
