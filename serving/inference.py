"""Request semantics of TF Serving's PredictionService, independent of the transport.

Each function takes an already-resolved Servable and follows the order of checks of the real
server (`predict_util.cc`, `cc/saved_model/util.cc GetInputValues`, `classifier.cc`,
`regressor.cc`, `multi_inference.cc`), so gRPC, REST and warmup share one behaviour. One job
past 400 lines: the four request kinds share the signature lookup, the method-name check, the
runtime-latency metric and the tf.Example input, and splitting them would split those."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import metrics, tensor_proto
from serving.errors import ServingError, invalid_argument
from serving.servable import Servable

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"

SignatureDef = meta_graph_pb2.SignatureDef

# `--enable_signature_method_name_check`: process-wide in TF Serving too
# (`SetSignatureMethodNameCheckFeature`, servables/tensorflow/util.cc).
_method_name_check = False


def set_signature_method_name_check(enabled: bool) -> None:
    """Turns the SignatureDef method_name checks of Predict/Classify/Regress on or off."""
    global _method_name_check
    _method_name_check = enabled


def _check_method(sig: SignatureDef, kind: str, expected: str) -> None:
    if _method_name_check and sig.method_name != expected:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {expected}. Was: {sig.method_name}"
        )


def _timed_run(
    servable: Servable,
    api: str,
    key: str,
    values: Mapping[str, np.ndarray],
    keys: Sequence[str],
    timeout_s: float | None,
) -> dict[str, np.ndarray]:
    """One runtime call, recorded as `runtime_latency` for the API (`RecordRuntimeLatency`)."""
    start = time.monotonic()
    outputs = servable.run(key, values, list(keys), timeout_s=timeout_s)
    metrics.record_runtime(servable.name, api, time.monotonic() - start)
    return outputs


def _join(keys: Any) -> str:
    return ",".join(sorted(keys))


def signature_def(servable: Servable, signature_name: str) -> tuple[str, SignatureDef]:
    """Predict's lookup: empty means serving_default; unknown is FAILED_PRECONDITION."""
    key = signature_name or DEFAULT_SIGNATURE
    sig = servable.signature_defs.get(key)
    if sig is None:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
        )
    return key, sig


def make_model_spec(name: str, signature_name: str, version: int) -> model_pb2.ModelSpec:
    """The response ModelSpec (`util.cc MakeModelSpec`): name, resolved signature, version."""
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name or DEFAULT_SIGNATURE)
    spec.version.value = version
    return spec


def _check_input_count(sig: SignatureDef, request_keys: Sequence[str]) -> None:
    nreq, nsig = len(request_keys), len(sig.inputs)
    if nreq > nsig or (nreq < nsig and not sig.defaults):
        extra = set(request_keys) - set(sig.inputs)
        missing = set(sig.inputs) - set(request_keys)
        raise invalid_argument(
            f"input size does not match signature: {nreq}!={nsig} "
            f"len({{{_join(request_keys)}}}) != "
            f"len({{{_join(sig.inputs)}}}). Sent extra: {{{_join(extra)}}}. "
            f"Missing but required: {{{_join(missing)}}}."
        )


def _input_values(
    sig: SignatureDef, inputs: Mapping[str, Any], decode: Callable[[Any], np.ndarray] | None
) -> dict[str, np.ndarray]:
    """`GetInputValues`: per signature alias, lookup then parse; then the invalid-name check."""
    values: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for alias in sorted(sig.inputs):
        if alias in inputs:
            raw, source = inputs[alias], "request"
            seen.add(alias)
        elif alias in sig.defaults:
            raw, source = sig.defaults[alias], "default"
        else:
            raise invalid_argument(
                f"Signature input alias: {alias}(feed name: {sig.inputs[alias].name}) not found in "
                f"request and no default value provided. Inputs expected to be in the request "
                f"{{{_join(inputs)}}}, or default input alias set: {_join(sig.defaults)}"
            )
        try:
            if source == "default":
                values[alias] = tensor_proto.decode(raw)
            else:
                values[alias] = decode(raw) if decode is not None else np.asarray(raw)
        except tensor_proto.TensorParseError:
            raise invalid_argument(f"tensor parsing error: {alias}") from None
    if inputs and len(seen) != len(inputs):
        raise invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {_join(seen)}, "
            f"request input: {_join(inputs)}"
        )
    return values


def _output_keys(sig: SignatureDef, output_filter: Sequence[str]) -> list[str]:
    if not output_filter:
        return list(sig.outputs)
    keys: list[str] = []
    for alias in output_filter:
        if alias not in sig.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{_join(sig.outputs)}}}."
            )
        if alias in keys:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        keys.append(alias)
    return keys


