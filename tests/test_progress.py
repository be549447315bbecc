"""Export progress: plain lines off a terminal, one redrawn line on it, silence when asked."""

from __future__ import annotations

import io

from exporter.progress import ExportProgress

MIB = 2**20


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _write(progress: ExportProgress, total: int, steps: int = 20) -> None:
    progress.stage("savedmodel: writing version 1")
    for i in range(1, steps + 1):
        progress.weights("savedmodel: variables written", total * i // steps, total)
    progress.stage("parity: Keras vs savedmodel")


def test_plain_lines_every_tenth_when_not_a_terminal() -> None:
    stream = io.StringIO()
    _write(ExportProgress(stream, min_bytes=MIB), 400 * MIB)
    lines = stream.getvalue().splitlines()
    counters = [line for line in lines if "variables written" in line]
    assert "\r" not in stream.getvalue()
    assert 9 <= len(counters) <= 11, counters  # ~every 10 %, not every call
    assert counters[-1].startswith(
        "[export] savedmodel: variables written: 400.00 MiB / 400.00 MiB"
    )
    assert "(100%" in counters[-1]
    assert lines[0] == "[export] savedmodel: writing version 1"
    assert lines[-1] == "[export] parity: Keras vs savedmodel"


def test_one_redrawn_line_on_a_terminal() -> None:
    stream = _Terminal()
    _write(ExportProgress(stream, min_bytes=MIB), 400 * MIB)
    text = stream.getvalue()
    assert text.count("\r") == 20  # every update redraws in place
    # The counter's line is ended once, before the next stage line.
    assert text.count("\n") == 3
    assert text.endswith("[export] parity: Keras vs savedmodel\n")


def test_small_exports_show_stages_only_and_quiet_shows_nothing() -> None:
    small = io.StringIO()
    _write(ExportProgress(small, min_bytes=256 * MIB), 10 * MIB)
    assert "variables written" not in small.getvalue()
    assert small.getvalue().count("\n") == 2
    quiet = io.StringIO()
    _write(ExportProgress(quiet, quiet=True, min_bytes=0), 400 * MIB)
    assert quiet.getvalue() == ""
