"""Before/after for a proposed exporter patch:
`python -m bench.patch_trial --before DIR0 --patched DIR1`.

Each DIR holds a copy of the `exporter` package (DIR0 defaults to this checkout; pin it with
e.g. `git archive HEAD exporter | tar -x -C DIR0` while others edit the working tree). The
same trained models are exported by both, alternating, each in a fresh process started outside
the repository so that DIR wins on `sys.path`. Writes patch_trial.json (or `--name`.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common, export_speed


def _export_once(root: Path, model: Path, timeout_s: float) -> dict[str, Any]:
    env = common.bench_env()
    env["PYTHONPATH"] = os.pathsep.join((str(root), str(common.REPO_ROOT)))
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.export_speed", "--worker", "project", str(model)],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=timeout_s,
            check=False,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.splitlines()[-1:]}"}
    return json.loads(lines[-1])


def run(
    patched: Path,
    before: Path = common.REPO_ROOT,
    sizes: Sequence[int] = (3_000_000, 10_000_000, 30_000_000),
    repeats: int = 2,
    results_dir: Path = common.RESULTS_DIR,
    name: str = "patch_trial",
) -> dict[str, Any]:
    """Alternate before/after exports per size; keep the fastest of each."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        models = export_speed.make_models(sizes, Path(tmp))
        for size in sizes:
            runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
            for _ in range(repeats):
                for label, root in (("before", before), ("after", patched)):
                    runs[label].append(_export_once(root, models[size], 1800))
            for label, results in runs.items():
                good = [r for r in results if "error" not in r]
                best = min(good, key=lambda r: r["time_s"]) if good else results[0]
                rows.append({"which": label, "target_params": size, **best})
                if good:
                    print(
                        f"  {label:6s} {size:>11,d}: {best['time_s']:6.2f} s, "
                        f"+{best['peak_above_baseline_bytes'] / 2**20:7.0f} MiB",
                        flush=True,
                    )
    payload = {
        "benchmark": "patch_trial",
        "before_root": str(before),
        "patched_root": str(patched),
        "rows": rows,
    }
    common.write_result(name, payload, results_dir)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: the patched exporter's directory, optional sizes."""
    p = argparse.ArgumentParser(prog="python -m bench.patch_trial", description=__doc__)
    p.add_argument("--patched", type=Path, required=True, help="dir containing exporter/")
    p.add_argument("--before", type=Path, default=common.REPO_ROOT, help="unpatched exporter/")
    p.add_argument("--sizes", type=int, nargs="+", default=[3_000_000, 10_000_000, 30_000_000])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--name", default="patch_trial", help="results file stem")
    args = p.parse_args(argv)
    run(args.patched.resolve(), args.before.resolve(), args.sizes, args.repeats, name=args.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