def predict_arrays(
    servable: Servable,
    signature_key: str,
    inputs: Mapping[str, Any],
    output_filter: Sequence[str] = (),
    *,
    decode: Callable[[Any], np.ndarray] | None = None,
    timeout_s: float | None = None,
) -> dict[str, np.ndarray]:
    """Predict after the signature lookup: input count, aliases, parsing (`decode` turns a raw
    request value into an array, raising TensorParseError), invalid names, output_filter, run.
    Dtype and shape errors come from the runtime, as in TF Serving."""
    _, sig = signature_def(servable, signature_key)
    if _method_name_check and sig.method_name not in (
        PREDICT_METHOD,
        CLASSIFY_METHOD,
        REGRESS_METHOD,
    ):
        raise ServingError(
            grpc.StatusCode.INTERNAL,
            "Expected prediction signature method_name to be one of {"
            f"{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {sig.method_name}",
        )
    _check_input_count(sig, list(inputs))
    values = _input_values(sig, inputs, decode)
    keys = _output_keys(sig, output_filter)
    key = signature_key or DEFAULT_SIGNATURE
    outputs = _timed_run(servable, "Predict", key, values, keys, timeout_s)
    if len(outputs) != len(keys):
        raise ServingError(grpc.StatusCode.UNKNOWN, "Predict internal error")
    return outputs


def predict(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    timeout_s: float | None = None,
    as_tensor_content: bool = False,
) -> predict_pb2.PredictResponse:
    """A full Predict on a resolved servable: outputs in output_filter order, as typed value
    fields or (`as_tensor_content`) as tensor_content."""
    key, _ = signature_def(servable, request.model_spec.signature_name)
    outputs = predict_arrays(
        servable,
        key,
        request.inputs,
        list(request.output_filter),
        decode=tensor_proto.decode,
        timeout_s=timeout_s,
    )
    response = predict_pb2.PredictResponse(
        model_spec=make_model_spec(request.model_spec.name, key, servable.version)
    )
    for alias, array in outputs.items():
        tensor_proto.encode_into(response.outputs[alias], array, content=as_tensor_content)
    return response


# --- Classify / Regress / MultiInference: the tf.Example contract -------------------------------


def _lookup(servable: Servable, signature_name: str) -> SignatureDef:
    key = signature_name or DEFAULT_SIGNATURE
    sig = servable.signature_defs.get(key)
    if sig is None:
        raise invalid_argument(f"No signature was found with the name: {key}")
    return sig


def _debug_string(sig: SignatureDef) -> str:
    return str(sig)


def classification_tensors(sig: SignatureDef) -> tuple[str, list[str]]:
    """`PreProcessClassification`."""
    _check_method(sig, "classification", CLASSIFY_METHOD)
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(sig.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if CLASSIFY_INPUTS not in sig.inputs:
        raise invalid_argument(
            f"No classification inputs found in SignatureDef: {_debug_string(sig)}"
        )
    names = [sig.outputs[k].name for k in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if k in sig.outputs]
    if not names:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" or '
            f'"scores". Signature was: {_debug_string(sig)}'
        )
    return sig.inputs[CLASSIFY_INPUTS].name, names


def regression_tensors(sig: SignatureDef) -> tuple[str, list[str]]:
    """`PreProcessRegression`."""
    _check_method(sig, "regression", REGRESS_METHOD)
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(sig.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in sig.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_debug_string(sig)}")
    if REGRESS_OUTPUTS not in sig.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_debug_string(sig)}")
    return sig.inputs[REGRESS_INPUTS].name, [sig.outputs[REGRESS_OUTPUTS].name]


def serialized_examples(inp: input_pb2.Input) -> np.ndarray:
    """`InputToSerializedExampleTensor`: one serialized tf.Example per row; a context is merged
    into every example by concatenating serializations (protobuf merge semantics)."""
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        rows = [e.SerializeToString() for e in inp.example_list.examples]
    elif kind == "example_list_with_context":
        context = inp.example_list_with_context.context.SerializeToString()
        rows = [context + e.SerializeToString() for e in inp.example_list_with_context.examples]
    else:
        rows = []
    if not rows:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(rows), dtype=object)
    array[:] = rows
    return array


def _run_examples(
    servable: Servable,
    api: str,
    key: str,
    sig: SignatureDef,
    inp: input_pb2.Input,
    output_aliases: Sequence[str],
    timeout_s: float | None,
) -> tuple[int, dict[str, np.ndarray]]:
    examples = serialized_examples(inp)
    alias = next(iter(sig.inputs))
    outputs = _timed_run(servable, api, key, {alias: examples}, output_aliases, timeout_s)
    return len(examples), outputs


