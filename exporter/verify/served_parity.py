"""Numeric parity of one exported model across every runtime that serves it.

`python -m exporter parity --export OUT --model-name NAME [--target HOST:PORT] ...` compares, on
the same random (dtype-aware, from the SavedModel's signature) and user inputs at batch size 1
and >1: Keras (with --model), the SavedModel in-process, ONNX Runtime, gRPC Predict and REST,
and the Open Inference Protocol through tritonclient (`verify.v2_parity`: v2-grpc, v2-rest, and
their /onnx rows for the ONNX model). Without --target the embedded server is started
in-process on free ports over OUT/tfserving/NAME and OUT/onnx/NAME (one config, both
platforms) and stopped afterwards; `--v2-target`/`--v2-rest-target` point the v2 rows at a
running Triton or KServe v2 server instead. The verdict is a `verify.parity.ParityReport`, the
export's report type. Exit codes: 0 all within tolerance, 1 a tolerance violation or a runtime
that failed to answer, 2 bad usage (missing export, bad flags, unreadable inputs).

One job at ~450 lines, the serve-side check: locating the published version, the embedded
server's lifetime, and one small runner per transport (gRPC, REST) around `compare`; the v2
rows are in `verify/v2_parity.py`, the comparison itself in `verify/parity.py`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from exporter import tf_internals
from exporter.errors import ParityUsageError
from exporter.options import ParityOptions, from_args
from exporter.publish import existing_versions
from exporter.verify.parity import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ParityReport,
    Runner,
    compare,
    onnx_runner,
    sample_batches,
    savedmodel_runner,
)
from exporter.verify.sample_inputs import conform_inputs, load_inputs
from exporter.verify.tolerances import signature_tolerances
from exporter.verify.v2_parity import models_config, v2_runners
from serving.constants import DEFAULT_SIGNATURE, PROTOBUF_LIMIT
from serving.launch import free_port

SERVER_READY_TIMEOUT_S = 120.0  # the embedded server, started here, loading the model


# --- inputs ---------------------------------------------------------------------------------------


def meta_graph_of(savedmodel_dir: Path, signature: str = DEFAULT_SIGNATURE) -> Any:
    """The MetaGraphDef holding `signature`, as written on disk (no TF session needed);
    parsed once, read for the signature, the input vocabularies and the tolerances."""
    saved_model = tf_internals.parse_saved_model(str(savedmodel_dir))
    for meta_graph in saved_model.meta_graphs:
        if signature in meta_graph.signature_def:
            return meta_graph
    raise ParityUsageError(f"{savedmodel_dir} has no signature {signature!r}")


def input_specs(sig: Any) -> dict[str, SimpleNamespace]:
    """Signature inputs as (shape with a None batch dim, numpy dtype) for random_inputs."""
    import tensorflow as tf

    specs = {}
    for name, info in sorted(sig.inputs.items()):
        dims = [None if d.size < 0 else d.size for d in info.tensor_shape.dim]
        specs[name] = SimpleNamespace(
            shape=[None, *dims[1:]] if dims else [None],
            dtype=tf.dtypes.as_dtype(info.dtype).as_numpy_dtype,
        )
    return specs


# --- runtimes -------------------------------------------------------------------------------------


def grpc_runner(client: Any, model: str, version: int) -> Runner:
    """Predict through gRPC, pinned to the version the local artifacts were read from."""

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return client.predict(batch, model, version=version)

    return run


def _json_tensor(array: np.ndarray) -> Any:
    """A tensor as TF Serving's REST API reads it: strings as JSON text, or {"b64": ...}
    when they are not UTF-8 (the encoding TF Serving documents for binary strings)."""
    if array.dtype != np.dtype(object):
        return array.tolist()

    def text(v: Any) -> Any:
        if isinstance(v, bytes):
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode("ascii")}
        return v

    return np.vectorize(text, otypes=[object])(array).tolist()


def rest_runner(rest_target: str, model: str, version: int, sig: Any) -> Runner:
    """Predict through REST in columnar form, decoded with the signature's output dtypes."""
    import tensorflow as tf

    url = f"http://{rest_target}/v1/models/{model}/versions/{version}:predict"
    outputs = sorted(sig.outputs)
    dtypes = {k: tf.dtypes.as_dtype(sig.outputs[k].dtype).as_numpy_dtype for k in outputs}

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        body = json.dumps({"inputs": {k: _json_tensor(v) for k, v in batch.items()}}).encode()
        request = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"HTTP {err.code}: {err.read().decode(errors='replace')}") from None
        values = doc["outputs"] if len(outputs) > 1 else {outputs[0]: doc["outputs"]}
        return {k: np.asarray(values[k], dtype=dtypes[k]) for k in outputs}

    return run


