"""`python -m exporter parity`: every model of the exporter's test set is served and agrees across
Keras, the SavedModel, ONNX Runtime, gRPC and REST; violations exit 1, bad usage exits 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter.cli import main as cli_main
from exporter.options import ParityOptions
from exporter.verify.served_parity import run_parity
from tests.conftest import REPO_ROOT

EXPORTER_MODELS = [
    "reference",
    "multi_io",
    "cond",
    "subclassed",
    "embedding",
    "loss_weighting",
    "recipe1",
]
ALL_RUNTIMES = {
    "savedmodel", "savedmodel_cpp", "onnxruntime", "grpc", "rest",
    "v2-grpc", "v2-rest", "v2-grpc/onnx", "v2-rest/onnx",
}  # fmt: skip
SERVED_SAVEDMODEL = ("grpc", "rest", "v2-grpc", "v2-rest")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exporter's artifacts for its whole test set, in one OUT directory."""
    from exporter import export_model
    from tests import models

    out = tmp_path_factory.mktemp("exported")
    for name in EXPORTER_MODELS:
        export_model(getattr(models, f"{name}_model")(), out, name)
    return out


@pytest.mark.parametrize("name", EXPORTER_MODELS)
def test_exported_model_agrees_everywhere(server: Any, exported: Path, name: str) -> None:
    """Embedded server over the export (it is started and stopped by run_parity)."""
    if not server.embedded:
        pytest.skip("a remote server does not serve this session's fresh exports")
    report = run_parity(
        exported, name, ParityOptions(model=f"tests.models:{name}_model", samples=2)
    )
    assert report.reference == "keras"
    assert {c.runtime for c in report.comparisons} == ALL_RUNTIMES
    assert report.errors == {} and report.skipped == {}
    assert report.batch_sizes == [1, 4] and report.samples == 4
    assert report.passed, report.table()
    assert max(c.max_abs for c in report.comparisons if c.runtime in SERVED_SAVEDMODEL) == 0.0
    # The ONNX model through the v2 protocol answers exactly what ONNX Runtime in-process does.
    by_key = {(c.runtime, c.output): c.max_abs for c in report.comparisons}
    for (runtime, output), max_abs in by_key.items():
        if runtime.endswith("/onnx"):
            assert max_abs == by_key[("onnxruntime", output)]


@pytest.fixture
def tampered(model_repo: Path, tmp_path: Path) -> Path:
    """half_plus_two whose version-2 ONNX is really version 1's: off by exactly 1.0."""
    out = tmp_path / "out"
    shutil.copytree(model_repo / "tfserving" / "half_plus_two", out / "tfserving" / "half_plus_two")
    onnx_dir = out / "onnx" / "half_plus_two"
    shutil.copytree(model_repo / "onnx" / "half_plus_two", onnx_dir)
    shutil.copy(onnx_dir / "1" / "model.onnx", onnx_dir / "2" / "model.onnx")
    return out


def test_tolerance_violation_exits_1_with_table_and_json(
    server: Any, tampered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "parity.json"
    argv = [
        "--export",
        str(tampered),
        "--model-name",
        "half_plus_two",
        "--target",
        server.grpc_target,
        "--samples",
        "2",
        "--json",
        str(report_path),
    ]
    if server.rest_target:
        argv += ["--rest-target", server.rest_target]
    assert main(argv) == 1
    table = capsys.readouterr().out
    assert (
        "onnxruntime" in table
        and "FAILED" in table
        and table.rstrip().endswith("runtime error(s))")
    )
    doc = json.loads(report_path.read_text())
    assert doc["passed"] is False and doc["version"] == 2
    by_runtime = {c["runtime"]: c for c in doc["comparisons"]}
    assert by_runtime["onnxruntime"]["passed"] is False
    assert by_runtime["onnxruntime"]["max_abs"] == pytest.approx(1.0)
    assert by_runtime["grpc"]["passed"] is True and by_runtime["grpc"]["max_abs"] == 0.0


def test_v2_rows_catch_the_tampered_onnx_model(tampered: Path) -> None:
    """Embedded: the v2 rows of the ONNX model carry the tamper, the SavedModel's do not."""
    from exporter.onnx_format.triton import triton_config

    vector = {"dtype": "float32", "shape": [None]}
    signature = {"inputs": {"x": vector}, "outputs": {"y": vector}}
    config = triton_config("half_plus_two", signature)
    (tampered / "onnx" / "half_plus_two" / "config.pbtxt").write_text(config)
    report = run_parity(tampered, "half_plus_two", ParityOptions(samples=2))
    assert report.errors == {}, report.errors
    by_runtime = {c.runtime: c for c in report.comparisons}
    for runtime in ("onnxruntime", "v2-grpc/onnx", "v2-rest/onnx"):
        assert by_runtime[runtime].max_abs == pytest.approx(1.0), runtime
        assert not by_runtime[runtime].passed
    for runtime in SERVED_SAVEDMODEL:
        assert by_runtime[runtime].max_abs == 0.0 and by_runtime[runtime].passed


def test_user_inputs_join_the_random_batches(server: Any, model_repo: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.array([0.0, -1.5, 1e6], dtype=np.float64))  # cast to float32
    options = ParityOptions(
        target=server.grpc_target,
        rest_target=server.rest_target,
        samples=1,
        batch_sizes=[1, 3],
        inputs=[inputs],
    )
    report = run_parity(model_repo, "half_plus_two", options)
    assert report.samples == 3
    assert report.passed, report.table()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--export", "/nonexistent/out", "--model-name", "m"],
            "error: --export /nonexistent/out: no such directory (run the exporter first)",
        ),
        (
            ["--export", "{repo}", "--model-name", "missing"],
            "error: {repo}/tfserving/missing: no such model directory (check --model-name)",
        ),
        (
            ["--export", "{repo}", "--model_name", "half_plus_two", "--version", "9"],
            "error: {repo}/tfserving/half_plus_two/9/saved_model.pb does not exist"
            " (check --version)",
        ),
        (
            ["--export", "{repo}", "--model-name", "half_plus_two", "--inputs", "{repo}/x.npz"],
            "error: --inputs {repo}/x.npz: no such file. Check the path.",
        ),
        (
            ["--export", "{repo}", "--model-name", "half_plus_two", "--batch-sizes", "1,x"],
            "error: --batch-sizes '1,x': invalid literal for int() with base 10: 'x'",
        ),
        (
            ["--export", "{repo}", "--model-name", "half_plus_two", "--rest-target", "h:1"],
            "error: --rest-target needs --target (the embedded server has both)",
        ),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    model_repo: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{repo}", str(model_repo)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == message.replace("{repo}", str(model_repo))


def main(argv: list[str]) -> int:
    """`python -m exporter parity ARGV`, in-process."""
    return cli_main(["parity", *argv])


def test_cli_entry_point_dispatches_parity(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "parity",
            "--export",
            str(tmp_path / "none"),
            "--custom_objects",
            "unused",
            "--model-name",
            "m",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --export {tmp_path / 'none'}: no such directory (run the exporter first)"
    )
