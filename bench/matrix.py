"""Benchmark: export time and peak memory of every real-architecture matrix model.

The models are the test suite's matrix (`tests/matrix_models.py`, `tests/matrix_legacy.py`)
and every `keras.applications` architecture (`tests/applications.py`): each is built, trained
briefly and saved in one fresh interpreter, then exported exactly as a user would, through
`python -m exporter export` with default flags (load included), in another, while RSS is
sampled. One line per model: time, peak RSS (and above the imports' baseline), tables,
formats, parity rows, rewrites used. `python -m bench.matrix --run NAME ...` runs a subset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common

LEGACY = ("legacy_h5", "legacy_savedmodel")
QUICK = ("string_lookup", "integer_lookup")


def models() -> tuple[str, ...]:
    """Every matrix model name (Keras 3, the tf_keras files, then keras.applications)."""
    from tests.applications import ARCHITECTURES
    from tests.matrix_models import KERAS3

    return (*KERAS3, *LEGACY, *ARCHITECTURES)


def make(name: str, directory: Path) -> Path:
    """Build, train briefly and save `name` the way a user hands it to the CLI."""
    from tests import applications, matrix_legacy, matrix_models

    if name in applications.ARCHITECTURES:
        return applications.save(name, directory)
    if name in LEGACY:
        return matrix_legacy.save_legacy(directory)[name]
    return matrix_models.save_keras3(name, directory)[0]


def _argv(name: str, source: str, out: Path) -> list[str]:
    from tests import applications

    if name in applications.ARCHITECTURES:
        return applications.export_argv(name, Path(source), out)
    argv = ["export", "--model", source, "--name", name, "--out", str(out)]
    return argv + (["--custom-objects", "tests.matrix_legacy"] if name in LEGACY else [])


def worker(name: str, source: str) -> dict[str, Any]:
    """Time the CLI export of a saved model (load included) in a fresh process.

    The baseline is this interpreter with TF and the exporter imported, before the model is
    loaded: the peak above it is what exporting this model costs.
    """
    import exporter.export  # noqa: F401  (imports TF, Keras, tf2onnx: not the model's cost)
    from exporter.cli import main as exporter_main

    out = Path(tempfile.mkdtemp(prefix=f"bench-matrix-{name}-"))
    argv = _argv(name, source, out)
    try:
        baseline = common.rss_bytes()
        with common.RssSampler() as sampler:
            start = time.perf_counter()
            code = exporter_main(argv)
            elapsed = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"export of {name} exited {code}")
        report = json.loads(
            (out / "reports" / argv[argv.index("--name") + 1] / "1.json").read_text()
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "model": name,
        "time_s": elapsed,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": sampler.peak,
        "peak_above_baseline_bytes": sampler.peak - baseline,
        "tables": len(report["freeze_proof"]["tables"]),
        "constants": len(report["freeze_proof"]["constants"]),
        "formats": report["formats"]["produced"],
        "parity_passed": report["parity"]["passed"],
        "parity": _worst_by_runtime(report["parity"]["comparisons"], "max_abs"),
        "parity_rel": _worst_by_runtime(report["parity"]["comparisons"], "max_rel"),
        "rewrites": (report["onnx"] or {}).get("rewrites", {}),
        "weights_bytes": report["weights_bytes"],
    }


def run(names: Sequence[str] | None = None, results_dir: Path = common.RESULTS_DIR) -> dict:
    """Export every model in its own process; print one line each; write matrix.json."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-matrix-models-") as tmp:
        for name in names or models():
            rows.append(_measure(name, Path(tmp)))
    payload = {"benchmark": "matrix", "rows": rows}
    common.write_result("matrix", payload, results_dir)
    return payload


def _measure(name: str, directory: Path) -> dict[str, Any]:
    """Make the model in one fresh process, export it in another; print its line."""
    made = common.run_worker("bench.matrix", ["--make", name, str(directory)], timeout_s=2400)
    if "error" in made:
        row = {"model": name, **made}
    else:
        row = common.run_worker("bench.matrix", ["--worker", name, made["path"]], timeout_s=2400)
        row.setdefault("model", name)
    if "error" in row:
        print(f"  matrix {name:20s} FAILED: {row['error'].splitlines()[-1]}", flush=True)
    else:
        print(
            f"  matrix {name:20s} export {row['time_s']:6.2f} s, peak RSS "
            f"{row['peak_rss_bytes'] / 2**20:7.1f} MiB "
            f"(+{row['peak_above_baseline_bytes'] / 2**20:6.1f} MiB to load and export), "
            f"{row['tables']} tables, {'+'.join(row['formats'])}, parity "
            + ", ".join(
                f"{k} {v:.1e} (rel {row['parity_rel'].get(k, 0.0):.0e})"
                for k, v in row["parity"].items()
            )
            + f", rewrites {_rewrites(row['rewrites'])}",
            flush=True,
        )
    return row


def _worst_by_runtime(comparisons: list[dict[str, Any]], key: str) -> dict[str, float]:
    """The largest `key` error (max_abs: |runtime - Keras|; max_rel) over a runtime's outputs."""
    worst: dict[str, float] = {}
    for c in comparisons:
        worst[c["runtime"]] = max(worst.get(c["runtime"], 0.0), float(c[key]))
    return worst


def _rewrites(counts: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items())) or "none"


def main(argv: Sequence[str] | None = None) -> int:
    """`--run NAME ...` measures a subset (results to bench/results/matrix.json); the worker
    entry points are `--make NAME DIR` and `--worker NAME PATH`; the suite calls `run()`."""
    p = argparse.ArgumentParser(prog="python -m bench.matrix")
    p.add_argument("--run", nargs="+", metavar="MODEL", choices=models())
    p.add_argument("--results", type=Path, default=common.RESULTS_DIR, help="with --run")
    p.add_argument("--make", nargs=2, metavar=("MODEL", "DIR"))
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "PATH"))
    args = p.parse_args(argv)
    if args.run:
        run(args.run, results_dir=args.results)
    elif args.make:
        print(json.dumps({"path": str(make(args.make[0], Path(args.make[1])))}))
    elif args.worker:
        print(json.dumps(worker(*args.worker)))
    else:
        p.error("pass --make or --worker (the suite runs through `python -m bench`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
