"""serving.json_document: rapidjson's reading and debug printing as TF Serving 2.21 sets them up
(`json_tensor.cc` ParseJson, JsonValueToDebugString)."""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pytest
import rapidjson

from serving.errors import ServingError
from serving.json_document import json_text, parse_json
from serving.json_outputs import predict_response_json
from serving.json_tensor import fill_signature


def _error(body: bytes) -> str:
    with pytest.raises(ServingError) as info:
        parse_json(body)
    return info.value.message


def test_parse_flags_of_tf_serving() -> None:
    doc = parse_json(b'{"a": [NaN, -NaN, Inf, -Inf, Infinity, -Infinity], "a": 1} trailing')
    values = doc["a"]  # the first of repeated keys; text after the root is ignored
    assert math.isnan(values[0]) and math.isnan(values[1])
    assert values[2:] == [math.inf, -math.inf, math.inf, -math.inf]


def test_numbers_are_rapidjsons_own() -> None:
    """ParseJson sets no kParseFullPrecisionFlag: integers within int64/uint64 stay integers, one
    past uint64 is a double (as TF's `IsDouble()` sees it), one past DBL_MAX is rapidjson's
    error, and a double is what rapidjson's normal-precision parse makes of the digits."""
    doc = parse_json(b'{"a": [-9223372036854775808, 18446744073709551615, 18446744073709551616]}')
    assert [type(v) for v in doc["a"]] == [int, int, float]
    assert doc["a"][2] == 2.0**64
    assert _error(b'{"a": 1' + b"0" * 400 + b"}") == (
        "JSON Parse error: Number too big to be stored in double. at offset: 6"
    )
    text = '{"a": 904.4889105823875}'
    assert (
        parse_json(text.encode())["a"]
        == rapidjson.loads(text, number_mode=rapidjson.NM_NATIVE)["a"]
    )


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


def test_tf_servings_deeply_nested_cases() -> None:
    """json_tensor_test.cc `DeeplyNestedWellFormed` / `DeeplyNestedMalformed`: 500,000 levels
    parse (rapidjson's kParseIterativeFlag); the malformed one fails later, on its
    signature_name, with the 256-byte quote of the document."""
    deep = "[" * 500_000 + "]" * 500_000
    doc = parse_json(('{"instances":[1], "nested":' + deep + "}").encode())
    assert list(doc) == ["instances", "nested"] and doc["instances"] == [1]
    doc = parse_json(('{"signature_name":' + deep + "}").encode())
    with pytest.raises(ServingError) as info:
        fill_signature(doc)
    assert info.value.message.endswith("'signature_name' key must be a string value.")
    assert info.value.message.startswith('JSON Value: {\n    "signature_name": [[[[')
    assert sys.getrecursionlimit() == 1000


def _rapidjson_itself(body: str) -> str:
    """python-rapidjson's recursive parse with the interpreter's limit raised (safe at these
    depths): the oracle for rapidjson's error text and byte offset."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    try:
        rapidjson.loads(body, number_mode=rapidjson.NM_NAN)
    except rapidjson.JSONDecodeError as err:
        offset, message = re.fullmatch(r"Parse error at offset (\d+): (.*)", str(err)).groups()
        return f"JSON Parse error: {message} at offset: {offset}"
    finally:
        sys.setrecursionlimit(limit)
    raise AssertionError("the oracle parsed it")


_DEEP = 5000


@pytest.mark.parametrize(
    "body",
    [
        '{"a": ' + "[" * _DEEP + "1.0" + "]" * (_DEEP - 1) + "}",
        '{"a": ' + "[" * _DEEP,
        '{"a": ' + "[" * _DEEP + '{"k" 1}' + "]" * _DEEP + "}",
        '{"a": ' + "[" * _DEEP + '{"k": 1,}' + "]" * _DEEP + "}",
        '{"a": ' + "[" * _DEEP + '"\\x"' + "]" * _DEEP + "}",
        '{"a": ' + "[ " * _DEEP + "1.]" + "]" * _DEEP + "}",
        '{"é": ' + "[" * _DEEP + '"ü", tru]' + "]" * _DEEP + "}",
        '{"a": ' + "[{}, " * _DEEP + "1e999" + "]" * _DEEP + "}",
    ],
)
def test_deep_documents_fail_with_rapidjsons_error(body: str) -> None:
    """Past Python's recursion limit the iterative parse reports what rapidjson itself reports
    for the same document: its message at its byte offset."""
    assert _error(body.encode()) == _rapidjson_itself(body)


def test_half_outputs_are_refused_as_tf_serving_writes_them() -> None:
    """json_tensor.cc `AddSingleValueAndAdvance` has no case for DT_HALF (or bfloat16): the
    first value written fails with INVALID_ARGUMENT (400), while an empty tensor still writes."""
    half = {"y": np.array([1.5, 2.0], np.float16)}
    with pytest.raises(ServingError) as info:
        predict_response_json(half, row_format=False)
    assert info.value.message == "Failed to write JSON value for tensor type: half"
    assert info.value.code.name == "INVALID_ARGUMENT"
    empty = predict_response_json({"y": np.zeros((0,), np.float16)}, row_format=False)
    assert json.loads(empty) == {"outputs": []}


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


def test_float_outputs_are_written_as_write_decimal_writes_them() -> None:
    """WriteDecimal per value: `%g` when it round-trips, else max_digits10, `.0` on whole
    numbers, NaN/Infinity literals; the same texts whether an output has few values (written
    one by one) or many (checked in one numpy parse)."""
    special = [0.1, 3.0, 1e6, 16777216.0, math.nan, math.inf, -math.inf, -0.0]
    expected = ["0.1", "3.0", "1e+06", "16777216.0", "NaN", "Infinity", "-Infinity", "-0.0"]
    for dtype, digits in ((np.float32, ".9g"), (np.float64, ".17g")):
        for count in (1, 3, 40):
            values = np.array(special * count, dtype)
            text = predict_response_json({"y": values}, row_format=False)
            assert text == '{\n    "outputs": [' + ", ".join(expected * count) + "]\n}"
        noisy = np.random.default_rng(0).standard_normal(50).astype(dtype)
        texts = json.loads(predict_response_json({"y": noisy}, row_format=False))["outputs"]
        assert np.array_equal(np.array(texts, dtype), noisy)  # every value round-trips
        written = predict_response_json({"y": noisy}, row_format=False)
        assert all(f"{v:{digits}}" in written or f"{v:g}" in written for v in noisy.tolist())
