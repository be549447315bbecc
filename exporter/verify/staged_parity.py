"""Parity one runtime at a time, so only one runtime's copy of the weights is alive at once.

A restored TF Session and an ONNX Runtime session each hold a full copy of the weights: run
side by side on a 1B-parameter model that is two extra copies. Here the reference (Keras) runs
once per batch and its outputs are kept (outputs are small); each candidate is checked right
after its artifact is written and then released, and the per-runtime reports merge into one.
Every output of every batch is still compared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from exporter.verify.parity import ParityReport, Runner, compare

#: Past this many bytes of weights a forward pass costs a read of all of them: check one batch
#: per batch size instead of `parity_samples` (every output of each batch is still compared).
LARGE_MODEL_BYTES = 256 * 2**20


class StagedParity:
    """Compare candidates with one reference over fixed batches, one candidate at a time."""

    def __init__(
        self,
        reference_name: str,
        reference: Runner,
        batches: list[dict[str, np.ndarray]],
        *,
        atol: float,
        rtol: float,
        batch_sizes: list[int],
        tolerances: Mapping[str, Any] | None = None,
    ) -> None:
        self._reference_name = reference_name
        self._batches = batches
        self._expected: dict[int, dict[str, np.ndarray]] = {}
        self._reference = reference
        self._atol, self._rtol, self._batch_sizes = atol, rtol, batch_sizes
        self._tolerances = tolerances  # output -> exporter.verify.tolerances.Tolerance
        self._reports: list[ParityReport] = []
        self.errors: dict[str, str] = {}  # runtime -> why it could not answer
        self.skipped: dict[str, str] = {}  # runtime -> why it was not run

    def _cached(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = id(batch)  # the same batch objects come back for every candidate
        if key not in self._expected:
            self._expected[key] = self._reference(batch)
        return self._expected[key]

    def check(
        self,
        name: str,
        make_runner: Callable[[], Runner],
        failures: tuple[type[Exception], ...] = (),
    ) -> ParityReport | None:
        """Build the candidate's runner, compare it on every batch, then let it go.

        A `failures` exception (the runtime refused the artifact, or failed on it) is recorded
        in `errors`, which fails the merged report, instead of propagating.
        """
        try:
            report = compare(
                self._reference_name,
                self._cached,
                {name: make_runner()},
                self._batches,
                atol=self._atol,
                rtol=self._rtol,
                batch_sizes=self._batch_sizes,
                tolerances=self._tolerances,
            )
        except failures as exc:
            self.errors[name] = str(exc)
            return None
        self._reports.append(report)
        return report

    def skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason

    def report(self) -> ParityReport:
        """All candidates' comparisons in one report."""
        merged = ParityReport(
            self._reference_name, self._atol, self._rtol, self._batch_sizes, len(self._batches)
        )
        for report in self._reports:
            merged.comparisons.extend(report.comparisons)
        merged.errors.update(self.errors)
        merged.skipped.update(self.skipped)
        return merged


def samples_for(weights_bytes: int, requested: int) -> int:
    """Random batches per batch size: `requested`, or 1 past LARGE_MODEL_BYTES of weights."""
    return min(requested, 1) if weights_bytes > LARGE_MODEL_BYTES else requested
