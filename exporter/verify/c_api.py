"""Run a SavedModel through TensorFlow's C API: the C++ loader TF Serving links.

TF Serving loads a SavedModel with `tensorflow::LoadSavedModel` (tensorflow/cc/saved_model/
loader.cc: validate the graph's constants and functions, create the Session, run the restore op
with `variables/`, run `main_op`/`legacy_init_op` with the asset paths fed); the Python loader
(`tf.compat.v1.saved_model.loader.load`) is a separate implementation of the same steps, and
accepts SavedModels the C++ one refuses (a self-recursive library function, a constant of
unknown size: see tests/test_c_api.py). The tensorflow wheel ships the C API in
`libtensorflow_cc.so.2`: `TF_LoadSessionFromSavedModel` calls `LoadSavedModel`, and
`TF_SessionRun` runs the signature the way TF Serving's Predict does (default session options,
so Grappler rewrites the graph as it does in TF Serving). Called in-process with ctypes: the
library is the one TensorFlow's Python module has already loaded, so no second copy of TF.
"""

from __future__ import annotations

import ctypes
import weakref
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import CppLoaderError

RUNTIME = "savedmodel_cpp"
LIBRARY = "libtensorflow_cc.so.2"
_TSTRING_BYTES = 24  # sizeof(TF_TString): tensorflow/tsl/platform/ctstring_internal.h

_P = ctypes.c_void_p


class _Output(ctypes.Structure):  # TF_Output
    _fields_ = [("oper", _P), ("index", ctypes.c_int)]


class _Buffer(ctypes.Structure):  # TF_Buffer
    _fields_ = [("data", _P), ("length", ctypes.c_size_t), ("dealloc", _P)]


_BUFFER = ctypes.POINTER(_Buffer)
_OUTPUTS, _TENSORS, _INT = ctypes.POINTER(_Output), ctypes.POINTER(_P), ctypes.c_int
_SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "TF_NewStatus": ([], _P),
    "TF_DeleteStatus": ([_P], None),
    "TF_GetCode": ([_P], ctypes.c_int),
    "TF_Message": ([_P], ctypes.c_char_p),
    "TF_NewSessionOptions": ([], _P),
    "TF_DeleteSessionOptions": ([_P], None),
    "TF_NewGraph": ([], _P),
    "TF_DeleteGraph": ([_P], None),
    "TF_NewBuffer": ([], _BUFFER),
    "TF_DeleteBuffer": ([_BUFFER], None),
    "TF_LoadSessionFromSavedModel": (
        [_P, _P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, _P, _BUFFER, _P],
        _P,
    ),
    "TF_GraphOperationByName": ([_P, ctypes.c_char_p], _P),
    "TF_SessionRun": (
        # session, run_options, inputs, values, n, outputs, values, n, targets, n, metadata, status
        [_P, _P, _OUTPUTS, _TENSORS, _INT, _OUTPUTS, _TENSORS, _INT, _P, _INT, _P, _P],
        None,
    ),
    "TF_CloseSession": ([_P, _P], None),
    "TF_DeleteSession": ([_P, _P], None),
    "TF_AllocateTensor": (
        [ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_size_t],
        _P,
    ),
    "TF_DeleteTensor": ([_P], None),
    "TF_TensorData": ([_P], _P),
    "TF_TensorByteSize": ([_P], ctypes.c_size_t),
    "TF_NumDims": ([_P], ctypes.c_int),
    "TF_Dim": ([_P, ctypes.c_int], ctypes.c_int64),
    "TF_TensorType": ([_P], ctypes.c_int),
    "TF_StringInit": ([_P], None),
    "TF_StringCopy": ([_P, ctypes.c_char_p, ctypes.c_size_t], None),
    "TF_StringGetDataPointer": ([_P], _P),
    "TF_StringGetSize": ([_P], ctypes.c_size_t),
    "TF_StringDealloc": ([_P], None),
}