def _classification_result(
    sig: SignatureDef, num: int, outputs: Mapping[str, np.ndarray]
) -> classification_pb2.ClassificationResult:
    classes, scores = outputs.get(CLASSIFY_CLASSES), outputs.get(CLASSIFY_SCORES)
    checks = (
        (CLASSIFY_CLASSES, classes, types_pb2.DT_STRING),
        (CLASSIFY_SCORES, scores, types_pb2.DT_FLOAT),
    )
    for label, tensor, want in checks:
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(tensor.shape)}"
            )
        got = tensor_proto.data_type(tensor)
        if got != want:
            raise invalid_argument(
                f"Expected {label} Tensor of {types_pb2.DataType.Name(want)}. "
                f"Got: {types_pb2.DataType.Name(got)}"
            )
        if tensor.shape[0] != num:
            raise invalid_argument(
                f"Expected {label} output batch size of {num}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
            f"{scores.shape[1]}"
        )
    result = classification_pb2.ClassificationResult()
    width = (classes if classes is not None else scores).shape[1]
    for i in range(num):
        row = result.classifications.add()
        for c in range(width):
            cls = row.classes.add()
            if classes is not None:
                cls.label = (
                    classes[i, c].decode()
                    if isinstance(classes[i, c], bytes)
                    else str(classes[i, c])
                )
            if scores is not None:
                cls.score = float(scores[i, c])
    return result


def _regression_result(num: int, output: np.ndarray) -> regression_pb2.RegressionResult:
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(output.shape)}"
        )
    if output.shape[0] != num:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num} vs. {output.shape[0]}"
        )
    if tensor_proto.data_type(output) != types_pb2.DT_FLOAT:
        raise invalid_argument("Expected output Tensor of DT_FLOAT.")
    result = regression_pb2.RegressionResult()
    for value in output.reshape(num):
        result.regressions.add(value=float(value))
    return result


def classify(
    servable: Servable,
    request: classification_pb2.ClassificationRequest,
    timeout_s: float | None = None,
) -> classification_pb2.ClassificationResponse:
    """`RunClassify` on a resolved servable."""
    sig = _lookup(servable, request.model_spec.signature_name)
    classification_tensors(sig)
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    wanted = [k for k in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if k in sig.outputs]
    num, outputs = _run_examples(servable, "Classify", key, sig, request.input, wanted, timeout_s)
    return classification_pb2.ClassificationResponse(
        model_spec=make_model_spec(request.model_spec.name, key, servable.version),
        result=_classification_result(sig, num, outputs),
    )


def regress(
    servable: Servable, request: regression_pb2.RegressionRequest, timeout_s: float | None = None
) -> regression_pb2.RegressionResponse:
    """`RunRegress` on a resolved servable."""
    sig = _lookup(servable, request.model_spec.signature_name)
    regression_tensors(sig)
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    num, outputs = _run_examples(
        servable, "Regress", key, sig, request.input, [REGRESS_OUTPUTS], timeout_s
    )
    return regression_pb2.RegressionResponse(
        model_spec=make_model_spec(request.model_spec.name, key, servable.version),
        result=_regression_result(num, outputs[REGRESS_OUTPUTS]),
    )


def multi_inference(
    servable: Servable, request: inference_pb2.MultiInferenceRequest, timeout_s: float | None = None
) -> inference_pb2.MultiInferenceResponse:
    """`TensorFlowMultiInferenceRunner::Infer` as of TF Serving 2.4+: every task is validated
    first, then the same serialized examples are fed to each signature's own input tensor (TF2
    exports give every signature a differently named `inputs` placeholder; the old "Input
    tensor must be the same for all Signatures." error is gone from the runtime TF Serving
    ships), and the example count is recorded once."""
    model_name = ""
    seen: set[str] = set()
    plans: list[tuple[str, str, SignatureDef]] = []
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if model_name and model_name != task.model_spec.name:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        model_name = task.model_spec.name
        key = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        sig = servable.signature_defs.get(key)
        if sig is None:
            raise invalid_argument(f"Requested signature not found in model graph: {key}")
        if task.method_name == CLASSIFY_METHOD:
            classification_tensors(sig)
        elif task.method_name == REGRESS_METHOD:
            regression_tensors(sig)
        else:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Unsupported signature method_name: {task.method_name}",
            )
        plans.append((task.method_name, key, sig))
    examples = serialized_examples(request.input)
    metrics.record_examples(model_name, len(examples))
    response = inference_pb2.MultiInferenceResponse()
    for method, key, sig in plans:
        wanted = (
            [k for k in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if k in sig.outputs]
            if method == CLASSIFY_METHOD
            else [REGRESS_OUTPUTS]
        )
        outputs = servable.run(key, {CLASSIFY_INPUTS: examples}, wanted, timeout_s=timeout_s)
        result = response.results.add()
        result.model_spec.CopyFrom(make_model_spec(model_name, key, servable.version))
        if method == CLASSIFY_METHOD:
            result.classification_result.CopyFrom(
                _classification_result(sig, len(examples), outputs)
            )
        else:
            result.regression_result.CopyFrom(
                _regression_result(len(examples), outputs[REGRESS_OUTPUTS])
            )
    return response
