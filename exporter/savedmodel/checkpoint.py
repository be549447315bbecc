"""Stream lifted weights into a SavedModel's `variables/` checkpoint, then prove its bytes.

The checkpoint is the standard V2 bundle TF Serving restores (`variables/variables.index` +
`variables.data-?????-of-?????`). Each shard is written by `SaveV2` straight from the live
variables (an eager read aliases the variable's buffer: no copy), then the shards are merged
into the final prefix, so progress can be reported shard by shard. The proof reads each tensor
back from the finished checkpoint, one at a time, and compares its bytes with the variable's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from exporter.errors import ExportError
from exporter.freeze.lift import LiftedVariable

VARIABLES_DIR = "variables"
VARIABLES_PREFIX = "variables"  # TF Serving's kSavedModelVariablesFilename
SHARD_BYTES = 256 * 2**20  # one SaveV2 call per ~256 MiB: a progress step, no copy
_COMPARE_CHUNK = 16 * 2**20

#: (bytes done, bytes total) after each step of a long write.
BytesProgress = Callable[[int, int], None]


def _shards(lifted: list[LiftedVariable]) -> list[list[LiftedVariable]]:
    """Consecutive groups of about SHARD_BYTES (a larger tensor is a shard of its own)."""
    shards: list[list[LiftedVariable]] = [[]]
    size = 0
    for variable in lifted:
        if shards[-1] and size + variable.nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(variable)
        size += variable.nbytes
    return shards


def write_checkpoint(
    lifted: list[LiftedVariable], export_dir: Path, progress: BytesProgress | None = None
) -> str:
    """Write every lifted variable under `export_dir/variables/`; return the prefix."""
    prefix = export_dir / VARIABLES_DIR / VARIABLES_PREFIX
    scratch = export_dir / VARIABLES_DIR / "tmp-shards"
    shards = _shards(lifted)
    total = sum(v.nbytes for v in lifted)
    done = 0
    parts = []
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for i, shard in enumerate(shards):
            part = str(scratch / f"part-{i:05d}-of-{len(shards):05d}")
            tf.raw_ops.SaveV2(
                prefix=part,
                tensor_names=[v.key for v in shard],
                shape_and_slices=[""] * len(shard),
                tensors=[v.variable.read_value() for v in shard],
            )
            parts.append(part)
            done += sum(v.nbytes for v in shard)
            if progress:
                progress(done, total)
        tf.raw_ops.MergeV2Checkpoints(
            checkpoint_prefixes=parts, destination_prefix=str(prefix), delete_old_dirs=True
        )
    except tf.errors.OpError as exc:
        raise ExportError(
            f"Writing the variables checkpoint under {prefix.parent} failed: {exc.message}. "
            "Check free disk space and permissions of --out."
        ) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return str(prefix)


def same_bytes(left: np.ndarray, right: np.ndarray) -> bool:
    """Bitwise equality (NaN payloads, -0.0 included), compared in chunks: no full-size temp."""
    if left.dtype != right.dtype or left.shape != right.shape:
        return False
    a = np.ascontiguousarray(left).reshape(-1).view(np.uint8)
    b = np.ascontiguousarray(right).reshape(-1).view(np.uint8)
    return all(
        np.array_equal(a[i : i + _COMPARE_CHUNK], b[i : i + _COMPARE_CHUNK])
        for i in range(0, a.size, _COMPARE_CHUNK)
    )


def verify_checkpoint(
    prefix: str, lifted: list[LiftedVariable], progress: BytesProgress | None = None
) -> dict[str, bool]:
    """Checkpoint key -> True when the checkpoint holds exactly the variable's bytes.

    Tensors are read back one at a time, so the check costs one tensor of memory at most.
    Keys present in the checkpoint but not lifted count as a failure under their own name:
    the checkpoint must hold nothing else (no optimizer slots, no stray state).
    """
    reader = tf.train.load_checkpoint(prefix)
    stored = reader.get_variable_to_dtype_map()
    result = {}
    total = sum(v.nbytes for v in lifted)
    done = 0
    for variable in lifted:
        if variable.key not in stored:
            result[variable.key] = False
            continue
        result[variable.key] = same_bytes(reader.get_tensor(variable.key), variable.view())
        done += variable.nbytes
        if progress:
            progress(done, total)
    for extra in sorted(set(stored) - {v.key for v in lifted}):
        result[extra] = False
    return result
