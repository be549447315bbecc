"""The REST front end's connection reads and writes under `--rest_api_timeout_in_ms`.

Each read waits at most the per-read timeout, and a request head must also be complete within
it from its first byte (a header dripped a byte at a time is cut at the bound); each write of a
reply waits at most the timeout for progress, as libevent's per-connection timeouts do.

Where the kernel offers it (SO_RCVTIMEO / SO_SNDTIMEO: Linux, macOS) the timeouts are socket
options on a blocking socket, set again only when the value changes. A Python socket timeout
instead puts a `poll()` before every `recv` and `send` and an `ioctl` into every
`settimeout`: three more system calls per request, each one a point where the thread drops
the GIL and must queue for it again behind the other connections' threads (strace under 8
clients: 2 polls and an ioctl per request, and twice the futex calls of the bare HTTP floor).
A kernel timeout surfaces as EAGAIN, raised here as the TimeoutError `http.server` and the
handler expect.
"""

from __future__ import annotations

import io
import math
import socket
import struct
import sys
import time
from typing import Any

KERNEL_TIMEOUTS = sys.platform != "win32"  # Windows takes milliseconds and its own errors
_UNSET = -1.0


def _timeval(seconds: float | None) -> bytes:
    """A `struct timeval` for SO_RCVTIMEO/SO_SNDTIMEO; None (or 0) means no timeout, so a
    positive one is at least a microsecond."""
    if not seconds:
        return struct.pack("ll", 0, 0)
    whole, micros = divmod(max(1, math.ceil(seconds * 1e6)), 1_000_000)
    return struct.pack("ll", whole, micros)


def prepare(sock: socket.socket, timeout_s: float | None) -> None:
    """The accepted socket blocking, with the write timeout in the kernel (reads set theirs
    as they go); without kernel timeouts, the socket keeps its Python timeout."""
    if KERNEL_TIMEOUTS:
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout_s))


class HeadDeadlineReader(io.RawIOBase):
    """The connection's reads. Each read waits at most `idle_s` (the per-read timeout); while a
    request head is being read, also no later than `head_s` after its first byte arrived, so a
    header dripped slowly is cut at the bound instead of each byte re-arming the timeout."""

    def __init__(self, sock: socket.socket, idle_s: float | None, head_s: float | None) -> None:
        super().__init__()
        self._sock = sock
        self._idle_s = idle_s
        self._head_s = head_s
        self._in_head = False
        self._deadline: float | None = None
        self._applied: float | None = _UNSET  # the read timeout the socket has now
        self.first_byte_at: float | None = None

    def readable(self) -> bool:
        return True

    def start_head(self) -> None:
        """The next byte read is the first of a request: its head deadline starts there."""
        self._in_head, self._deadline, self.first_byte_at = True, None, None

    def end_head(self) -> None:
        """The head is parsed: the body is read under the per-read timeout only."""
        self._in_head, self._deadline = False, None

    def _apply(self, timeout: float | None) -> None:
        if timeout == self._applied:
            return
        if KERNEL_TIMEOUTS:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
        else:
            self._sock.settimeout(timeout)
        self._applied = timeout

    def readinto(self, buffer: Any) -> int:
        timeout = self._idle_s
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request head not complete within --rest_api_timeout_in_ms")
            timeout = left if timeout is None else min(left, timeout)
        self._apply(timeout)
        try:
            count = self._sock.recv_into(buffer)
        except BlockingIOError:  # SO_RCVTIMEO passed
            raise TimeoutError("timed out") from None
        if count and self._in_head and self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
            if self._head_s is not None:
                self._deadline = self.first_byte_at + self._head_s
        return count


class Writer(io.BufferedIOBase):
    """`socketserver`'s unbuffered socket writer, with SO_SNDTIMEO's EAGAIN as TimeoutError."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            self._sock.sendall(data)
        except BlockingIOError:  # SO_SNDTIMEO passed
            raise TimeoutError("timed out") from None
        with memoryview(data) as view:
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()
