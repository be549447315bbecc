"""TF Serving's REST contract (§5 of the contract; http_rest_api_handler.cc, json_tensor.cc):
routes, JSON formats, exact error texts and HTTP codes. Runs against the embedded server, or
TF_SERVING_REST_TARGET."""

from __future__ import annotations

import gzip
import json
import math
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from tests.tfs_models import half_plus

HPT = "half_plus_two"


def http(
    server: Any, method: str, path: str, body: str | bytes | None = None
) -> tuple[int, str, str]:
    """(HTTP status, Content-Type, body text) of one request."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(server.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def ok(server: Any, method: str, path: str, body: Any = None) -> Any:
    payload = body if body is None or isinstance(body, str) else json.dumps(body)
    code, ctype, text = http(server, method, path, payload)
    assert code == 200, text
    assert ctype == "application/json"
    return json.loads(text)


def error(server: Any, path: str, body: Any = None, method: str = "POST") -> tuple[int, str]:
    payload = body if body is None or isinstance(body, str) else json.dumps(body)
    code, ctype, text = http(server, method, path, payload)
    assert ctype == "application/json", text
    doc = json.loads(text)
    assert list(doc) == ["error"], doc
    return code, doc["error"]


PREDICT = f"/v1/models/{HPT}:predict"
MULTI = "/v1/models/multi_io:predict"


# --- routes ---------------------------------------------------------------------------------------


def test_status_json(server: Any) -> None:
    assert ok(server, "GET", f"/v1/models/{HPT}") == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }


def test_status_of_a_version_and_label_lists_all(server: Any) -> None:
    one = ok(server, "GET", f"/v1/models/{HPT}/versions/1")
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    labelled = ok(server, "GET", f"/v1/models/{HPT}/labels/stable")
    assert [s["version"] for s in labelled["model_version_status"]] == ["2", "1"]


def test_metadata_json(server: Any) -> None:
    doc = ok(server, "GET", f"/v1/models/{HPT}/metadata")
    assert doc["model_spec"] == {"name": HPT, "signature_name": "", "version": "2"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "times_three"}
    assert sigs["serving_default"] == {
        "inputs": {
            "x": {
                "dtype": "DT_FLOAT",
                "name": "x:0",
                "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
            }
        },
        "outputs": {
            "y": {
                "dtype": "DT_FLOAT",
                "name": "y:0",
                "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
            }
        },
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    v1 = ok(server, "GET", f"/v1/models/{HPT}/versions/1/metadata")
    assert v1["model_spec"]["version"] == "1"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1/models", (400, "Missing model name in request.")),
        ("GET", "/v1/models/", (400, "Malformed request: GET /v1/models/")),
        ("GET", "/v1/foo", (400, "Malformed request: GET /v1/foo")),
        (
            "POST",
            f"/v1/models/{HPT}:explode",
            (400, f"Malformed request: POST /v1/models/{HPT}:explode"),
        ),
        ("POST", f"/v1/models/{HPT}", (400, f"Malformed request: POST /v1/models/{HPT}")),
        ("GET", "/v1/models/nope", (404, "Could not find any versions of model nope")),
        ("GET", f"/v1/models/{HPT}/versions/7", (404, f"Could not find version 7 of model {HPT}")),
        ("GET", "/v1/models/nope/metadata", (404, "Servable not found for request: Latest(nope)")),
        (
            "GET",
            f"/v1/models/{HPT}/labels/beta/metadata",
            (400, "Unrecognized servable version label: beta"),
        ),
    ],
)
def test_route_errors(server: Any, method: str, path: str, expected: tuple[int, str]) -> None:
    assert error(server, path, method=method) == expected


def test_version_that_overflows_has_an_empty_body(server: Any) -> None:
    """`ParseModelInfo` fails before the error is written as JSON (since 2.4)."""
    code, ctype, text = http(server, "GET", f"/v1/models/{HPT}/versions/99999999999999999999")
    assert (code, ctype, text) == (400, "application/json", "")


@pytest.mark.parametrize("path", ["/healthz", "/", "/v1x/models"])
def test_paths_outside_v1_get_libevents_404_page(server: Any, path: str) -> None:
    """http_server.cc `RestApiRequestDispatcher::Dispatch` takes only `(?i)/v1/.*` (the
    Prometheus path only with monitoring on); for anything else net_http's evhttp_server.cc
    calls libevent's `evhttp_send_error(req, HTTP_NOTFOUND, nullptr)`: its HTML page, not JSON."""
    code, ctype, text = http(server, "GET", path)
    assert (code, ctype) == (404, "text/html")
    assert text == (
        "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
        "</BODY></HTML>\n"
    )


