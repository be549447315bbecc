"""What the exporter writes on stderr: the progress of a long export, and none of
TensorFlow's known start-up noise.

Progress of a long export on stderr: stage lines, and bytes of weights per long stage.

On a terminal a byte counter redraws one line in place (`\\r`), as pip or curl do; otherwise
(a log file, CI) it prints plain lines at most every 10 % so logs stay short. Writes of less
than `min_bytes` print no counter at all: a small export finishes before one would help.

Keep TensorFlow's known start-up noise on a CPU machine off the CLI's stderr, and nothing else.

Importing TensorFlow on a machine without a GPU prints, straight to file descriptor 2 from C++,
absl's "All log messages before absl::InitializeLog() is called are written to STDERR",
cudart_stub's "Could not find cuda drivers on your machine, GPU will not be used" (both twice)
and, once the devices are listed, `E0000 ... failed call to cuInit: ... CUDA error`, which a
user reads as a failure. `TF_CPP_MIN_LOG_LEVEL` cannot hide lines logged before absl is
initialised, and its level 3 would hide real errors too. So `import_tensorflow_quietly()` runs
the import and the device listing with fd 2 pointed at a temporary file, then writes back
every line that is not one of those (a cuInit failure only counts as noise when the same
start-up said there is no CUDA driver). TensorFlow's Python deprecation notices ("... is
deprecated and will be removed in a future version", logged on the `tensorflow` logger,
about APIs the exporter and tf2onnx call on purpose) are dropped by a logging filter; every
other record passes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
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


# --- TensorFlow's start-up noise ---
_NOISE = [
    re.compile(p)
    for p in (
        r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
        r"STDERR",
        r"[IW]\d{4} [\d:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your "
        r"machine, GPU will not be used\.",
        r"I\d{4} [\d:. ]+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized .*",
        r"To enable the following instructions: .* rebuild TensorFlow with the appropriate "
        r"compiler flags\.",
        r"I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\..*",
    )
]
_NO_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT = re.compile(r"E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*")


def known_noise(lines: list[str]) -> list[bool]:
    """For each line TensorFlow printed at start-up: is it known noise on a CPU machine?"""
    no_driver = any(_NO_DRIVER in line for line in lines)
    return [
        any(p.fullmatch(line) for p in _NOISE) or bool(no_driver and _CUINIT.fullmatch(line))
        for line in lines
    ]


class _NoDeprecationNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "is deprecated and will be removed" not in record.getMessage()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and list its devices, keeping only the start-up lines that matter."""
    if "tensorflow" not in sys.modules:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                lines = sink.read().decode("utf-8", "replace").splitlines()
                kept = [
                    line for line, noise in zip(lines, known_noise(lines), strict=True) if not noise
                ]
                if kept:
                    with contextlib.suppress(OSError):
                        sys.stderr.write("\n".join(kept) + "\n")
                        sys.stderr.flush()
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NoDeprecationNotices) for f in logger.filters):
        logger.addFilter(_NoDeprecationNotices())
