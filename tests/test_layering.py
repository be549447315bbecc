"""The exporter's rooms depend one way: model -> freeze -> writers -> verify -> publish.

Each subpackage may import only rooms before it in the flow and the shared top-level
modules every stage uses (errors, options, tf_internals, formatting). `deploy` reads only the
export's reports (plus the TF Serving op table it re-checks against, and the publication's
version listing). Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

EXPORTER = REPO_ROOT / "exporter"
SHARED = {"errors", "options", "tf_internals", "formatting"}
# room -> the rooms it may import (besides itself and SHARED)
ALLOWED = {
    "model": set(),
    "freeze": {"model"},
    "savedmodel": {"model", "freeze", "verify.sample_inputs"},  # warmup requests: sample inputs
    "onnx_format": {"model", "freeze"},
    "verify": {"model", "freeze", "savedmodel", "onnx_format", "publish"},  # served: versions
    "deploy": {"savedmodel.compat", "publish"},
}
# options (shared, TF-free) names the defaults and bounds of the stages it configures.
SHARED_MAY_IMPORT = {
    "options": {"freeze.lift", "savedmodel.compat", "onnx_format.convert", "verify.runtimes"}
}


def _exporter_imports(path: Path) -> set[str]:
    """`exporter.X.Y` imported by `path`, as 'X.Y' (or 'X' for `from exporter import X`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "exporter":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("exporter."):
                found.add(node.module.removeprefix("exporter."))
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("exporter.")
                for a in node.names
                if a.name.startswith("exporter.")
            }
    return found


def _allowed(target: str, rules: set[str]) -> bool:
    return any(target == rule or target.startswith(rule + ".") for rule in rules)


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_room_imports_only_earlier_rooms(room: str) -> None:
    wrong = {}
    for path in sorted((EXPORTER / room).rglob("*.py")):
        bad = {
            target
            for target in _exporter_imports(path)
            if target.split(".")[0] not in {room, *SHARED} and not _allowed(target, ALLOWED[room])
        }
        if bad:
            wrong[str(path.relative_to(REPO_ROOT))] = sorted(bad)
    assert wrong == {}, f"imports against the flow: {wrong}"


@pytest.mark.parametrize("shared", sorted(SHARED))
def test_shared_modules_import_no_stage(shared: str) -> None:
    targets = _exporter_imports(EXPORTER / f"{shared}.py")
    bad = {
        t
        for t in targets
        if t.split(".")[0] not in SHARED and not _allowed(t, SHARED_MAY_IMPORT.get(shared, set()))
    }
    assert bad == set(), f"exporter/{shared}.py is shared by every stage; it imports {bad}"


def test_every_subpackage_has_a_rule() -> None:
    rooms = {p.name for p in EXPORTER.iterdir() if (p / "__init__.py").is_file()}
    assert rooms == set(ALLOWED)
