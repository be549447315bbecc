"""Exit codes as the README states them: 1 a check failed, 2 the caller's to fix (bad usage,
an unwritable or full output), each with one `error:` line, and nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import errors
from exporter.cli import EXIT_CHECK_FAILED, EXIT_USAGE, _exit_code_and_message
from exporter.options import ExportOptions, ParityOptions
from tests.conftest import REPO_ROOT, one_error_line, run_cli, tree

REFERENCE = "tests.models:reference_model"

UNCONVERTIBLE = """
import keras
import tensorflow as tf


class LogGamma(keras.layers.Layer):
    def call(self, x):
        return tf.math.lgamma(tf.abs(x) + 1.0)


def lgamma():
    x = keras.Input((4,), name="x")
    return keras.Model(x, keras.layers.Dense(2)(LogGamma(name="log_gamma")(x)))
"""


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ExportError("onnx.checker rejected the converted model"), EXIT_CHECK_FAILED),
        (errors.ExportError("ONNX Runtime cannot load the converted model"), EXIT_CHECK_FAILED),
        (errors.ExportError("checkpoint does not hold the trained bytes"), EXIT_CHECK_FAILED),
        (errors.FreezeError("proof failed"), EXIT_CHECK_FAILED),
        (errors.ParityError("disagree"), EXIT_CHECK_FAILED),
        (errors.AuditError("untracked"), EXIT_CHECK_FAILED),
        (errors.ServingCompatError("op missing"), EXIT_CHECK_FAILED),
        (errors.UsageError("--atol=-1"), EXIT_USAGE),
        (errors.OutputError("No space left on device"), EXIT_USAGE),
        (errors.ParityUsageError("no export"), EXIT_USAGE),
        (errors.ModelLoadError("missing"), EXIT_USAGE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_error_class_decides_the_exit_code(error: Exception, code: int) -> None:
    assert _exit_code_and_message(error) == (code, str(error))


BAD_OPTIONS = [
    ({"atol": -1.0}, "--atol=-1.0: a tolerance must be a finite number >= 0"),
    ({"rtol": float("nan")}, "--rtol=nan"),
    ({"formats": ""}, "--formats is empty"),
    ({"formats": ("tflite",)}, "unknown format tflite"),
    ({"version": 0}, "--version=0"),
    ({"opset": 3}, "--opset=3"),
    ({"warmup_requests": 1001}, "at most 1000 warmup records"),
    ({"max_frozen_bytes": -1}, "--max-frozen-bytes=-1"),
    ({"serving_version": "two"}, "--serving-version='two' is not a version"),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_OPTIONS, ids=[str(f) for f, _ in BAD_OPTIONS])
def test_export_options_are_validated_once_when_built(fields: dict, expected: str) -> None:
    with pytest.raises(errors.ExporterError) as err:
        ExportOptions(**fields)
    assert expected in str(err.value)


def test_options_are_frozen_and_canonical() -> None:
    options = ExportOptions(formats="onnx, savedmodel,onnx")
    assert options.formats == ("savedmodel", "onnx")
    assert ExportOptions(onnx_only=True).formats == ("onnx",)
    with pytest.raises(AttributeError):
        options.atol = 1.0  # type: ignore[misc]
    with pytest.raises(errors.UsageError, match="--rest-target needs --target"):
        ParityOptions(rest_target="127.0.0.1:8501")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--atol", "-1"], "--atol=-1.0"),
        (["--formats", ""], "--formats is empty"),
        (["--warmup_requests", "5000"], "--warmup-requests=5000"),  # underscore spelling
        (["--max-frozen-bytes", "lots"], "is not a size"),
    ],
)
def test_bad_export_flag_exits_2_before_anything_is_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    argv = ["export", "--model", REFERENCE, "--name", "m", "--out", str(out), *flags]
    if flags[0] == "--max-frozen-bytes":  # an argparse type error
        with pytest.raises(SystemExit) as exit_info:
            run_cli(capsys, *argv)
        code, err = exit_info.value.code, capsys.readouterr().err
    else:
        code, _, err = run_cli(capsys, *argv)
    assert code == EXIT_USAGE
    assert expected in one_error_line(err)
    assert not out.exists()


def test_failed_conversion_exits_1_and_publishes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    factory = tmp_path / "factories.py"
    factory.write_text(UNCONVERTIBLE)
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "export", "--model", f"{factory}:lgamma", "--name", "m", "--out", str(out)
    )
    assert code == EXIT_CHECK_FAILED
    line = one_error_line(err)
    assert (
        line.startswith("error: tf2onnx cannot convert Lgamma") and "--formats savedmodel" in line
    )
    assert err.rstrip().splitlines()[-1] == line
    assert tree(out) == [] if out.exists() else True


@pytest.mark.parametrize(
    "size",
    ["4k", "16k"],
    ids=["tensorflow-writes-saved_model.pb", "python-writes-the-report"],
)
def test_full_disk_exits_2_says_what_to_free_and_leaves_nothing(tmp_path: Path, size: str) -> None:
    """A real ENOSPC: the export runs on a tiny tmpfs (a private mount namespace, so no
    privileges and nothing outside the test changes). At 4 KiB TensorFlow's own writer of
    saved_model.pb (7 KB) hits it, at 16 KiB the SavedModel fits and Python's write of the
    report does not."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux's unshare is needed to mount a small tmpfs for this test"
    out = tmp_path / "out"
    out.mkdir()
    script = (
        f'mount -t tmpfs -o size={size} tmpfs "{out}" || exit 99\n'
        f'"{sys.executable}" -m exporter export --model {REFERENCE} --name m --out "{out}"\n'
        "code=$?\n"
        f'echo "left:"; find "{out}" -mindepth 1\n'
        "exit $code\n"
    )
    result = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 99, f"could not mount a tmpfs: {result.stderr}"
    assert result.returncode == EXIT_USAGE, result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith("error: No space left on device writing "), line
    assert re.search(
        r"are free there and the export writes about \d+ KB; free \S+ [KMG]B or "
        r"pass another --out\. Nothing was published\.$",
        line,
    ), line
    assert result.stdout.split("left:")[-1].split() == [], "a failed export left files behind"
