"""One loaded model version: a TF Session over the SavedModel's MetaGraph, as TF Serving runs it.

The graph is imported with `tf.compat.v1.saved_model.loader.load` into its own `tf.Graph`; runs go
straight to the C session (no Python feed casting or static shape checks), so dtype and kernel
errors carry TF's own messages ("Expects arg[0] to be float but double is provided")."""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from serving import tf_internals
from serving.errors import ServingError, check_deadline, code_from_number
from serving.triton_config import ModelSpec, from_signature

SignatureDef = meta_graph_pb2.SignatureDef


class Servable(ABC):
    """What the core and the front-ends need from a loaded version, whatever the runtime.

    There is no explicit close: an unloaded version is dropped from the core's map and its runtime
    is freed when the last in-flight request lets go of it, like a ServableHandle."""

    name: str
    version: int
    path: str
    signature_defs: dict[str, SignatureDef]
    model_config: ModelSpec | None  # what the Open Inference Protocol serves (Triton's config)

    def __init__(self, name: str, version: int, path: str) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = {}
        self.model_config = None
        self._count_lock = threading.Lock()
        self.run_count = 0

    def _count_run(self) -> None:
        with self._count_lock:
            self.run_count += 1

    def memory_owners(self) -> list[object]:
        """The objects that hold this version's runtime memory (what an unload must see freed)."""
        return []

    @abstractmethod
    def run(
        self,
        signature_key: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs one signature: `inputs` by input alias, returns arrays by output alias."""


def check_readable(path: str) -> bool:
    """Whether `path` exists; PERMISSION_DENIED naming it when the server may not read it
    (an existence check alone would call an unreadable version "does not exist")."""
    try:
        readable = os.stat(path) and os.access(path, os.R_OK)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError:
        readable = False
    if not readable:
        raise ServingError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{path}: permission denied (this server runs as uid {os.getuid()}; a model "
            "version must be readable by it: directories 0755, files 0644)",
        )
    return True


def _saved_model_file(path: str) -> None:
    """Fails with TF's own message when neither saved_model.pb nor .pbtxt exists."""
    if not any(
        check_readable(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")
    ):
        raise ServingError(
            grpc.StatusCode.NOT_FOUND,
            f"SavedModel file does not exist at: {path}/{{saved_model.pbtxt|saved_model.pb}}",
        )


# protobuf's parser reads this far ahead (`EpsCopyInputStream` kSlopBytes): a parse that fails
# within it of the end has already drained TF's file stream.
_SLOP_BYTES = 16


def _reads_to_the_end(data: bytes) -> bool:
    """Whether parsing `data` as a protobuf fails only at its end: a top-level varint or
    length-delimited field cut short (a copy that stopped on a full disk), or a bad field within
    the parser's read-ahead of the end. TF's `ReadBinaryProto` then reports its file stream's
    status (OUT_OF_RANGE) rather than DATA_LOSS."""
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            if pos >= end:
                raise EOFError
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    try:
        while pos < end:
            start = pos
            wire = varint() & 7
            if wire == 0:
                varint()
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                length = varint()
                pos += length
            else:  # not a field: where the parser fails
                return start >= end - _SLOP_BYTES
        return pos > end or end <= _SLOP_BYTES
    except EOFError:
        return True


def _unparsable(path: str) -> ServingError:
    """What TF's C++ reader (`ReadBinaryProto` / `ReadTextProto`, linked by TF Serving) answers
    for a SavedModel file it cannot parse: its file stream's OUT_OF_RANGE when the parse ran to
    the end of a binary file (one cut short), else DATA_LOSS naming the file as a plain path
    (Python's loader would print a bytes repr of it)."""
    pb = os.path.join(path, "saved_model.pb")
    if not os.path.exists(pb):
        pbtxt = os.path.join(path, "saved_model.pbtxt")
        return ServingError(grpc.StatusCode.DATA_LOSS, f"Can't parse {pbtxt} as text proto")
    with open(pb, "rb") as f:
        if _reads_to_the_end(f.read()):
            return ServingError(grpc.StatusCode.OUT_OF_RANGE, "Read less bytes than requested")
    return ServingError(grpc.StatusCode.DATA_LOSS, f"Can't parse {pb} as binary proto")


def _check_tags(path: str, tags: Sequence[str]) -> None:
    """TF's message for a tag-set mismatch (the Python loader words it differently)."""
    try:
        saved_model = tf_internals.parse_saved_model(path)
    except OSError as e:
        raise _unparsable(path) from e
    wanted = set(tags)
    if not any(set(m.meta_info_def.tags) == wanted for m in saved_model.meta_graphs):
        raise ServingError(
            grpc.StatusCode.NOT_FOUND,
            "Could not find meta graph def matching supplied tags: { "
            + " ".join(sorted(wanted))
            + " }. To inspect available tag-sets in the SavedModel, please use the SavedModel "
            "CLI: `saved_model_cli`",
        )


class _Signature:
    """Graph endpoints of one SignatureDef, resolved once at load time. Entries naming an
    operation rather than a tensor (`__saved_model_init_op` -> `NoOp`) cannot be fed or fetched."""

    def __init__(self, graph: tf.Graph, signature: SignatureDef) -> None:
        def endpoint(name: str) -> Any:
            return tf_internals.tf_output(graph.get_tensor_by_name(name))

        # Feeds go in sorted tensor-name order: that is the arg[i] order in TF's dtype errors.
        by_name = sorted(signature.inputs.items(), key=lambda kv: kv[1].name)
        self.feeds = [(alias, endpoint(info.name)) for alias, info in by_name if ":" in info.name]
        self.fetches = {
            alias: endpoint(info.name)
            for alias, info in signature.outputs.items()
            if ":" in info.name
        }


class TFServable(Servable):
    """A SavedModel version loaded in a TF Session (frozen TF1 graphs and TF2/Keras exports)."""

    def __init__(
        self,
        name: str,
        version: int,
        path: str,
        tags: Sequence[str] = ("serve",),
        session_config: config_pb2.ConfigProto | None = None,
        remove_unused_fields_from_bundle_metagraph: bool = True,
    ) -> None:
        super().__init__(name, version, path)
        _saved_model_file(path)
        _check_tags(path, tags)
        self._graph = tf.Graph()
        self.session_config = session_config  # the ConfigProto this version's session runs with
        self._session = tf.compat.v1.Session(graph=self._graph, config=session_config)
        try:
            # The TF1 loader is deprecated in Python, and is exactly what TF Serving runs.
            with self._graph.as_default(), tf_internals.silence_deprecation():
                meta_graph = tf.compat.v1.saved_model.loader.load(self._session, list(tags), path)
        except tf.errors.OpError as e:
            self._session.close()
            raise ServingError(code_from_number(e.error_code), e.message) from e
        except (RuntimeError, ValueError, OSError) as e:
            self._session.close()
            raise ServingError(grpc.StatusCode.INTERNAL, str(e)) from e
        self.signature_defs = dict(meta_graph.signature_def)
        if remove_unused_fields_from_bundle_metagraph:
            # `saved_model_bundle_factory.cc`: keep only the signatures; the graph can be MBs.
            meta_graph = meta_graph_pb2.MetaGraphDef(signature_def=meta_graph.signature_def)
        self.meta_graph_def = meta_graph
        self._signatures = {
            key: _Signature(self._graph, sig) for key, sig in self.signature_defs.items()
        }
        self.model_config = from_signature(name, self.signature_defs.get("serving_default"))

    def memory_owners(self) -> list[object]:
        return [self._graph, self._session]

    def run(
        self,
        signature_key: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """One Session::Run; TF's OpErrors become ServingErrors with the same code and text."""
        check_deadline(timeout_s)
        sig = self._signatures[signature_key]
        feeds = {tensor: inputs[alias] for alias, tensor in sig.feeds if alias in inputs}
        fetches = [sig.fetches[k] for k in output_keys]
        options = None
        if timeout_s is not None:
            timeout_ms = max(1, int(timeout_s * 1000))
            options = config_pb2.RunOptions(timeout_in_ms=timeout_ms).SerializeToString()
        self._count_run()
        try:
            # The raw C entry point (what make_callable uses); Session.run would cast and reshape.
            results = tf_internals.session_run(self._session, feeds, fetches, options)
        except tf.errors.OpError as e:
            raise ServingError(code_from_number(e.error_code), e.message) from e
        return {k: np.asarray(v) for k, v in zip(output_keys, results, strict=True)}
