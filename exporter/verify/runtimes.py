"""The runtimes a parity check can run an artifact on, and which of them run by default.

`--runtimes` names them (comma-separated): the SavedModel through TensorFlow's Python loader
and through its C++ loader (the one TF Serving links), the ONNX file through ONNX Runtime and,
on request, through ONNX's own reference evaluator (the spec in code, for users who deploy
ONNX to other runtimes). A runtime whose artifact was not produced is skipped, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exporter.errors import UsageError


@dataclass(frozen=True)
class Runtime:
    """One parity candidate: the artifact it runs and what it is."""

    name: str
    artifact: str  # "savedmodel" or "onnx"
    description: str
    default: bool


RUNTIMES = {
    r.name: r
    for r in (
        Runtime("savedmodel", "savedmodel", "TF1 Session via the Python loader", True),
        Runtime(
            "savedmodel_cpp",
            "savedmodel",
            "TF_LoadSessionFromSavedModel: the C++ loader TF Serving links",
            True,
        ),
        Runtime("onnxruntime", "onnx", "ONNX Runtime, CPU", True),
        Runtime(
            "onnx_reference",
            "onnx",
            "onnx.reference.ReferenceEvaluator: the ONNX spec in code (slow; opt-in)",
            False,
        ),
    )
}
DEFAULT_RUNTIMES = tuple(name for name, r in RUNTIMES.items() if r.default)


def check_runtimes(names: Iterable[str], formats: Iterable[str] = ()) -> tuple[str, ...]:
    """The requested runtimes in catalogue order, or a UsageError; each of `formats` (the
    artifacts produced) must be run by at least one of them, or its parity goes unchecked."""
    wanted = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in RUNTIMES]
    if unknown or not wanted:
        listing = ", ".join(RUNTIMES)
        raise UsageError(
            f"--runtimes {','.join(wanted) or '(empty)'}: unknown runtime "
            f"{', '.join(unknown) or '(none given)'}. Use a comma-separated subset of {listing} "
            f"(default {','.join(DEFAULT_RUNTIMES)})."
        )
    runtimes = tuple(n for n in RUNTIMES if n in wanted)
    for fmt in formats:
        if not any(RUNTIMES[r].artifact == fmt for r in runtimes):
            able = [r.name for r in RUNTIMES.values() if r.artifact == fmt]
            raise UsageError(
                f"--runtimes {','.join(runtimes)} runs nothing on the {fmt} artifact, so its "
                f"parity would go unchecked: add one of {', '.join(able)}."
            )
    return runtimes


def artifact_of(runtime: str) -> str:
    """The artifact (format) a runtime runs: what to drop when it disagrees."""
    return RUNTIMES[runtime].artifact if runtime in RUNTIMES else runtime
