"""Inputs for a signature: dtype-aware random ones (parity checks, warmup files) and the
user's own (`--inputs`), checked against it before anything is traced."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Share of drawn tokens that are out of the vocabulary (they exercise the OOV/default path).
OOV_SHARE = 0.2
#: What real text holds besides vocabulary words, so a text model's parity covers its
#: standardization: cased and punctuated tokens, runs of whitespace, empty and blank strings.
CASED_SHARE, PUNCTUATED_SHARE, EMPTY_SHARE = 0.3, 0.2, 0.1
_PUNCTUATION = (b",", b".", b"!", b"?", b";", b":", b"'s", b'"', b"...", b"-")
_SEPARATORS = (b" ", b" ", b" ", b"  ", b"\t", b" \n ")
_NO_TOKEN = (b"", b"   ", b"?!", b"\t\n")
#: Strings in which no word survives standardization and splitting: one parity batch holds
#: only these, since a batch that splits into zero tokens takes its own path in a text model.
NO_TOKEN_TEXTS = _NO_TOKEN


def _token(rng: np.random.Generator, tokens: list[bytes]) -> bytes:
    if tokens and rng.random() >= OOV_SHARE:
        token = tokens[rng.integers(len(tokens))]
    else:
        token = f"oov{rng.integers(1000)}".encode()
    if rng.random() < CASED_SHARE:
        token = token.upper() if rng.random() < 0.5 else token.title()
    if rng.random() < PUNCTUATED_SHARE:
        token += _PUNCTUATION[rng.integers(len(_PUNCTUATION))]
    return token


def _strings(
    rng: np.random.Generator, shape: list[int], vocabulary: np.ndarray | None
) -> np.ndarray:
    """Bytes strings of 1-3 tokens as real text has them (see CASED_SHARE...): vocabulary
    tokens, some out of vocabulary, some cased or punctuated, some strings empty or blank."""
    tokens = [bytes(t) for t in vocabulary if t] if vocabulary is not None else []
    out = np.empty(int(np.prod(shape)), dtype=object)
    for i in range(out.size):
        if rng.random() < EMPTY_SHARE:
            out[i] = _NO_TOKEN[rng.integers(len(_NO_TOKEN))]
            continue
        text = _token(rng, tokens)
        for _ in range(0 if rng.random() < 0.5 else rng.integers(1, 3)):
            text += _SEPARATORS[rng.integers(len(_SEPARATORS))] + _token(rng, tokens)
        out[i] = text
    return out.reshape(shape)


def no_token_batch(
    specs: Mapping[str, Any],
    int_high: int = 10,
    vocabularies: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray] | None:
    """A batch whose string inputs hold only `NO_TOKEN_TEXTS` (None if no input is a string)."""
    batch = random_inputs(
        specs, batch=len(NO_TOKEN_TEXTS), seed=7, int_high=int_high, vocabularies=vocabularies
    )
    strings = [name for name, value in batch.items() if value.dtype == np.dtype(object)]
    if not strings:
        return None
    for name in strings:
        flat = np.array(
            [NO_TOKEN_TEXTS[i % len(NO_TOKEN_TEXTS)] for i in range(batch[name].size)], dtype=object
        )
        batch[name] = flat.reshape(batch[name].shape)
    return batch


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
    from exporter.errors import UsageError

    def refuse(problem: str, fix: str) -> UsageError:
        return UsageError(f"{source}: {problem}; {fix}.")

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


_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"
_SAVE_HOW = "Save inputs with np.savez(path, input_name=array, ...)"


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """User inputs from an `.npz` file whose keys are the model's input names.

    Read with `allow_pickle=False`: a pickle can run code when it is loaded, so an object
    array is refused with a fix (strings need no pickle: NumPy stores `str`/`bytes` arrays,
    dtypes `U`/`S`, as plain data, and they feed string inputs as they are).
    """
    from exporter.errors import ModelLoadError

    def refuse(problem: str, fix: str = _SAVE_HOW) -> ModelLoadError:
        return ModelLoadError(f"--inputs {path}: {problem}. {fix}.")

    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(_NPY_MAGIC))
        data = np.load(path, allow_pickle=False) if magic.startswith(_ZIP_MAGIC) else None
    except FileNotFoundError as exc:
        raise refuse("no such file", "Check the path") from exc
    except OSError as exc:
        raise refuse(f"cannot read it ({exc.strerror or exc})", "Check its permissions") from exc
    except (EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise refuse(f"a truncated or corrupt .npz archive ({exc})") from exc
    if data is None:
        if magic == _NPY_MAGIC:
            raise refuse("holds one unnamed array (an .npy file), not one array per model input")
        raise refuse(
            "is not an .npz archive (NumPy could only read it as a pickle, which can run code, "
            "so it is never loaded)"
        )
    with data:
        arrays = {}
        for key in data.files:
            try:
                arrays[key] = data[key]
            except ValueError as exc:  # an object array: its items are pickles
                raise refuse(
                    f"array {key!r} is an object array, stored as pickles that can run code "
                    "when loaded, so it is not read",
                    f"Save strings as text or bytes arrays, which need no pickle: "
                    f"np.savez(path, {key}=np.array(values, dtype=str))",
                ) from exc
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise refuse(f"array {key!r} cannot be read ({exc})") from exc
    return arrays