def keras_runner_for(
    spec: str,
    custom_objects: Sequence[str] = (),
    *,
    allow_unsafe_deserialization: bool = False,
    exported_scalars: Sequence[Mapping[str, Any]] = (),
) -> Runner:
    """Load the model the exporter's way (.keras path or module:factory) and run it traced.

    `exported_scalars` are the export report's scalars: when the model's own differ (a factory
    that trains again, another checkpoint), this is not the exported model and a numbers
    failure would mislead, so ParityUsageError says which scalar differs."""
    import exporter.model.layers  # noqa: F401 - registers frozen_scalars>Scale etc. with Keras
    from exporter.model.loading import load_model
    from exporter.model.trace import trace_model
    from exporter.verify.parity import keras_runner

    model = load_model(
        spec, custom_objects, allow_unsafe_deserialization=allow_unsafe_deserialization
    )
    _check_same_scalars(spec, model, exported_scalars)
    return keras_runner(trace_model(model))


def _check_same_scalars(spec: str, model: Any, exported: Sequence[Mapping[str, Any]]) -> None:
    ours = {
        str(getattr(w, "path", None) or w.name.split(":")[0]): np.asarray(w).reshape(()).item()
        for w in model.weights
        if int(np.prod(w.shape)) == 1
    }
    differ = [
        (s["name"], ours[s["name"]], s["value"])
        for s in exported
        if s["name"] in ours
        and isinstance(s["value"], int | float)
        and ours[s["name"]] != s["value"]
    ]
    if differ:
        name, here, there = differ[0]
        more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
        raise ParityUsageError(
            f"--model {spec} is not the exported model: its scalar {name!r} is {here:.9g}, the "
            f"export's report says {there:.9g}{more}. A factory that trains again makes new "
            "weights: pass the saved file that was exported, or leave out --model to compare "
            "against the SavedModel."
        )


