"""Keep TensorFlow's known start-up noise on a CPU machine off the CLI's stderr, and nothing else.

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
