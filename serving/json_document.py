"""The JSON document layer of TF Serving 2.21's REST handler, which is rapidjson: parsing with
the flags `json_tensor.cc ParseJson` sets, and `JsonValueToDebugString`, the text error messages
quote a request value with.

Parsing is rapidjson itself (python-rapidjson): its error texts and offsets, NaN/Inf/Infinity
literals (`kParseNanAndInfFlag`), anything after the root value ignored
(`kParseStopWhenDoneFlag`), and of repeated keys the first found (`FindMember`). rapidjson's
iterative parser has no depth limit; Python's has one, so a document nested deeper than the
interpreter's recursion limit is parsed again with that limit raised to MAX_JSON_DEPTH, and only
a document nested deeper still is refused (a deviation: the deepest tensor TF can hold has 254
dimensions, so no real payload comes near it)."""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from decimal import Decimal
from typing import Any

import rapidjson

from serving.errors import ServingError, invalid_argument

_MAX_DEBUG_BYTES = 256  # kMaxJsonDebugStringBytes
_RAPIDJSON_ERROR = re.compile(r"Parse error at offset (\d+): (.*)", re.DOTALL)
_TRAILING = "The document root must not be followed by other values."
_LONG_DIGITS = re.compile(r"\d{309}")
# Nesting parsed (rapidjson's iterative parser has none); ~80x the deepest tensor (254 dims).
MAX_JSON_DEPTH = 20_000
# One deep parse at a time: the interpreter's recursion limit is raised only while it runs.
_DEEP_PARSE = threading.Lock()


def _rapidjson_double(val: float) -> str:
    """rapidjson `Writer::WriteDouble`: shortest digits laid out by its `Prettify` (`1e30`,
    `1e-7`, `100.0`, `0.001`)."""
    if val == 0:
        return "-0.0" if math.copysign(1.0, val) < 0 else "0.0"
    _, digits_tuple, exponent = Decimal(repr(abs(val))).as_tuple()
    digits = "".join(map(str, digits_tuple)).rstrip("0") or "0"
    k = exponent + len(digits_tuple) - len(digits)  # value = digits * 10**k
    kk = len(digits) + k
    head = "-" if val < 0 else ""
    if k >= 0 and kk <= 21:
        return f"{head}{digits}{'0' * k}.0"
    if 0 < kk <= 21:
        return f"{head}{digits[:kk]}.{digits[kk:]}"
    if -6 < kk <= 0:
        return f"{head}0.{'0' * -kk}{digits}"
    mantissa = digits if len(digits) == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{head}{mantissa}e{kk - 1}"


def json_text(val: Any) -> str:
    """`JsonValueToDebugString`: rapidjson's PrettyWriter (4-space indent, arrays on one line)
    stopped at the first value written once 256 bytes are out (`kMaxJsonDebugStringBytes`), so
    an error quotes at most a short prefix of a large request."""
    out: list[str] = []
    size = 0

    def put(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text.encode("utf-8"))

    def write(value: Any, indent: int, checked: bool = False) -> bool:
        # Each value is one writer event: the limit is checked once, before its separator.
        if not checked and size >= _MAX_DEBUG_BYTES:
            return False
        if isinstance(value, dict):
            put("{")
            for i, (key, item) in enumerate(value.items()):
                if size >= _MAX_DEBUG_BYTES:
                    return False
                name = json.dumps(key, ensure_ascii=False)
                put(("," if i else "") + "\n" + " " * (indent + 4) + name + ": ")
                if not write(item, indent + 4):
                    return False
            if size >= _MAX_DEBUG_BYTES:
                return False
            put(("\n" + " " * indent if value else "") + "}")
        elif isinstance(value, list):
            put("[")
            for i, item in enumerate(value):
                if size >= _MAX_DEBUG_BYTES:
                    return False
                if i:
                    put(", ")  # the separator belongs to the next value's event
                if not write(item, indent, checked=True):
                    return False
            if size >= _MAX_DEBUG_BYTES:
                return False
            put("]")
        elif isinstance(value, float):
            if not math.isfinite(value):
                return False  # rapidjson's writer refuses NaN and Infinity after the separator
            put(_rapidjson_double(value))
        else:
            put(json.dumps(value, ensure_ascii=False))
        return True

    write(val, 0)
    return "".join(out)


def format_error(doc: Any, *parts: str) -> ServingError:
    """`FormatError`: `JSON Value: <debug text> <parts>`."""
    return invalid_argument(f"JSON Value: {json_text(doc)} " + "".join(parts))


def parse_json(body: bytes) -> Any:
    """`ParseJson`: rapidjson itself (python-rapidjson) with TF Serving 2.21's flags: NaN, Inf
    and Infinity literals accepted (`kParseNanAndInfFlag`), anything after the root value
    ignored (`kParseStopWhenDoneFlag`); its own error texts and offsets; of repeated keys the
    first is the one looked up; the root is an object. TF Serving does not validate the
    encoding; bytes that are not UTF-8 are reported here as rapidjson reports them when it
    validates."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {err.start}"
        ) from None
    doc = _rapidjson_parse(text)
    if not isinstance(doc, dict):
        raise format_error(doc, "Is not object")
    return doc


class _FirstMember(dict):
    """A JSON object as rapidjson's `FindMember` sees it: of repeated keys, the first wins."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self:
            super().__setitem__(key, value)


class _Decoder(rapidjson.Decoder):
    def start_object(self) -> _FirstMember:
        return _FirstMember()


def _check_numbers(text: str) -> None:
    """rapidjson reads an integer past uint64 as a double and refuses one past DBL_MAX
    (`Number too big to be stored in double.`); python-rapidjson would build a Python int of
    any size (or fail past Python's digit limit). A text with a run of 309+ digits (DBL_MAX's
    integer digits) is therefore first parsed by rapidjson's own number parser, for its error."""
    if _LONG_DIGITS.search(text) is None:
        return
    try:
        rapidjson.Decoder(number_mode=rapidjson.NM_NAN | rapidjson.NM_NATIVE)(text)
    except rapidjson.JSONDecodeError as err:
        match = _RAPIDJSON_ERROR.match(str(err))
        if match is not None and match.group(2) != _TRAILING:
            raise invalid_argument(
                f"JSON Parse error: {match.group(2)} at offset: {match.group(1)}"
            ) from None


def _rapidjson_parse(text: str) -> Any:
    """rapidjson's answer for `text`. A document nested past the interpreter's recursion limit
    is parsed again with the limit raised by MAX_JSON_DEPTH levels, and refused past that."""
    try:
        return _parse(text)
    except RecursionError:
        pass
    with _DEEP_PARSE:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + MAX_JSON_DEPTH)
        try:
            return _parse(text)
        except RecursionError:
            raise invalid_argument(
                f"JSON Parse error: The document is nested deeper than {MAX_JSON_DEPTH} levels "
                "(this server's limit; TF Serving parses any depth)"
            ) from None
        finally:
            sys.setrecursionlimit(limit)


def _parse(text: str) -> Any:
    _check_numbers(text)
    decode = _Decoder(number_mode=rapidjson.NM_NAN)
    try:
        return decode(text)
    except rapidjson.JSONDecodeError as err:
        match = _RAPIDJSON_ERROR.match(str(err))
        if match is None:
            raise invalid_argument(f"JSON Parse error: {err}") from None
        offset, message = int(match.group(1)), match.group(2)
        if message == _TRAILING:
            return decode(text[:offset])
        raise invalid_argument(f"JSON Parse error: {message} at offset: {offset}") from None
