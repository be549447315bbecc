"""Every `keras.applications` architecture, exported by the CLI with default flags.

`tests/applications.py` builds each one as a user would (random weights, smallest input, a
trained scalar on the head) and saves it; `python -m exporter export` must then produce both
formats, frozen, with parity through the SavedModel (Python and C++ loaders) and ONNX Runtime,
and the embedded server must agree with the SavedModel over gRPC and REST. A handful runs in
`make test`; the rest are `slow` (`make test-all`), one export each (minutes on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from exporter.cli import main as exporter_main
from exporter.options import ParityOptions
from exporter.verify.parity import onnx_runner
from tests import applications

#: The largest (ConvNeXtXLarge: 350M parameters) take tens of minutes on 2 shared cores.
SLOW_TIMEOUT_S = 3600
ARCHITECTURES = [
    arch
    if arch in applications.DEFAULT
    else pytest.param(arch, marks=[pytest.mark.slow, pytest.mark.timeout(SLOW_TIMEOUT_S)])
    for arch in applications.ARCHITECTURES
]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_architecture_exports_both_formats_with_parity(
    arch: str, tmp_path: Path, server: Any
) -> None:
    from exporter.verify.served_parity import run_parity

    source = applications.save(arch, tmp_path)
    out = tmp_path / "out"
    assert exporter_main(applications.export_argv(arch, source, out)) == 0
    name = arch.lower()
    report = json.loads((out / "reports" / name / "1.json").read_text())
    assert report["passed"] and report["formats"]["produced"] == ["savedmodel", "onnx"]
    assert (
        report["freeze_proof"]["proven"] and report["freeze_proof"]["variable_ops_remaining"] == []
    )
    rows = report["parity"]["comparisons"]
    assert {c["runtime"] for c in rows} == {"savedmodel", "savedmodel_cpp", "onnxruntime"}
    (scalar,) = [s for s in report["scalars"] if s["name"].endswith("scale")]
    assert scalar["value"] != 1.0 and scalar["savedmodel_const_bit_exact"] is True
    # Learned scales (only ConvNeXt carries any): each found bit-exact in both artifacts; the
    # random backbone is frozen, so they are reported untrained, with a warning.
    scales = report["learned_scales"]
    groups = {"LayerScale.gamma", "LayerNormalization.gamma"} if "ConvNeXt" in arch else set()
    assert {r["group"] for r in scales} == groups
    for row in scales:
        assert row["savedmodel_bit_exact"] is True and row["onnx_note"].endswith("bit-exact")
        assert (row["trainable"], row["unchanged_since_init"]) == (False, True)
    assert any("frozen" in w and "learned scale" in w for w in report["warnings"]) == bool(scales)
    onnx.checker.check_model(report["artifacts"]["onnx_path"], full_check=True)
    if arch.startswith(("ConvNeXt", "RegNet")):  # grouped convolutions: calls inlined
        assert set(report["onnx"]["rewrites"]) & {"StatefulPartitionedCall", "PartitionedCall"}
    # Parity is not vacuous: the exported model's answer depends on its input.
    run = onnx_runner(report["artifacts"]["onnx_path"])
    size = applications.input_size(arch)
    images = np.random.default_rng(1).standard_normal((2, size, size, 3)).astype("float32")
    logits = run({"image": images})["logits"]
    assert np.abs(logits[0] - logits[1]).max() > 1e-4, logits
    if server.embedded:
        # The tolerance the export's gate used: the float32 default, its atol widened to the
        # model's own float32 spread where that is larger (the row's reason says which).
        assert all(c["tolerance"].startswith("float32 output") for c in rows), rows
        ((atol, rtol),) = {(c["atol"], c["rtol"]) for c in rows}
        options = ParityOptions(samples=1, batch_sizes=(2,), atol=atol, rtol=rtol)
        served = run_parity(out, name, options)
        assert {"grpc", "rest"} <= {c.runtime for c in served.comparisons}, served.errors
        assert served.passed, served.table()
