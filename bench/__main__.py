"""`python -m bench [--large] [--quick] [--only NAME ...] [--results DIR]`: run the benchmarks,
write `bench/results/*.json` + PNGs, print the ratios table with each target met/missed.

Default (`make bench`): `--help` latency of both CLIs, export speed at 0.1M/1M/3M/10M/30M
parameters, in-process latency, serving load, and the export time / peak memory of each
real-architecture matrix model and keras.applications architecture (one line each; the
architectures alone take ~1 minute each for the small ones and tens of minutes for the
largest, hours in all on 2 cores: `python -m bench.matrix --run NAME ...` for a subset). `--large`
(`make bench-large`) adds the 100M-parameter export and the >2 GB growth model: each needs
tens of GB or fails; see docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from bench import (
    cli_startup,
    common,
    export_speed,
    large_model,
    latency,
    matrix,
    plots,
    report,
    serving_load,
)

BENCHMARKS = ("cli", "export_speed", "latency", "serving", "matrix", "large_model")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks in order; the table is printed even if one of them failed."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--large", action="store_true", help="add the 100M and >2 GB models")
    p.add_argument("--quick", action="store_true", help="tiny models, few repeats (smoke run)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run just these benchmarks")
    p.add_argument("--results", type=Path, default=common.RESULTS_DIR, help="output directory")
    args = p.parse_args(argv)
    selected = list(args.only or [b for b in BENCHMARKS if b != "large_model" or args.large])
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    print(f"machine: {json.dumps(common.machine_info())}", flush=True)

    if "cli" in selected:
        print("[0/5] --help latency of both CLIs", flush=True)
        cli_startup.run(repeats=2 if args.quick else 5, results_dir=out)
    if "export_speed" in selected:
        print("[1/5] export time and peak RSS vs parameters", flush=True)
        if args.quick:
            sizes, repeats = export_speed.QUICK_SIZES, 1
        else:
            sizes = (*export_speed.SIZES, *((100_000_000,) if args.large else ()))
            repeats = 3
        payload = export_speed.run(
            sizes=sizes, repeats=repeats, target_size=_target_size(args.quick), results_dir=out
        )
        plots.export_scaling(payload, out / "export_scaling.png")
    if "latency" in selected:
        print("[2/5] in-process inference latency", flush=True)
        payload = latency.run(
            params=20_000 if args.quick else 3_000_000, quick=args.quick, results_dir=out
        )
        plots.latency_bars(payload, out / "latency.png")
    if "serving" in selected:
        print("[3/5] embedded server under load", flush=True)
        payload = serving_load.run(
            params=20_000 if args.quick else serving_load.SERVING_PARAMS,
            clients=(1, 8) if args.quick else serving_load.CLIENTS,
            duration_s=0.5 if args.quick else 3.0,
            rounds=1 if args.quick else 2,
            quick=args.quick,
            results_dir=out,
        )
        print(serving_load.table(payload), flush=True)
        plots.serving_curves(payload, out / "serving.png")
    if "matrix" in selected:
        print("[4/5] real-architecture matrix: export time and peak RSS per model", flush=True)
        matrix.run(matrix.QUICK if args.quick else None, results_dir=out)
    if "large_model" in selected:
        print("[5/5] 1M..1B parameters, project vs Keras (opt-in)", flush=True)
        sizes = large_model.QUICK_SIZES if args.quick else large_model.SIZES
        large_model.run(sizes=sizes, results_dir=out)

    targets = report.collect(out, target_size=_target_size(args.quick))
    report.write_summary(targets, out)
    print(f"\nratios (this run, {time.perf_counter() - began:.0f} s total):")
    print(report.table(targets))
    return 0


def _target_size(quick: bool) -> int:
    return export_speed.QUICK_SIZES[-1] if quick else export_speed.TARGET_SIZE


if __name__ == "__main__":
    raise SystemExit(main())
