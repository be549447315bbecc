"""The JSON document layer of TF Serving 2.21's REST handler, which is rapidjson: parsing with
the flags `json_tensor.cc ParseJson` sets, and `JsonValueToDebugString`, the text error messages
quote a request value with.

Parsing is rapidjson itself (python-rapidjson): its error texts and offsets, NaN/Inf/Infinity
literals (`kParseNanAndInfFlag`), anything after the root value ignored
(`kParseStopWhenDoneFlag`), and of repeated keys the first found (`FindMember`). Numbers are
rapidjson's own (`NM_NATIVE`): TF Serving does not set `kParseFullPrecisionFlag`, so a double is
what rapidjson's normal-precision parse makes of its digits (not always the correctly rounded
value Python's `float()` gives), an integer past uint64 is a double, and one past DBL_MAX is
rapidjson's error; that is also ~5x faster than handing each number's text to Python. rapidjson's
iterative parser has no depth limit and python-rapidjson recurses, so a document nested past
the interpreter's recursion limit is parsed by an iterative parser here, with rapidjson's
errors and offsets (TF Serving's own `DeeplyNestedWellFormed` / `DeeplyNestedMalformed` cases
nest 500,000 levels)."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

import rapidjson

from serving.errors import ServingError, invalid_argument

_MAX_DEBUG_BYTES = 256  # kMaxJsonDebugStringBytes
_RAPIDJSON_ERROR = re.compile(r"Parse error at offset (\d+): (.*)", re.DOTALL)
_TRAILING = "The document root must not be followed by other values."


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


# One decoder for every request (its options are fixed; a call keeps no state in it).
_DECODE = _Decoder(number_mode=rapidjson.NM_NAN | rapidjson.NM_NATIVE)


class _ParseError(Exception):
    """A rapidjson parse error: its message and byte offset."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message, self.offset = message, offset


def _raise_parse_error(err: rapidjson.JSONDecodeError, shift: int = 0) -> None:
    match = _RAPIDJSON_ERROR.match(str(err))
    if match is None:
        raise invalid_argument(f"JSON Parse error: {err}") from None
    raise _ParseError(match.group(2), int(match.group(1)) + shift) from None


def _decode(text: str) -> tuple[Any, int]:
    """python-rapidjson on `text`: the root value, and the (character) offset where it ended
    (rapidjson's kParseStopWhenDoneFlag: anything after it is not read). RecursionError past
    the interpreter's recursion limit."""
    decode = _DECODE
    try:
        return decode(text), len(text)
    except rapidjson.JSONDecodeError as err:
        match = _RAPIDJSON_ERROR.match(str(err))
        if match is not None and match.group(2) == _TRAILING:  # a byte offset
            end = len(text.encode("utf-8")[: int(match.group(1))].decode("utf-8", "ignore"))
            return decode(text[:end]), end
        _raise_parse_error(err)
        raise  # unreachable: _raise_parse_error always raises


def _rapidjson_parse(text: str) -> Any:
    """rapidjson's answer for `text`, with TF Serving's error text. python-rapidjson recurses;
    a document nested past the interpreter's limit is parsed by `_parse_iteratively`."""
    try:
        try:
            return _decode(text)[0]
        except RecursionError:
            return _parse_iteratively(text)
    except _ParseError as err:
        raise invalid_argument(f"JSON Parse error: {err.message} at offset: {err.offset}") from None


_WHITESPACE = re.compile(r"[ \t\n\r]*")  # rapidjson's SkipWhitespace
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r'[^ \t\n\r,\]}:\[{"]+')  # a number or literal, up to what ends it
_SCALAR_START = frozenset("-0123456789tfnNI")
_OPEN_RUN = re.compile(r"\[+")


def _parse_iteratively(text: str) -> Any:
    """rapidjson's iterative parse (kParseIterativeFlag, what TF Serving sets): containers on
    an explicit stack, so any depth parses. Strings and scalars are each decoded by
    python-rapidjson (their values and errors are rapidjson's); the structural errors are
    rapidjson's texts at its byte offsets."""
    size = len(text)
    stack: list[Any] = []  # open containers, innermost last
    key = ""  # the member name a value in the innermost object goes to
    root: Any = None

    def fail(message: str, pos: int) -> None:
        raise _ParseError(message, len(text[:pos].encode("utf-8")))

    def token(pattern: re.Pattern[str], pos: int) -> tuple[Any, int]:
        match = pattern.match(text, pos)
        part = match.group() if match else text[pos:]
        try:
            value, end = _decode(part)
        except _ParseError as err:
            raise _ParseError(err.message, len(text[:pos].encode("utf-8")) + err.offset) from None
        return value, pos + end

    def attach(value: Any) -> None:
        nonlocal root
        if not stack:
            root = value
        elif isinstance(stack[-1], list):
            stack[-1].append(value)
        else:
            stack[-1][key] = value

    pos = _WHITESPACE.match(text, 0).end()
    if pos == size:
        fail("The document is empty.", pos)
    expect = "value"
    while True:
        if expect == "value":
            char = text[pos] if pos < size else ""
            if char == "[" and text.startswith("[[", pos):  # a run of opens, the deep case
                run = _OPEN_RUN.match(text, pos).end() - pos - 1
                for _ in range(run):
                    inner: list[Any] = []
                    attach(inner)
                    stack.append(inner)
                pos += run
                continue
            if char in ("[", "{"):
                container: Any = [] if char == "[" else _FirstMember()
                attach(container)
                stack.append(container)
                pos = _WHITESPACE.match(text, pos + 1).end()
                if text.startswith("]" if char == "[" else "}", pos):
                    stack.pop()
                    pos, expect = pos + 1, "next"
                else:
                    expect = "value" if char == "[" else "name"
                continue
            if char == '"':
                value, pos = token(_STRING, pos)
            elif char in _SCALAR_START:
                value, pos = token(_SCALAR, pos)
            else:
                fail("Invalid value.", pos)
            attach(value)
            expect = "next"
        elif expect == "name":
            if not text.startswith('"', pos):
                fail("Missing a name for object member.", pos)
            key, pos = token(_STRING, pos)
            pos = _WHITESPACE.match(text, pos).end()
            if not text.startswith(":", pos):
                fail("Missing a colon after a name of object member.", pos)
            pos += 1
            expect = "value"
        else:  # after a value
            if not stack:
                return root  # kParseStopWhenDoneFlag
            char = text[pos] if pos < size else ""
            close = "]" if isinstance(stack[-1], list) else "}"
            if char == close:
                stack.pop()
                pos += 1
                while pos < size and text[pos] == "]" and stack and isinstance(stack[-1], list):
                    stack.pop()  # a run of closes
                    pos += 1
            elif char == ",":
                pos += 1
                expect = "value" if close == "]" else "name"
            elif close == "]":
                fail("Missing a comma or ']' after an array element.", pos)
            else:
                fail("Missing a comma or '}' after an object member.", pos)
        if pos < size and text[pos] in " \t\n\r":
            pos = _WHITESPACE.match(text, pos).end()
