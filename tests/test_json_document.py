"""serving.json_document: rapidjson's reading and debug printing as TF Serving 2.21 sets them up
(`json_tensor.cc` ParseJson, JsonValueToDebugString)."""

from __future__ import annotations

import json
import math

import pytest

from serving.errors import ServingError
from serving.json_document import json_text, parse_json


def _error(body: bytes) -> str:
    with pytest.raises(ServingError) as info:
        parse_json(body)
    return info.value.message


def test_parse_flags_of_tf_serving() -> None:
    doc = parse_json(b'{"a": [NaN, -NaN, Inf, -Inf, Infinity, -Infinity], "a": 1} trailing')
    values = doc["a"]  # the first of repeated keys; text after the root is ignored
    assert math.isnan(values[0]) and math.isnan(values[1])
    assert values[2:] == [math.inf, -math.inf, math.inf, -math.inf]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"  ", "JSON Parse error: The document is empty. at offset: 2"),
        (
            b'{"a": [1, 2}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 11",
        ),
        (
            b'{"a" 1}',
            "JSON Parse error: Missing a colon after a name of object member. at offset: 5",
        ),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    ],
)
def test_parse_errors_are_rapidjsons(body: bytes, message: str) -> None:
    assert _error(body) == message


def test_nesting_beyond_the_interpreter_stack_is_a_clear_400() -> None:
    message = _error(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert message.startswith("JSON Parse error: nesting deeper than ")


def test_debug_text_is_rapidjsons_pretty_writer() -> None:
    doc = {"instances": [1, 2.5, [3e30, "x"]], "b": {"c": None}, "e": {}, "t": True}
    assert json_text(doc) == (
        '{\n    "instances": [1, 2.5, [3e30, "x"]],\n    "b": {\n        "c": null\n    },\n'
        '    "e": {},\n    "t": true\n}'
    )
    assert [json_text(v) for v in (1e-7, 100.0, 0.001, 1e21, 1e20, -2.5)] == [
        "1e-7",
        "100.0",
        "0.001",
        "1e21",
        "100000000000000000000.0",
        "-2.5",
    ]


def test_debug_text_stops_after_256_bytes_and_at_non_finite_numbers() -> None:
    text = json_text({"instances": list(range(1000))})
    assert len(text.encode()) <= 256 + 8 and text.endswith(", 61")
    assert json.loads(text + "]}")  # a prefix, cut between values
    assert json_text([1.0, math.nan, 2.0]) == "[1.0, "  # refuses NaN after its separator
