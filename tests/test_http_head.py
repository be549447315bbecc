"""serving.http_head: request heads read as `http.server` reads them (same values, same limits),
without `email`'s parser on the common form."""

from __future__ import annotations

import http.client
import io

import pytest

from serving import http_head

HEADS = [
    b"Host: a\r\nContent-Length: 12\r\nContent-Type: application/json\r\n\r\n",
    b"host: a\r\nCONTENT-LENGTH:12\r\nX-Empty:\r\nX-Tab:\t v \r\n\r\n",  # case, blanks, empty
    b"X-A: 1\r\nX-A: 2\r\nx-a: 3\r\n\r\n",  # repeated: the first wins
    b"X-Latin: caf\xe9\r\nX-Colon: a: b\r\n\n",  # latin-1 bytes, a colon in the value, LF end
    b"Host: a\r\nX-Folded: one\r\n two\r\n\r\n",  # obsolete line folding: email's parser
    b"Host: a\r\nnot a header line\r\nX-After: 1\r\n\r\n",  # no colon: email's parser
    b"Host: a\r\nX-CR: a\rb\r\n\r\n",  # a lone CR: email's parser splits there
    b"From nobody\r\nHost: a\r\n\r\n",  # mbox From line: email's parser
    b"Bad Name: 1\r\nHost: a\r\n\r\n",  # a space in the name: email's parser
    b"Host: a\r\n",  # the head ends without its blank line
]
NAMES = ["host", "Content-Length", "content-type", "X-Empty", "X-Tab", "X-A", "X-Latin"]
NAMES += ["X-Colon", "X-Folded", "X-After", "X-CR", "Bad Name", "Missing"]


@pytest.mark.parametrize("head", HEADS)
def test_header_values_are_the_stdlibs(head: bytes) -> None:
    ours = http_head.read_headers(io.BytesIO(head + b"BODY"), http.client.HTTPMessage)
    stdlib = http.client.parse_headers(io.BytesIO(head + b"BODY"))
    for name in NAMES:
        assert ours.get(name) == stdlib.get(name), name
        assert ours.get(name, "-") == stdlib.get(name, "-"), name


def test_the_common_form_skips_emails_parser() -> None:
    assert isinstance(http_head.read_headers(io.BytesIO(HEADS[0]), dict), http_head.Headers)
    folded = http_head.read_headers(io.BytesIO(HEADS[4]), http.client.HTTPMessage)
    assert isinstance(folded, http.client.HTTPMessage)


def test_limits_are_the_stdlibs() -> None:
    long_line = b"X: " + b"a" * http_head.MAX_LINE + b"\r\n\r\n"
    with pytest.raises(http.client.LineTooLong):
        http.client.parse_headers(io.BytesIO(long_line))
    with pytest.raises(http.client.LineTooLong):
        http_head.read_headers(io.BytesIO(long_line), http.client.HTTPMessage)
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(http_head.MAX_HEADERS + 1)) + b"\r\n"
    with pytest.raises(http.client.HTTPException, match="got more than 100 headers"):
        http_head.read_headers(io.BytesIO(many), http.client.HTTPMessage)
    with pytest.raises(http.client.HTTPException, match="got more than 100 headers"):
        http.client.parse_headers(io.BytesIO(many))
    enough = b"".join(b"X-%d: 1\r\n" % i for i in range(http_head.MAX_HEADERS - 1)) + b"\r\n"
    assert http_head.read_headers(io.BytesIO(enough), http.client.HTTPMessage).get("X-98") == "1"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"POST /v1/models/m:predict HTTP/1.1\r\n", ["POST", "/v1/models/m:predict", "HTTP/1.1"]),
        (b"GET /v1/models/m HTTP/1.0\n", ["GET", "/v1/models/m", "HTTP/1.0"]),
        (b"GET  /a \t HTTP/1.1\r\n", ["GET", "/a", "HTTP/1.1"]),  # str.split, as the stdlib
        (b"GET /a HTTP/9.9\r\n", None),  # 505 from the stdlib
        (b"GET /a HTTP/1.01\r\n", None),
        (b"GET /a\r\n", None),  # HTTP/0.9
        (b"GET //a HTTP/1.1\r\n", None),  # the stdlib reduces the leading slashes
        (b"GET /a b HTTP/1.1\r\n", None),  # 400 from the stdlib
        (b"\r\n", None),
    ],
)
def test_only_lines_the_stdlib_accepts_as_they_stand_are_common(
    line: bytes, words: list[str] | None
) -> None:
    assert http_head.common_request_line(line) == words


def test_the_date_is_http_servers() -> None:
    import email.utils
    import time

    before = email.utils.formatdate(time.time(), usegmt=True)
    date = http_head.http_date()
    after = email.utils.formatdate(time.time(), usegmt=True)
    assert date in (before, after)