def test_deeply_nested_well_formed_json_is_parsed(server: Any) -> None:
    """json_tensor.cc `ParseJson` parses with rapidjson's kParseIterativeFlag (no depth limit):
    a 5,000-deep member the handler never reads does not stop the request; a 300-deep instance
    is filled (`FillTensorProto`) and then refused by `Tensor::FromProto` (rank > 254,
    predict_util.cc "tensor parsing error: <alias>")."""
    deep = "[" * 5000 + "]" * 5000
    doc = ok(server, "POST", PREDICT, '{"instances": [1.0], "unused": ' + deep + "}")
    assert doc == {"predictions": half_plus(np.array([1.0], np.float32), 2).tolist()}
    instance = "[" * 299 + "1.0" + "]" * 299
    assert error(server, PREDICT, '{"instances": [' + instance + "]}") == (
        400,
        "tensor parsing error: x",
    )


def test_deeply_nested_malformed_json_is_rapidjsons_error(server: Any) -> None:
    """The same iterative parse reports where a 5,000-deep document breaks, rapidjson's text."""
    body = '{"instances": ' + "[" * 5000 + "1.0" + "]" * 4999 + "}"
    assert error(server, PREDICT, body) == (
        400,
        "JSON Parse error: Missing a comma or ']' after an array element. at offset: "
        f"{len(body) - 1}",
    )
    body = '{"instances": ' + "[" * 5000
    assert error(server, PREDICT, body) == (
        400,
        f"JSON Parse error: Invalid value. at offset: {len(body)}",
    )


