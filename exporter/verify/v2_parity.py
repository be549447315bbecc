"""Parity rows through the Open Inference Protocol (KServe v2 / Triton), with tritonclient.

The ONNX artifact is laid out as a Triton model repository and deployed behind Triton's (or
KServe's v2) protocol, so parity also asks the server the way those clients do: tritonclient's
HTTP client (binary tensor data, its default) and its gRPC client, for the SavedModel and for
the ONNX model side by side in one embedded server (`model_platform: "onnx"` for the latter).
Rows: `v2-grpc`, `v2-rest` (the SavedModel), `v2-grpc/onnx`, `v2-rest/onnx` (the ONNX model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from exporter.verify.parity import Runner
from serving import v2_types

ONNX_SUFFIX = "_onnx"  # the ONNX twin's served name: NAME_onnx beside the SavedModel's NAME


def models_config(model_name: str, savedmodel_base: Path, onnx_base: Path | None) -> str:
    """A ModelServerConfig serving the SavedModel as NAME and, if given, the ONNX model as
    NAME_onnx (its Triton config.pbtxt is read and checked at load)."""
    entries = [(model_name, savedmodel_base, "tensorflow")]
    if onnx_base is not None:
        entries.append((model_name + ONNX_SUFFIX, onnx_base, "onnx"))
    body = "".join(
        f'  config {{ name: "{name}" base_path: "{base.resolve()}" '
        f'model_platform: "{platform}" }}\n'
        for name, base, platform in entries
    )
    return "model_config_list {\n" + body + "}\n"


def _datatype(array: np.ndarray) -> str:
    datatype = v2_types.from_numpy(array.dtype)
    if datatype is None:
        raise ValueError(f"no Open Inference Protocol data type for {array.dtype}")
    return datatype


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """String tensors as bytes objects (tritonclient serializes str and bytes alike)."""
    if array.dtype.kind not in "OU":
        return array
    out = np.empty(array.size, dtype=object)
    out[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in array.reshape(-1)]
    return out.reshape(array.shape)


def v2_runner(protocol: str, client: Any, model: str, version: int) -> Runner:
    """Infer through tritonclient's `http` or `grpc` client, pinned to `version`; outputs are
    every output the server returns, by name."""
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = []
        for name, value in batch.items():
            array = _as_bytes(np.ascontiguousarray(value))
            tensor = module.InferInput(name, list(array.shape), _datatype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(model, inputs, model_version=str(version))
        response = result.get_response()
        names = (
            [o["name"] for o in response["outputs"]]
            if protocol == "http"
            else [o.name for o in response.outputs]
        )
        return {name: result.as_numpy(name) for name in names}

    return run


@contextlib.contextmanager
def v2_runners(
    grpc_target: str, rest_target: str | None, model_name: str, version: int, onnx: bool
) -> Iterator[dict[str, Runner]]:
    """The v2 rows against one server: the SavedModel as NAME, the ONNX model as NAME_onnx."""
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    with contextlib.ExitStack() as stack:
        clients = {"grpc": tgrpc.InferenceServerClient(grpc_target)}
        stack.callback(clients["grpc"].close)
        if rest_target:
            clients["rest"] = thttp.InferenceServerClient(rest_target, network_timeout=120.0)
            stack.callback(clients["rest"].close)
        runners: dict[str, Runner] = {}
        models = [(model_name, "")] + ([(model_name + ONNX_SUFFIX, "/onnx")] if onnx else [])
        for served, suffix in models:
            for kind, client in clients.items():
                protocol = "http" if kind == "rest" else "grpc"
                runners[f"v2-{kind}{suffix}"] = v2_runner(protocol, client, served, version)
        yield runners
