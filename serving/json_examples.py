"""Classify/regress bodies of TF Serving's REST API (`util/json_tensor.cc`, the Example half).

`{"examples": [...], "context": {...}}` becomes a `tensorflow.serving.Input` of tf.Examples
(feature kinds inferred from the JSON values as the real server does), and results are written
as `{"results": ...}` with the same float formatting as predict outputs.
"""

from __future__ import annotations

import json
from typing import Any

from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import invalid_argument
from serving.json_document import format_error
from serving.json_outputs import format_float
from serving.json_tensor import decode_b64, is_b64_object, json_type

# --- classify / regress (json_tensor.cc FillClassifyRegressRequestFromJson) ---------------------

_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add_feature_value(val: Any, name: str, feature: feature_pb2.Feature) -> None:
    """AddValueToFeature: the first value fixes the feature's kind; later ones must agree."""

    def kind_is(kind: str) -> None:
        current = feature.WhichOneof("kind")
        if current not in (None, kind):
            raise invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}"
            )

    if val is None or isinstance(val, list) or (isinstance(val, dict) and not is_b64_object(val)):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type(val)}"
        )
    if isinstance(val, bool):
        kind_is("int64_list")
        feature.int64_list.value.append(int(val))
    elif isinstance(val, dict):
        kind_is("bytes_list")
        feature.bytes_list.value.append(decode_b64(val))
    elif isinstance(val, str):
        kind_is("bytes_list")
        feature.bytes_list.value.append(val.encode("utf-8"))
    elif isinstance(val, float) or not -(2**63) <= val < 2**64:
        kind_is("float_list")
        feature.float_list.value.append(float(val))
    else:
        kind_is("int64_list")
        if val > 2**63 - 1:
            raise invalid_argument(
                f"Feature: {name} has uint64_t element. Only int64_t is supported."
            )
        feature.int64_list.value.append(val)


def _example(val: Any, example: example_pb2.Example) -> None:
    """MakeExampleFromJsonObject: {feature: value | [values]}."""
    if not isinstance(val, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(val)}")
    for name, content in val.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def examples_input(doc: dict[str, Any]) -> input_pb2.Input:
    """The `Input` of a classify/regress body: optional `context`, required `examples`."""
    inp = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _example(doc["context"], inp.example_list_with_context.context)
    if "examples" not in doc:
        # Sic: the real server says "classify" for regress requests too.
        raise format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise format_error(doc, "'examples' value is an empty array")
    target = inp.example_list_with_context if has_context else inp.example_list
    for item in examples:
        _example(item, target.examples.add())
    return inp


def classification_json(result: classification_pb2.ClassificationResult) -> str:
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = [
        "["
        + ", ".join(
            f"[{json.dumps(c.label, ensure_ascii=False)}, "
            f"{format_float(c.score, types_pb2.DT_FLOAT)}]"
            for c in classifications.classes
        )
        + "]"
        for classifications in result.classifications
    ]
    return '{\n    "results": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"


def regression_json(result: regression_pb2.RegressionResult) -> str:
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = ", ".join(format_float(r.value, types_pb2.DT_FLOAT) for r in result.regressions)
    return '{\n    "results": [' + values + "]\n}"