def test_gzipped_request_body(server: Any) -> None:
    body = gzip.compress(json.dumps({"instances": [1.0]}).encode())
    request = urllib.request.Request(
        server.rest_url + PREDICT, data=body, method="POST", headers={"Content-Encoding": "gzip"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert json.loads(resp.read()) == {"predictions": [3.5]}


def test_url_encoded_model_name(server: Any) -> None:
    doc = ok(server, "POST", "/v1/models/half%5Fplus%5Ftwo:predict", {"instances": [1.0]})
    assert doc == {"predictions": [3.5]}


# --- predict: formats ----------------------------------------------------------------------------


X = [1.0, 2.0, 5.0]


def test_row_format(server: Any) -> None:
    doc = ok(server, "POST", PREDICT, {"instances": X})
    assert doc == {"predictions": half_plus(np.array(X, np.float32), 2).tolist()}


def test_columnar_format_version_and_label_routes(server: Any) -> None:
    expected = half_plus(np.array(X, np.float32), 1).tolist()
    assert ok(server, "POST", f"/v1/models/{HPT}/versions/1:predict", {"inputs": X}) == {
        "outputs": expected
    }
    assert ok(server, "POST", f"/v1/models/{HPT}/labels/stable:predict", {"inputs": X}) == {
        "outputs": expected
    }


def test_signature_name(server: Any) -> None:
    doc = ok(server, "POST", PREDICT, {"signature_name": "times_three", "instances": X})
    assert doc == {"predictions": [3.0, 6.0, 15.0]}


def test_multi_io_row_and_columnar(server: Any) -> None:
    rows = ok(
        server,
        "POST",
        MULTI,
        {"instances": [{"a": [1, 2, 3], "b": 4}, {"a": [0.5, 0.5, 0.5], "b": 0}]},
    )
    assert rows == {
        "predictions": [
            {"sum": [5.0, 6.0, 7.0], "scaled": 12.0},
            {"sum": [0.5, 0.5, 0.5], "scaled": 3.0},
        ]
    }
    cols = ok(server, "POST", MULTI, {"inputs": {"a": [[1, 2, 3]], "b": [4], "ignored": 1}})
    assert cols == {"outputs": {"sum": [[5.0, 6.0, 7.0]], "scaled": [12.0]}}


def test_floats_whole_numbers_and_non_finite(server: Any) -> None:
    code, _, text = http(
        server,
        "POST",
        f"/v1/models/{HPT}/versions/1:predict",
        '{"instances": [2, 0.1, NaN, Infinity, -Infinity]}',
    )
    assert code == 200
    assert "3.0" in text  # whole numbers keep a decimal point
    values = json.loads(text)["predictions"]
    assert values[0] == 3.0
    assert np.float32(values[1]) == half_plus(np.array([0.1], np.float32), 1)[0]
    assert math.isnan(values[2]) and values[3] == math.inf and values[4] == -math.inf


def test_numbers_as_tf_serving_2_21_reads_them(server: Any) -> None:
    """No precision check since 2.5 (1e39 becomes inf, 2**24+1 rounds); rapidjson's NaN/Inf
    spellings (`Inf`, `-Inf`, `-NaN`); anything after the document is ignored."""
    code, _, text = http(
        server,
        "POST",
        f"/v1/models/{HPT}/versions/1:predict",
        '{"instances": [1e39, 16777217, Inf, -Inf, -NaN]} trailing',
    )
    assert code == 200, text
    values = json.loads(text)["predictions"]
    expected = half_plus(np.array([np.inf, 16777217, np.inf, -np.inf], np.float32), 1)
    assert values[:4] == expected.tolist()
    assert math.isnan(values[4])


def test_repeated_keys_the_first_is_used(server: Any) -> None:
    """rapidjson keeps every member; FindMember returns the first."""
    code, _, text = http(
        server,
        "POST",
        f"/v1/models/{HPT}/versions/1:predict",
        '{"instances": [2.0], "instances": [4.0]}',
    )
    assert code == 200, text
    assert json.loads(text) == {"predictions": [3.0]}


def test_error_quotes_a_short_prefix_of_the_request(server: Any) -> None:
    """JsonValueToDebugString: arrays on one line, cut after 256 bytes."""
    code, message = error(server, PREDICT, json.dumps(list(range(1000))))
    assert code == 400
    assert message.startswith("JSON Value: [0, 1, 2, 3, ")
    assert message.endswith(" Is not object")
    assert len(message) < 300


def test_b64_input_and_bytes_output(server: Any) -> None:
    doc = ok(
        server, "POST", "/v1/models/strings:predict", {"instances": [{"b64": "aGk="}, "h\u00e9"]}
    )
    assert doc == {
        "predictions": [
            {"text_bytes": {"b64": "aGk="}, "length": 2},
            {"text_bytes": {"b64": "aMOp"}, "length": 3},
        ]
    }


def test_scalar_output_only_in_columnar(server: Any) -> None:
    body = {"signature_name": "with_total", "inputs": {"a": [[1, 2, 3]], "b": [4]}}
    assert ok(server, "POST", MULTI, body) == {"outputs": {"sum": [[5.0, 6.0, 7.0]], "total": 6.0}}
    body = {"signature_name": "with_total", "instances": [{"a": [1, 2, 3], "b": 4}]}
    assert error(server, MULTI, body) == (400, "Tensor name: total has no shape information ")


# --- predict: errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (PREDICT, "", (400, "JSON Parse error: The document is empty")),
        (
            "/v1/models/nope:predict",
            {"instances": [1.0]},
            (404, "Servable not found for request: Latest(nope)"),
        ),
        (
            f"/v1/models/{HPT}/versions/7:predict",
            {"instances": [1.0]},
            (404, f"Servable not found for request: Specific({HPT}, 7)"),
        ),
        (
            f"/v1/models/{HPT}/labels/beta:predict",
            {"instances": [1.0]},
            (400, "Unrecognized servable version label: beta"),
        ),
        (
            PREDICT,
            {"signature_name": "nope", "instances": [1.0]},
            (400, 'Serving signature name: "nope" not found in signature def'),
        ),
        (PREDICT, {"instances": [1.0], "signature_name": ""}, None),
        (PREDICT, {"x": [1.0]}, (400, "Missing 'inputs' or 'instances' key")),
        (
            MULTI,
            {"instances": [[1, 2, 3]]},
            (
                400,
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map",
            ),
        ),
        (
            MULTI,
            {"inputs": [[1, 2, 3]]},
            (
                400,
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map",
            ),
        ),
        (
            MULTI,
            {"inputs": {"a": [[1, 2, 3]]}},
            (400, "Missing named input: b in 'inputs' object."),
        ),
        (
            MULTI,
            {"instances": [{"a": [1, 2, 3], "b": 1, "c": 2}]},
            (
                400,
                "Failed to process element: 0 key: c of 'instances' list. Error: "
                "INVALID_ARGUMENT: JSON object: does not have named input: c",
            ),
        ),
        (
            MULTI,
            {"instances": [{"a": [1, 2, 3], "b": 1.5}]},
            (
                400,
                "Failed to process element: 0 key: b of 'instances' list. Error: "
                "INVALID_ARGUMENT: JSON Value: 1.5 Type: Number is not of expected type: int64",
            ),
        ),
        (
            PREDICT,
            {"instances": ["a"]},
            (
                400,
                "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
                'JSON Value: "a" Type: String is not of expected type: float',
            ),
        ),
        (
            MULTI,
            {"instances": [{"a": [1, 2, 3], "b": 1}, [1, 2, 3]]},
            (400, "Expecting object but got list at item 1 of input list"),
        ),
        (
            PREDICT,
            {"instances": [1.0, {"x": 1.0}]},
            (400, "Expecting value/list but got object at item 1 of input list"),
        ),
        (
            PREDICT,
            {"inputs": [True]},
            (400, "JSON Value: true Type: True is not of expected type: float"),
        ),
        (
            MULTI,
            {"instances": [{"a": [1, 2, 3], "b": 1}, {"a": [1, 2], "b": 1}]},
            (
                400,
                "Failed to process element: 1 key: a of 'instances' list. Error: "
                "INVALID_ARGUMENT: Expecting tensor size: 3 but got: 2",
            ),
        ),
        (
            PREDICT,
            {"inputs": [[1.0, 2.0], [3.0]]},
            (400, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ),
        (
            PREDICT,
            {"inputs": [1.0, [2.0]]},
            (400, "Encountered list at unexpected level: 1 expected < 1"),
        ),
    ],
)
def test_predict_errors(server: Any, path: str, body: Any, expected: Any) -> None:
    if expected is None:  # control case: an empty signature_name means serving_default
        assert ok(server, "POST", path, body) == {"predictions": [3.5]}
        return
    assert error(server, path, body) == expected


def test_document_level_errors_quote_the_document(server: Any) -> None:
    code, message = error(server, PREDICT, '{"instances": [1, 2}')
    assert code == 400
    assert message.startswith("JSON Parse error: ")
    assert "at offset: " in message
    code, message = error(server, PREDICT, "[1, 2]")
    assert (code, message[:12], message[-13:]) == (400, "JSON Value: ", "Is not object")
    for body, suffix in [
        (
            {"instances": [1.0], "inputs": [1.0]},
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        # json_tensor.cc FillPredictRequestFromJson: "Expecting" since 2.5 (a0a9d143 fixed
        # the "Excepting" of earlier releases).
        ({"instances": 1.0}, "Expecting 'instances' to be an list/array"),
        ({"instances": []}, "No values in 'instances' array"),
        (
            {"signature_name": 3, "instances": [1.0]},
            "not formatted correctly. 'signature_name' key must be a string value.",
        ),
    ]:
        code, message = error(server, PREDICT, body)
        assert code == 400
        assert message.startswith("JSON Value: {")
        assert message.endswith(suffix), message


def test_keys_must_be_equal(server: Any) -> None:
    code, message = error(server, MULTI, {"instances": [{"a": [1, 2, 3]}]})
    assert code == 400
    assert message.startswith("Failed to process element: 0 of 'instances' list. JSON object: ")
    assert message.endswith(" keys must be equal to: a,b")


def test_incompatible_shape_is_a_kernel_error(server: Any) -> None:
    body = {"inputs": {"a": [[1, 2, 3], [4, 5, 6]], "b": [1, 2, 3]}}
    code, message = error(server, MULTI, body)
    assert code == 400
    assert message.startswith("Incompatible shapes: ")


# --- classify / regress --------------------------------------------------------------------------

CLASSIFY = "/v1/models/examples:classify"
REGRESS = "/v1/models/examples:regress"


def test_classify_results(server: Any) -> None:
    doc = ok(server, "POST", CLASSIFY, {"examples": [{"x": 0.25}, {"x": [0.75]}]})
    assert doc == {"results": [[["low", 0.25], ["high", 0.75]], [["low", 0.75], ["high", 0.25]]]}


def test_classify_context_is_merged_into_every_example(server: Any) -> None:
    doc = ok(server, "POST", CLASSIFY, {"context": {"x": 0.5}, "examples": [{}, {}]})
    assert doc == {"results": [[["low", 0.5], ["high", 0.5]]] * 2}


def test_regress_results(server: Any) -> None:
    doc = ok(server, "POST", REGRESS, {"signature_name": "regress", "examples": [{"x": 1.5}]})
    assert doc == {"results": [3.0]}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            CLASSIFY,
            {"signature_name": "nope", "examples": [{"x": 1.0}]},
            (400, "No signature was found with the name: nope"),
        ),
        (
            CLASSIFY,
            {"examples": [{"x": [1.0, "a"]}]},
            (400, "Unexpected element type in feature: x expecting type: float"),
        ),
        (
            CLASSIFY,
            {"examples": [{"x": None}]},
            (400, "Feature: x has element with unexpected JSON type: Null"),
        ),
        (CLASSIFY, {"examples": [3]}, (400, "Example must be JSON object but got JSON Number")),
        (
            "/v1/models/nope:classify",
            {"examples": [{"x": 1.0}]},
            (404, "Servable not found for request: Latest(nope)"),
        ),
        (REGRESS, {"examples": [{"x": 1.0}]}, (400, "Expected one output Tensor.")),
    ],
)
def test_classify_regress_errors(server: Any, path: str, body: Any, expected: Any) -> None:
    assert error(server, path, body) == expected


def test_classify_body_level_errors(server: Any) -> None:
    for body, suffix in [
        ({"x": 1}, "When method is classify, key 'examples' is expected and was not found"),
        ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
    ]:
        code, message = error(server, REGRESS, body)
        assert code == 400
        assert message.startswith("JSON Value: {") and message.endswith(suffix), message


def test_classify_needs_the_example_signature(server: Any) -> None:
    code, message = error(server, f"/v1/models/{HPT}:classify", {"examples": [{"x": 1.0}]})
    assert code == 400
    assert message.startswith("No classification inputs found in SignatureDef: ")