@cache
def _library() -> tuple[Any, str]:
    """(the C API library, "") or (None, why it is unavailable)."""
    import tensorflow as tf

    path = Path(tf.__file__).parent / LIBRARY
    if not path.is_file():
        return None, f"this tensorflow wheel has no {LIBRARY} (looked in {path.parent})"
    try:
        lib = ctypes.CDLL(str(path))
        for name, (args, result) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, result
    except (OSError, AttributeError) as exc:
        return None, f"{path} does not export TensorFlow's C API ({exc})"
    return lib, ""


def unavailable_reason() -> str:
    """Why the C++ loader cannot be run here, or "" when it can."""
    return _library()[1]


def _check(lib: Any, status: Any, what: str, export_dir: Path) -> None:
    code = lib.TF_GetCode(status)
    if code:
        from tensorflow.core.protobuf import error_codes_pb2

        message = lib.TF_Message(status).decode(errors="replace")
        raise CppLoaderError(
            f"TensorFlow's C++ SavedModel loader ({what}, the code TF Serving links) fails on "
            f"{export_dir}: {error_codes_pb2.Code.Name(code)}: {message.splitlines()[0]}"
        )


def _tensor(lib: Any, array: np.ndarray) -> Any:
    """A new TF_Tensor holding `array` (strings as TF_TString elements)."""
    import tensorflow as tf

    array = np.asarray(array)
    dims = (ctypes.c_int64 * array.ndim)(*array.shape)
    if array.dtype.kind in "OSU":
        tensor = lib.TF_AllocateTensor(
            tf.string.as_datatype_enum, dims, array.ndim, _TSTRING_BYTES * array.size
        )
        base = lib.TF_TensorData(tensor)
        for i, value in enumerate(array.reshape(-1)):
            data = value.encode() if isinstance(value, str) else bytes(value)
            lib.TF_StringInit(base + i * _TSTRING_BYTES)
            lib.TF_StringCopy(base + i * _TSTRING_BYTES, data, len(data))
        return tensor
    array = np.ascontiguousarray(array)
    tensor = lib.TF_AllocateTensor(
        tf.as_dtype(array.dtype).as_datatype_enum, dims, array.ndim, array.nbytes
    )
    ctypes.memmove(lib.TF_TensorData(tensor), array.ctypes.data, array.nbytes)
    return tensor


def _free_input(lib: Any, tensor: Any, array: np.ndarray) -> None:
    """TF_DeleteTensor frees the buffer; strings we copied in own heap memory of their own."""
    if np.asarray(array).dtype.kind in "OSU":
        base = lib.TF_TensorData(tensor)
        for i in range(np.asarray(array).size):
            lib.TF_StringDealloc(base + i * _TSTRING_BYTES)
    lib.TF_DeleteTensor(tensor)


def _array(lib: Any, tensor: Any) -> np.ndarray:
    """A numpy copy of a TF_Tensor the session returned (strings as bytes objects)."""
    import tensorflow as tf

    shape = tuple(lib.TF_Dim(tensor, i) for i in range(lib.TF_NumDims(tensor)))
    dtype = tf.dtypes.as_dtype(lib.TF_TensorType(tensor))
    base = lib.TF_TensorData(tensor)
    if dtype == tf.string:
        out = np.empty(int(np.prod(shape)), dtype=object)
        for i in range(out.size):
            element = base + i * _TSTRING_BYTES
            out[i] = ctypes.string_at(
                lib.TF_StringGetDataPointer(element), lib.TF_StringGetSize(element)
            )
        return out.reshape(shape)
    raw = (ctypes.c_char * lib.TF_TensorByteSize(tensor)).from_address(base)
    return np.frombuffer(raw, dtype=dtype.as_numpy_dtype).reshape(shape).copy()


