"""Progress of a long export on stderr: stage lines, and bytes of weights per long stage.

On a terminal a byte counter redraws one line in place (`\\r`), as pip or curl do; otherwise
(a log file, CI) it prints plain lines at most every 10 % so logs stay short. Writes of less
than `min_bytes` print no counter at all: a small export finishes before one would help.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

DEFAULT_MIN_BYTES = 256 * 2**20
_PLAIN_STEP = 0.10


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class ExportProgress:
    """`stage(message)` and `weights(label, done, total)`, both to one stream.

    Pass `quiet=True` (`--quiet`) to print nothing at all.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        quiet: bool = False,
        min_bytes: int = DEFAULT_MIN_BYTES,
        prefix: str = "[export]",
    ) -> None:
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._min_bytes = min_bytes
        self._prefix = prefix
        self._tty = self._stream.isatty()
        self._label: str | None = None
        self._started = 0.0
        self._last_fraction = -1.0
        self._open_line = False

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def _end_line(self) -> None:
        if self._open_line:
            self._write("\n")
            self._open_line = False

    def stage(self, message: str) -> None:
        """One line per export stage."""
        if self._quiet:
            return
        self._end_line()
        self._label = None
        self._write(f"{self._prefix} {message}\n")

    def weights(self, label: str, done: int, total: int) -> None:
        """`done` of `total` bytes of weights through `label` (called repeatedly)."""
        if self._quiet or total < self._min_bytes:
            return
        now = time.perf_counter()
        if label != self._label:
            self._end_line()
            self._label, self._started, self._last_fraction = label, now, -1.0
        fraction = done / total
        elapsed = now - self._started
        rate = f", {done / 2**20 / elapsed:.0f} MiB/s" if elapsed > 0 and done else ""
        text = f"{self._prefix} {label}: {_size(done)} / {_size(total)} ({fraction:.0%}{rate})"
        if self._tty:
            self._write(f"\r{text}\x1b[K")
            self._open_line = True
            if done >= total:
                self._end_line()
        elif done >= total or fraction - self._last_fraction >= _PLAIN_STEP:
            self._write(text + "\n")
            self._last_fraction = fraction
