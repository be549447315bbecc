"""The REST front end's HTTP/1.x request heads, read without `email`'s parser, and reply dates.

`http.server` reads a request's header lines with `http.client.parse_headers`, which runs
`email`'s FeedParser over them: under 8 keep-alive clients py-spy put a fifth of a REST
predict's GIL time there. This module reads the same lines under the same limits (65,536 bytes
a line, 100 lines, the stdlib's errors) and parses the common form itself: a three-word request
line of HTTP/1.0 or 1.1, then `Name: value` lines. Anything else (continuation lines, a lone
CR, a name outside RFC 5322's printable characters, HTTP/0.9 or 2.0 lines) goes to the stdlib
parser, so an unusual request gets exactly the answer `http.server` gives it. Header values
are those `email.message.Message.get` returns: the first of repeated names, case-insensitive,
leading blanks removed, trailing ones kept.
"""

from __future__ import annotations

import email.parser
import email.utils
import http.client
import re
import time
from collections.abc import Iterator
from typing import Any

MAX_LINE = 65536  # http.client._MAXLINE
MAX_HEADERS = 100  # http.client._MAXHEADERS
_COMMON_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
# email.feedparser's headerRE ([\041-\071\073-\176]+ then a colon), one line, no CR inside.
_FIELD = re.compile(rb"([!-9;-~]+):[ \t]*([^\r\n]*)\r?\n")
_date: tuple[int, str] = (0, "")


class Headers:
    """A request's header fields, looked up as `email.message.Message.get` does."""

    __slots__ = ("_fields", "_first")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._first: dict[str, str] = {}
        for name, value in fields:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def __str__(self) -> str:
        return "".join(f"{name}: {value}\n" for name, value in self._fields) + "\n"


def common_request_line(raw: bytes) -> list[str] | None:
    """[method, path, version] of a request line `parse_request` would accept as it stands
    (three words, HTTP/1.0 or 1.1, a path not starting `//`); None for any other line, which
    `http.server` then parses (and refuses) itself."""
    words = str(raw, "iso-8859-1").rstrip("\r\n").split()
    if len(words) != 3 or words[2] not in _COMMON_VERSIONS or words[1].startswith("//"):
        return None
    return words


def read_headers(rfile: Any, message_class: type) -> Any:
    """`http.client.parse_headers`: the header lines up to the blank one (LineTooLong past
    MAX_LINE, HTTPException past MAX_HEADERS), as Headers when every line is `Name: value`,
    else as the stdlib's `message_class` from `email`'s parser."""
    lines = []
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    fields = []
    for line in lines[:-1]:
        match = _FIELD.fullmatch(line)
        if match is None:
            text = b"".join(lines).decode("iso-8859-1")
            return email.parser.Parser(_class=message_class).parsestr(text)
        fields.append((match[1].decode("iso-8859-1"), match[2].decode("iso-8859-1")))
    return Headers(fields)


def http_date() -> str:
    """`BaseHTTPRequestHandler.date_time_string()` for now, formatted once a second."""
    global _date
    now = int(time.time())
    second, text = _date
    if second != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date = (now, text)
    return text