class CppSavedModel:
    """One SavedModel loaded by `tensorflow::LoadSavedModel`; `run` feeds a signature by key.

    The session is closed when the object is collected (or on `close()`), so a parity stage
    that drops its runner frees this copy of the weights.
    """

    def __init__(
        self,
        export_dir: Path,
        tags: tuple[str, ...] = ("serve",),
        signature: str = "serving_default",
    ) -> None:
        from tensorflow.core.protobuf import meta_graph_pb2

        lib, why = _library()
        if lib is None:
            raise CppLoaderError(f"TensorFlow's C API is unavailable: {why}")
        self._lib, self.export_dir = lib, Path(export_dir)
        status, options = lib.TF_NewStatus(), lib.TF_NewSessionOptions()
        graph, meta = lib.TF_NewGraph(), lib.TF_NewBuffer()
        tag_array = (ctypes.c_char_p * len(tags))(*(t.encode() for t in tags))
        try:
            session = lib.TF_LoadSessionFromSavedModel(
                options, None, str(export_dir).encode(), tag_array, len(tags), graph, meta, status
            )
            try:
                _check(lib, status, "TF_LoadSessionFromSavedModel", self.export_dir)
            except CppLoaderError:
                lib.TF_DeleteGraph(graph)
                raise
            meta_graph = meta_graph_pb2.MetaGraphDef.FromString(
                ctypes.string_at(meta.contents.data, meta.contents.length)
            )
        finally:
            lib.TF_DeleteBuffer(meta)
            lib.TF_DeleteSessionOptions(options)
            lib.TF_DeleteStatus(status)
        self._graph, self._session = graph, session
        self._finalizer = weakref.finalize(self, _close, lib, session, graph)
        if signature not in meta_graph.signature_def:
            self.close()
            raise CppLoaderError(f"{export_dir} has no signature {signature!r}")
        signature_def = meta_graph.signature_def[signature]
        self.inputs = {k: self._output(v.name) for k, v in signature_def.inputs.items()}
        self.outputs = {k: self._output(v.name) for k, v in signature_def.outputs.items()}

    def _output(self, tensor_name: str) -> _Output:
        op, _, index = tensor_name.partition(":")
        oper = self._lib.TF_GraphOperationByName(self._graph, op.encode())
        if not oper:
            raise CppLoaderError(f"the loaded graph has no operation {op!r} (signature tensor)")
        return _Output(oper, int(index or 0))

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """TF_SessionRun on the signature's feeds and fetches, by signature key."""
        lib = self._lib
        keys, fetch = list(batch), list(self.outputs)
        feeds = (_Output * len(keys))(*(self.inputs[k] for k in keys))
        values = [_tensor(lib, batch[k]) for k in keys]
        outputs = (_Output * len(fetch))(*(self.outputs[k] for k in fetch))
        results = (_P * len(fetch))()
        status = lib.TF_NewStatus()
        try:
            lib.TF_SessionRun(
                self._session, None, feeds, (_P * len(keys))(*values), len(keys),
                outputs, results, len(fetch), None, 0, None, status,
            )  # fmt: skip
            _check(lib, status, "TF_SessionRun", self.export_dir)
            return {k: _array(lib, results[i]) for i, k in enumerate(fetch)}
        finally:
            for key, value in zip(keys, values, strict=True):
                _free_input(lib, value, batch[key])
            for result in results:
                if result:
                    lib.TF_DeleteTensor(result)
            lib.TF_DeleteStatus(status)

    def close(self) -> None:
        self._finalizer()


def _close(lib: Any, session: Any, graph: Any) -> None:
    status = lib.TF_NewStatus()
    lib.TF_CloseSession(session, status)
    lib.TF_DeleteSession(session, status)
    lib.TF_DeleteGraph(graph)
    lib.TF_DeleteStatus(status)


def cpp_runner(export_dir: Path, signature: str = "serving_default") -> Any:
    """A parity Runner over the C++-loaded SavedModel (loads now: a refusal raises here)."""
    return CppSavedModel(Path(export_dir), signature=signature).run
