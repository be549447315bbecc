"""Run an ONNX file on `onnx.reference.ReferenceEvaluator`: the ONNX spec written in Python.

ONNX Runtime is lenient where the spec is not (it runs some ops past what their schema
allows), so agreeing with ORT does not prove a file portable to other runtimes; agreeing with
the reference evaluator does, op by op. It is slow (pure numpy) and does not implement custom
domains (onnxruntime-extensions' string ops): a file using them is named with its ops. What it
finds on the exporter's own models is in docs/onnx_portability.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import OnnxReferenceError
from exporter.verify.parity import Runner
from serving.onnx_servable import ort_strings

#: Domains the reference evaluator implements (the standard ones).
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def custom_ops(model: Any) -> list[str]:
    """`domain.Op` of every node outside the standard domains (sorted, unique)."""
    return sorted(
        {f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS}
    )


def reference_runner(path: Path) -> Runner:
    """A parity Runner over `path` (external data read from its directory)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    custom = custom_ops(model)
    if custom:
        raise OnnxReferenceError(
            f"{path} uses ops outside the ONNX standard ({', '.join(custom)}); "
            "onnx.reference.ReferenceEvaluator, like any runtime without onnxruntime-extensions, "
            "cannot run it. Deploy it on ONNX Runtime with onnxruntime-extensions, or drop "
            "onnx_reference from --runtimes."
        )
    try:
        evaluator = ReferenceEvaluator(model)
    except (NotImplementedError, RuntimeError, TypeError, ValueError) as exc:
        raise OnnxReferenceError(
            f"onnx.reference.ReferenceEvaluator cannot load {path}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    names = [o.name for o in model.graph.output]

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: ort_strings(v) for k, v in batch.items()}
        try:
            outputs = evaluator.run(None, feeds)
        except Exception as exc:  # the evaluator raises whatever numpy raises inside an op
            raise OnnxReferenceError(
                f"onnx.reference.ReferenceEvaluator failed to run {path}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc
        return dict(zip(names, outputs, strict=True))

    return run