def _exported_scalars(report: Path) -> list[dict[str, Any]]:
    """The scalars the export report says shipped; [] when there is no readable report."""
    try:
        return list(json.loads(report.read_text())["scalars"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _check_target(client: Any, target: str, model_name: str, version: int, wait_s: float) -> None:
    """Within `wait_s`, the server at `target` must answer and serve `model_name` at `version`;
    else ParityUsageError saying which of the three it is (a dead address, another model, a
    version it does not have), so nothing is loaded or compared for nothing."""
    from serving.client import ServingClientError

    deadline = time.monotonic() + wait_s
    last: ServingClientError | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            states = client.status(model_name, timeout=max(0.1, min(remaining, 5.0)))
        except ServingClientError as err:
            last = err
            states = None
        if states is not None:
            available = sorted(s.version for s in states if s.state == "AVAILABLE")
            if version in available:
                return
            last = None
        if remaining <= 0:
            break
        time.sleep(min(0.2, max(remaining, 0)))
    if last is None:
        raise ParityUsageError(
            f"the server at {target} serves model {model_name!r} but not version {version} "
            f"(AVAILABLE: {', '.join(map(str, available)) or 'none'}) after {wait_s:g} s: "
            "pass --version, or wait longer with --wait SECONDS while it loads"
        )
    if last.code.name == "NOT_FOUND":
        raise ParityUsageError(
            f"the server at {target} does not serve model {model_name!r} ({last}): check "
            "--model-name and the server's --model_name / --model_config_file"
        )
    raise ParityUsageError(
        f"cannot reach {target} within {wait_s:g} s ({last}): check --target, or pass "
        "--wait SECONDS for a server that is still starting"
    )


def _guarded(name: str, run: Runner, errors: dict[str, str]) -> Runner:
    """A runtime that fails to answer is recorded (and fails parity) instead of aborting."""

    def guarded(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if name in errors:
            return {}
        try:
            return run(batch)
        except Exception as err:  # any runtime failure is a parity failure, reported by name
            errors[name] = f"{type(err).__name__}: {err}".splitlines()[0]
            return {}

    return guarded


def _add_artifact_runtimes(
    runners: dict[str, Runner],
    runtimes: tuple[str, ...],
    savedmodel_dir: Path,
    onnx_path: Path,
    errors: dict[str, str],
    skipped: dict[str, str],
) -> None:
    """The in-process runtimes `runtimes` names besides the Python-loaded SavedModel (always
    run: it is the reference without --model). A runtime that refuses the artifact is an error;
    one that cannot run here (no C API in the wheel, no ONNX file) is skipped, with why."""
    from exporter.errors import CppLoaderError, OnnxReferenceError
    from exporter.verify.c_api import cpp_runner, unavailable_reason
    from exporter.verify.onnx_reference import reference_runner

    makers = {
        "savedmodel_cpp": (lambda: cpp_runner(savedmodel_dir), unavailable_reason()),
        "onnxruntime": (lambda: onnx_runner(onnx_path), ""),
        "onnx_reference": (lambda: reference_runner(onnx_path), ""),
    }
    for name in runtimes:
        if name not in makers:
            continue
        make, why = makers[name]
        if not why and name != "savedmodel_cpp" and not onnx_path.is_file():
            why = f"{onnx_path} does not exist"
        if why:
            skipped[name] = why
            continue
        try:
            runners[name] = make()
        except (CppLoaderError, OnnxReferenceError) as err:
            errors[name] = str(err)


@contextlib.contextmanager
def embedded_server(
    model_name: str, base_path: Path, onnx_base: Path | None = None
) -> Iterator[tuple[str, str]]:
    """The embedded server on free 127.0.0.1 ports over the SavedModel (as NAME) and, if given,
    the ONNX model directory (as NAME_onnx, model_platform onnx): (grpc, rest) targets."""
    import tempfile

    from serving.server import parse_args, start_server

    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        config = Path(tmp) / "models.config"
        config.write_text(models_config(model_name, base_path, onnx_base))
        args = parse_args(
            [
                "--host=127.0.0.1",
                "--port=0",
                f"--rest_api_port={free_port()}",
                f"--model_config_file={config}",
            ]
        )
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the table
            running = start_server(args)
        try:
            yield f"127.0.0.1:{running.grpc_port}", f"127.0.0.1:{running.rest_port}"
        finally:
            running.stop()


# --- the check ------------------------------------------------------------------------------------


def run_parity(
    export_dir: str | Path,
    model_name: str,
    options: ParityOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> ParityReport:
    """Compare every available runtime with the reference (Keras if `options.model`, else the
    SavedModel in-process). With no `options.target`, serve OUT/tfserving/NAME (and OUT/onnx/NAME)
    in-process for gRPC, REST and the v2 rows; `options.v2_target` sends the v2 rows elsewhere.
    A `target` must answer and serve the model within `options.wait`, checked before any runtime
    loads."""
    from serving.client import ServingClient, ServingClientError
    from serving.errors import ServingError

    opts = options or ParityOptions()
    target, rest_target, version = opts.target, opts.rest_target, opts.version
    v2_target, v2_rest_target = opts.v2_target, opts.v2_rest_target
    say = progress or (lambda _msg: None)
    out = Path(export_dir)
    base = out / "tfserving" / model_name
    if not out.is_dir():
        raise ParityUsageError(f"--export {out}: no such directory (run the exporter first)")
    if not base.is_dir():
        raise ParityUsageError(f"{base}: no such model directory (check --model-name)")
    if version is None:
        versions = existing_versions(base)
        if not versions:
            raise ParityUsageError(f"no numeric version directory under {base}")
        version = versions[-1]
    savedmodel_dir = base / str(version)
    if not (savedmodel_dir / "saved_model.pb").is_file():
        raise ParityUsageError(f"{savedmodel_dir}/saved_model.pb does not exist (check --version)")

    meta_graph = meta_graph_of(savedmodel_dir)
    sig = meta_graph.signature_def[DEFAULT_SIGNATURE]
    specs = input_specs(sig)
    user = [conform_inputs(load_inputs(p), specs, source=f"--inputs {p}") for p in opts.inputs]
    from exporter.freeze.tables import input_vocabularies  # imports TF: not for --help

    try:
        batches = sample_batches(
            specs,
            samples=opts.samples,
            batch_sizes=opts.batch_sizes,
            extra=user,
            vocabularies=input_vocabularies(
                meta_graph.graph_def, {k: v.name for k, v in sig.inputs.items()}
            ),
        )
    except TypeError as err:
        raise ParityUsageError(f"{err} (use --inputs)") from None
    if not batches:
        raise ParityUsageError("nothing to compare: --samples 0 and no --inputs")

    errors: dict[str, str] = {}
    skipped: dict[str, str] = {}
    runners: dict[str, Runner] = {}
    if target is not None:  # a remote server must answer and serve it, before any work
        say(f"server: checking {target} serves {model_name!r} version {version}")
        with ServingClient(target) as probe:
            _check_target(probe, target, model_name, version, opts.wait)
    if opts.model is not None:
        say(f"keras: loading {opts.model}")
        runners["keras"] = keras_runner_for(
            opts.model,
            opts.custom_objects,
            allow_unsafe_deserialization=opts.allow_unsafe_deserialization,
            exported_scalars=_exported_scalars(out / "reports" / model_name / f"{version}.json"),
        )
    say(f"savedmodel: loading {savedmodel_dir}")
    runners["savedmodel"] = savedmodel_runner(savedmodel_dir)
    onnx_path = out / "onnx" / model_name / str(version) / "model.onnx"
    _add_artifact_runtimes(runners, opts.runtimes, savedmodel_dir, onnx_path, errors, skipped)
    onnx_base = onnx_path.parent.parent if onnx_path.is_file() else None

    with contextlib.ExitStack() as stack:
        embedded = target is None
        if embedded:
            say(f"server: starting the embedded server over {base} and {onnx_base}")
            try:
                target, rest_target = stack.enter_context(
                    embedded_server(model_name, base, onnx_base)
                )
            except ServingError as err:
                for row in ("grpc", "rest", "v2-grpc", "v2-rest"):
                    errors[row] = f"embedded server failed to start: {err}"
            v2_target, v2_rest_target = target, rest_target
        if v2_target is not None:
            with_onnx = embedded and onnx_base is not None
            runners.update(
                stack.enter_context(
                    v2_runners(v2_target, v2_rest_target, model_name, version, with_onnx)
                )
            )
        elif not errors:
            skipped["v2"] = "no --v2-target given for the remote server"
        if target is not None:
            client = stack.enter_context(ServingClient(target, max_message_bytes=PROTOBUF_LIMIT))
            try:
                client.wait_until_available(model_name, timeout=SERVER_READY_TIMEOUT_S)
            except ServingClientError as err:
                errors["grpc"] = str(err)
            runners["grpc"] = grpc_runner(client, model_name, version)
            if rest_target:
                runners["rest"] = rest_runner(rest_target, model_name, version, sig)
            else:
                skipped["rest"] = "no --rest-target given for the remote server"

        reference_name = next(iter(runners))
        reference = runners.pop(reference_name)
        guarded = {name: _guarded(name, run, errors) for name, run in runners.items()}
        say(f"compare: {len(guarded)} runtimes vs {reference_name} on {len(batches)} batches")
        result = compare(
            reference_name,
            reference,
            guarded,
            batches,
            atol=DEFAULT_ATOL if opts.atol is None else opts.atol,
            rtol=DEFAULT_RTOL if opts.rtol is None else opts.rtol,
            batch_sizes=list(opts.batch_sizes),
            tolerances=signature_tolerances(sig, meta_graph.graph_def, opts.atol, opts.rtol),
        )
    return dataclasses.replace(
        result,
        model_name=model_name,
        version=version,
        grpc_target=target,
        rest_target=rest_target,
        errors=errors,
        skipped=skipped,
    )


# --- CLI (`python -m exporter parity`, wired in exporter.cli) ------------------------------------


def run_command(args: argparse.Namespace, progress: Callable[[str], None]) -> ParityReport:
    """The subcommand: table on stdout, JSON on request; the caller maps the verdict to 0/1."""
    report = run_parity(args.export, args.model_name, from_args(ParityOptions, args), progress)
    print(report.table())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
