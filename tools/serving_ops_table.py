"""Regenerate exporter/savedmodel/data/serving_ops.json: what each TF Serving version knows.

    python tools/serving_ops_table.py 2.20.0 [2.19.0 ...]

For each version it downloads that `tensorflow` wheel from PyPI (`pip download --no-deps`),
unpacks it into a temporary directory and imports it in a child interpreter (its
dependencies come from the current environment), then records the op registry (every op
name and the names of its attrs) and the GraphDef version range. TF Serving X.Y is built
against TensorFlow X.Y, so this is the set of ops and attrs its binary can load. Entries for
versions not named on the command line are kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TABLE = (
    Path(__file__).resolve().parent.parent / "exporter" / "savedmodel" / "data" / "serving_ops.json"
)

# Runs inside the child interpreter, with only the downloaded tensorflow on its path first.
_DUMP = """
import json, sys
import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session as c_api
ops = op_def_pb2.OpList()
ops.ParseFromString(c_api.TF_GetBuffer(c_api.TF_GetAllOpList()))
json.dump({
    "tensorflow": tf.__version__,
    "graph_def_version": tf.version.GRAPH_DEF_VERSION,
    "graph_def_min_producer": tf.version.GRAPH_DEF_VERSION_MIN_PRODUCER,
    "graph_def_min_consumer": tf.version.GRAPH_DEF_VERSION_MIN_CONSUMER,
    "ops": {op.name: sorted(a.name for a in op.attr)
            for op in sorted(ops.op, key=lambda o: o.name)},
}, sys.stdout)
"""


def dump_version(version: str, workdir: Path) -> dict:
    """The op table of tensorflow==`version`, read from its real wheel."""
    wheels = workdir / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--dest",
            str(wheels),
            f"tensorflow=={version}",
        ],
        check=True,
    )
    (wheel,) = wheels.glob(f"tensorflow-{version}-*.whl")
    site = workdir / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _DUMP],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    table = json.loads(result.stdout)
    if table["tensorflow"] != version:
        raise SystemExit(f"error: imported tensorflow {table['tensorflow']}, wanted {version}")
    return table


def main(versions: list[str]) -> int:
    if not versions:
        print(__doc__, file=sys.stderr)
        return 2
    existing = json.loads(TABLE.read_text()) if TABLE.exists() else {}
    tables = existing.get("versions", {})
    for version in versions:
        with tempfile.TemporaryDirectory(prefix=f"tf-{version}-") as tmp:
            table = dump_version(version, Path(tmp))
        tables[".".join(version.split(".")[:2])] = table
        print(f"tensorflow {version}: {len(table['ops'])} ops", file=sys.stderr)
    TABLE.write_text(
        json.dumps(
            {
                "generated_by": "tools/serving_ops_table.py",
                "versions": dict(sorted(tables.items())),
            },
            separators=(",", ":"),
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
