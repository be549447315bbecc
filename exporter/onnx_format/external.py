"""Put weights into an ONNX model as initializers: inline, or streamed to `model.onnx.data`.

Streaming writes each weight straight from its source array (a lifted variable's buffer or a
frozen constant) into the external-data file, at offsets aligned to 4 KiB so ONNX Runtime can
map them, and the model proto only gets the standard external-data entries (`location`,
`offset`, `length`): the proto never holds the bytes, so there is no second copy of the
weights and no 2 GiB protobuf limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

EXTERNAL_DATA_FILE = "model.onnx.data"
ALIGNMENT = 4096  # page size: ONNX Runtime maps aligned external initializers
_WRITE_CHUNK = 64 * 2**20

#: name -> a callable returning the weight's array (called once, when it is written).
WeightSource = Mapping[str, Callable[[], np.ndarray]]
BytesProgress = Callable[[int, int], None]


def _external_tensor(name: str, array: np.ndarray, offset: int) -> onnx.TensorProto:
    tensor = onnx.TensorProto(
        name=name,
        dims=array.shape,
        data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
        data_location=onnx.TensorProto.EXTERNAL,
    )
    for key, value in (
        ("location", EXTERNAL_DATA_FILE),
        ("offset", str(offset)),
        ("length", str(array.nbytes)),
    ):
        tensor.external_data.add(key=key, value=value)
    return tensor


def stream_external(
    weights: WeightSource,
    sizes: Mapping[str, int],
    export_dir: Path,
    progress: BytesProgress | None = None,
) -> list[onnx.TensorProto]:
    """Write every weight into `export_dir/model.onnx.data`; return their initializer entries."""
    total = sum(sizes.values())
    done = 0
    tensors = []
    with (export_dir / EXTERNAL_DATA_FILE).open("wb") as handle:
        for name, source in weights.items():
            offset = -(-handle.tell() // ALIGNMENT) * ALIGNMENT
            handle.seek(offset)
            array = np.ascontiguousarray(source())
            data = memoryview(array.reshape(-1).view(np.uint8))
            for start in range(0, len(data), _WRITE_CHUNK):
                handle.write(data[start : start + _WRITE_CHUNK])
                if progress:
                    progress(done + min(start + _WRITE_CHUNK, len(data)), total)
            done += array.nbytes
            tensors.append(_external_tensor(name, array, offset))
            del array, data
    return tensors


def inline(weights: WeightSource) -> list[onnx.TensorProto]:
    """Initializers holding their bytes in the proto (models well under 2 GiB)."""
    return [numpy_helper.from_array(source(), name=name) for name, source in weights.items()]
