"""The packages match the architecture: `serving` stands alone (no exporter, tf2onnx or onnx),
and every package the code imports is declared in pyproject.toml."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO_ROOT

FORBIDDEN = ("exporter", "tf2onnx", "onnx")  # onnxruntime is allowed (--backend onnx)

# Import every serving module, then run `python -m serving` (TF backend) in this process over
# the test repository; once a model is AVAILABLE, write which forbidden top-level packages are
# in sys.modules and stop the server with SIGTERM, as an operator would.
_PROBE = """
import importlib, json, os, pkgutil, runpy, signal, sys, threading, time
import serving
from serving.launch import free_port
for info in pkgutil.iter_modules(serving.__path__):
    importlib.import_module(f"serving.{info.name}")
config, forbidden, out = sys.argv[1:4]
port = free_port()

def probe():
    from serving.client import ServingClient
    with ServingClient(f"127.0.0.1:{port}") as client:
        client.wait_until_available("half_plus_two", timeout=120)
    loaded = sorted({name.split(".")[0] for name in sys.modules} & set(forbidden.split(",")))
    with open(out, "w") as f:
        json.dump(loaded, f)
    deadline = time.monotonic() + 30  # serve() installs its SIGTERM handler after the ports open
    while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
sys.argv = ["serving", f"--port={port}", "--rest_api_port=0", "--backend=tensorflow",
            f"--model_config_file={config}"]
runpy.run_module("serving", run_name="__main__", alter_sys=True)
"""


def test_serving_imports_nothing_from_the_exporter_side(model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "loaded.json"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            str(model_repo / "tfserving" / "models.config"),
            ",".join((*FORBIDDEN, "tensorflow")),
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # tensorflow is listed as a control: the probe does see what the server imports.
    assert json.loads(out.read_text()) == ["tensorflow"]


# Import name -> distribution name, where they differ.
_DISTRIBUTIONS = {
    "google": "protobuf",
    "grpc": "grpcio",
    "grpc_health": "grpcio-health-checking",
    "tensorflow_serving": "tensorflow-serving-api",
    "sklearn": "scikit-learn",
    "yaml": "PyYAML",
    "rapidjson": "python-rapidjson",
}
_LOCAL = {"serving", "exporter", "examples", "bench", "tests"}


def _imports(root: Path) -> set[str]:
    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - _LOCAL - {"__future__"}


def _declared(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        name = req.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        names.add(name.lower().replace("_", "-"))
    return names


def test_every_imported_package_is_declared() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    base = _declared(project["dependencies"])
    for package, allowed in [
        ("serving", base | _declared(extras["onnx"])),
        ("exporter", base | _declared(extras["exporter"]) | _declared(extras["onnx"])),
        ("examples", base | _declared(extras["exporter"]) | _declared(extras["onnx"])),
        (
            "bench",
            base
            | _declared(extras["bench"])
            | _declared(extras["exporter"])
            | _declared(extras["onnx"]),
        ),
        (
            "tests",
            base
            | _declared(extras["dev"])
            | _declared(extras["exporter"])
            | _declared(extras["onnx"]),
        ),
    ]:
        used = {
            _DISTRIBUTIONS.get(n, n).lower().replace("_", "-")
            for n in _imports(REPO_ROOT / package)
        }
        assert used <= allowed, f"{package} imports undeclared {sorted(used - allowed)}"
