"""How long `--help` takes: a user's first contact with each CLI (target: under 1 s).

Each command runs in a fresh interpreter, as a user types it; the wall time includes Python's
own start-up. The exporter imports TensorFlow only once a command runs; `python -m serving`
still imports it before parsing its flags (see serving/server.py).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common

COMMANDS = {
    "python -m exporter --help": ["-m", "exporter", "--help"],
    "python -m serving --help": ["-m", "serving", "--help"],
}
TARGET_S = 1.0


def run(repeats: int = 5, results_dir: Path = common.RESULTS_DIR) -> dict[str, Any]:
    """Median and worst wall time of each `--help` over `repeats` fresh processes."""
    rows = []
    for label, args in COMMANDS.items():
        samples = []
        for _ in range(repeats):
            began = time.perf_counter()
            subprocess.run(
                [sys.executable, *args],
                env=common.bench_env(),
                cwd=common.REPO_ROOT,
                capture_output=True,
                check=True,
                timeout=300,
            )
            samples.append(time.perf_counter() - began)
        stats = {**common.stats_ms(samples), "max_ms": max(samples) * 1e3}
        rows.append({"command": label, **stats})
        verdict = "MET" if stats["median_ms"] <= TARGET_S * 1000 else "MISSED"
        print(
            f"  {label}: median {stats['median_ms'] / 1000:.2f} s, "
            f"max {stats['max_ms'] / 1000:.2f} s (target < {TARGET_S:g} s: {verdict})",
            flush=True,
        )
    payload = {"target_s": TARGET_S, "rows": rows}
    common.write_result("cli_startup", payload, results_dir)
    return payload
