"""Publishing for other users and through crashes: modes, staging, sweeping, rollback.

The unit tests drive `exporter.publish` directly (no TensorFlow). The crash tests run real
`python -m exporter export` subprocesses and `kill -9` them at random points: after each, the
output tree must hold only complete versions, and the next export must sweep the leftovers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import ExportError
from exporter.publish import MARKER, Publication, check_writable, sweep_stale
from tests.conftest import REPO_ROOT, wait_for

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
NAME = "ref"
EXPORT_ARGS = ["--model", "tests.models:reference_model", "--name", NAME, "--warmup-requests", "1"]
NOBODY = 65534


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under `root`: relative path -> (mode, content for files)."""
    entries = {}
    for path in sorted(root.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        entries[str(path.relative_to(root))] = (mode, path.read_bytes() if path.is_file() else None)
    return entries


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


# --- staging, modes, rollback ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)]
)
def test_published_modes_follow_the_umask_not_tempfile(
    tmp_path: Path, mask: int, dir_mode: int, file_mode: int
) -> None:
    previous = os.umask(mask)
    try:
        with Publication() as publication:
            version = publication.directory(tmp_path / "tfserving" / "m" / "1")
            (version / "variables").mkdir(mode=0o700)  # as a library might
            (version / "saved_model.pb").write_bytes(b"pb")
            (version / "saved_model.pb").chmod(0o600)
            publication.file(tmp_path / "onnx" / "m" / "config.pbtxt", b"name: 'm'\n")
    finally:
        os.umask(previous)
    for path in [tmp_path / "tfserving", *(tmp_path / "tfserving").rglob("*"), tmp_path / "onnx"]:
        want = dir_mode if path.is_dir() else file_mode
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert stat.S_IMODE((tmp_path / "onnx/m/config.pbtxt").stat().st_mode) == file_mode


def test_failure_in_the_block_leaves_the_tree_as_it_was(tmp_path: Path, umask_022: None) -> None:
    (tmp_path / "tfserving" / "m" / "1").mkdir(parents=True)
    (tmp_path / "onnx" / "m").mkdir(parents=True)
    (tmp_path / "onnx" / "m" / "config.pbtxt").write_bytes(b"old")
    before = _tree(tmp_path)
    with pytest.raises(RuntimeError, match="parity failed"), Publication() as publication:
        (publication.directory(tmp_path / "tfserving" / "m" / "2") / "saved_model.pb").touch()
        publication.directory(tmp_path / "onnx" / "m" / "2")
        publication.file(tmp_path / "onnx" / "m" / "config.pbtxt", b"new")
        publication.file(tmp_path / "reports" / "m" / "2.json", b"{}")  # creates reports/m
        raise RuntimeError("parity failed")
    assert _tree(tmp_path) == before


def test_failure_while_publishing_takes_back_what_was_published(tmp_path: Path) -> None:
    (tmp_path / "onnx" / "m").mkdir(parents=True)
    (tmp_path / "onnx" / "m" / "config.pbtxt").write_bytes(b"old")
    with pytest.raises(ExportError, match="appeared while exporting"), Publication() as publication:
        publication.directory(tmp_path / "tfserving" / "m" / "2")
        (publication.directory(tmp_path / "onnx" / "m" / "2") / "model.onnx").touch()
        publication.file(tmp_path / "onnx" / "m" / "config.pbtxt", b"new")
        # A concurrent export publishes version 2 after ours staged it: the ONNX twin is
        # published first, then the SavedModel rename must refuse and take the twin back.
        (tmp_path / "tfserving" / "m" / "2" / "saved_model.pb").parent.mkdir(parents=True)
        (tmp_path / "tfserving" / "m" / "2" / "saved_model.pb").write_bytes(b"theirs")
    assert (tmp_path / "tfserving/m/2/saved_model.pb").read_bytes() == b"theirs"
    assert sorted(p.name for p in (tmp_path / "onnx" / "m").iterdir()) == ["config.pbtxt"]
    assert (tmp_path / "onnx/m/config.pbtxt").read_bytes() == b"old"


def test_existing_version_is_refused_before_anything_is_staged(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    with pytest.raises(ExportError, match="already exists"), Publication() as publication:
        publication.directory(tmp_path / "m" / "1")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]


def test_check_writable_creates_nothing_and_names_the_blocker(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "reports").write_text("a file")
    with pytest.raises(ExportError, match=r"reports is not a directory"):
        check_writable(tmp_path / "reports" / "m")


# --- sweeping: only ours, only stale ---------------------------------------------------------

_STAGER = """
import sys, time
from pathlib import Path
from exporter.publish import Publication
with Publication() as publication:
    scratch = publication.directory(Path(sys.argv[1]) / sys.argv[2])
    (scratch / "saved_model.pb").write_bytes(b"x" * 1000)
    publication.file(Path(sys.argv[1]) / "config.pbtxt", b"cfg")
    print("staged", flush=True)
    time.sleep(300)
"""


def _stager(base: Path, version: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _STAGER, str(base), version],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "staged\n"
    return proc


def test_sweep_removes_a_killed_exports_leftovers_but_not_a_live_ones(tmp_path: Path) -> None:
    killed, live = _stager(tmp_path, "1"), _stager(tmp_path, "2")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        staged = sorted(p.name for p in tmp_path.iterdir())
        assert len(staged) == 4 and all(n.startswith(".tmp-") and MARKER in n for n in staged)
        removed = sweep_stale(tmp_path)
        assert sorted(p.name for p in removed) == [n for n in staged if f".{killed.pid}." in n]
        left = sorted(p.name for p in tmp_path.iterdir())
        assert len(left) == 2 and all(f".{live.pid}." in n for n in left)
    finally:
        live.kill()
        live.wait(timeout=30)
    assert len(sweep_stale(tmp_path)) == 2 and list(tmp_path.iterdir()) == []


def test_sweep_spares_what_this_process_is_staging(tmp_path: Path) -> None:
    """Two exports in one process (threads): the flock, not the pid, protects the live one."""
    with Publication() as publication:
        scratch = publication.directory(tmp_path / "7")
        assert sweep_stale(tmp_path) == [] and scratch.is_dir()
    assert (tmp_path / "7").is_dir()


def test_sweep_leaves_foreign_and_fresh_unprovable_entries(tmp_path: Path) -> None:
    day = 24 * 3600
    entries = {
        ".tmp-3-ab12cd_9": 2 * day,  # what earlier releases staged (tempfile), old: swept
        ".tmp-4-zz12cd_9": 60,  # same, but fresh: a live export of an old release may own it
        f".tmp-5.{MARKER}.other-host.123.deadbeef": 60,  # another host, fresh: kept
        f".tmp-6.{MARKER}.other-host.123.deadbeef": 2 * day,  # another host, old: swept
        ".tmp-notes": 2 * day,  # not our name: never touched
        "config.pbtxt": 2 * day,
        "1": 2 * day,
    }
    now = time.time()
    for name, age in entries.items():
        path = tmp_path / name
        path.mkdir() if name[-1].isdigit() or "host" in name else path.write_text("x")
        os.utime(path, (now - age, now - age))
    removed = {p.name for p in sweep_stale(tmp_path)}
    assert removed == {".tmp-3-ab12cd_9", f".tmp-6.{MARKER}.other-host.123.deadbeef"}
    assert {p.name for p in tmp_path.iterdir()} == set(entries) - removed


# --- crash-safe export: kill -9 at random points ---------------------------------------------


@dataclass
class CrashRun:
    """What a series of killed exports left, and the export that followed them."""

    out: Path
    seed: int
    problems: list[str] = field(default_factory=list)  # invariant violations after a kill
    kills: list[str] = field(default_factory=list)  # where each kill landed
    leftovers_before_final: int = 0
    final: subprocess.CompletedProcess[str] | None = None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_problems(out: Path) -> list[str]:
    """Every published version is complete: its artifact, its report, and matching digests."""
    problems = []
    for base, artifact, report_name, key in (
        (
            out / "tfserving" / NAME,
            "saved_model.pb",
            "assets.extra/export_report.json",
            "saved_model_pb_sha256",
        ),
        (out / "onnx" / NAME, "model.onnx", "export_report.json", "onnx_sha256"),
    ):
        for version in sorted(p for p in base.glob("*") if not p.name.startswith(".")):
            if version.name == "config.pbtxt":
                continue
            report = version / report_name
            if not (version / artifact).is_file() or not report.is_file():
                problems.append(f"{version}: {sorted(p.name for p in version.iterdir())}")
                continue
            digest = json.loads(report.read_text())["artifacts"][key]
            if digest != _sha256(version / artifact):
                problems.append(f"{version / artifact}: digest differs from its report")
    for copy in (out / "reports" / NAME).glob("*.json"):
        version = copy.stem
        if not (out / "onnx" / NAME / version / "export_report.json").is_file():
            problems.append(f"{copy}: a report for a version that was never published")
    return problems


def _leftovers(out: Path) -> list[Path]:
    return list(out.rglob(".tmp-*"))


def _export_and_kill(out: Path, stage: str, delay_s: float) -> str:
    """Start an export, SIGKILL it `delay_s` after it reports `stage`; say where it died."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "export", *EXPORT_ARGS, "--out", str(out)],
        cwd=REPO_ROOT,
        env=ENV,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        umask=0o022,
    )
    seen: list[str] = []
    reached = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("[export] "):
                seen.append(line.split()[1].rstrip(":"))
                if seen[-1] == stage:
                    reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not reached.wait(timeout=600):
            raise AssertionError(f"export never reached {stage!r}: {seen}, rc={proc.poll()}")
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    reader.join(timeout=10)
    return f"{stage}+{delay_s * 1000:.0f}ms -> rc={rc}, last stage {seen[-1] if seen else '-'}"


# Where a kill lands: the stage line an export prints, weighted toward publication.
_STAGES = ("savedmodel", "onnx", "parity", "publish", "publish", "publish", "report")


def _crash_run(out: Path, points: list[tuple[str, float]], seed: int) -> CrashRun:
    run = CrashRun(out=out, seed=seed)
    for stage, delay in points:
        run.kills.append(_export_and_kill(out, stage, delay))
        run.problems += [f"after kill {run.kills[-1]}: {p}" for p in _tree_problems(out)]
    run.leftovers_before_final = len(_leftovers(out))
    run.final = subprocess.run(
        [sys.executable, "-m", "exporter", "export", *EXPORT_ARGS, "--out", str(out)],
        cwd=REPO_ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
        umask=0o022,
    )
    return run


@pytest.fixture(scope="module")
def crash_run() -> Iterator[CrashRun]:
    """Three kills (as publication starts, inside it, while writing), then an export.

    The tree lives in a world-traversable directory so another user can be shown to read it.
    """
    root = Path(tempfile.mkdtemp(prefix="publish-"))
    root.chmod(0o755)
    seed = int(os.environ.get("PUBLISH_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    # The last kill lands while the ONNX file is converted and written (tf2onnx alone takes
    # longer than 50 ms here): it must leave leftovers for the final export to sweep.
    points = [("publish", 0.0), ("publish", rng.uniform(0, 0.02)), ("onnx", rng.uniform(0, 0.05))]
    try:
        yield _crash_run(root / "out", points, seed)
    finally:
        shutil.rmtree(root)


def _check_crash_run(run: CrashRun) -> None:
    context = f"seed={run.seed} kills={run.kills}"
    assert not run.problems, f"{context}: {run.problems}"
    assert run.final is not None and run.final.returncode == 0, f"{context}: {run.final.stderr}"
    assert _leftovers(run.out) == [], f"{context}: the successful export did not sweep"
    assert not _tree_problems(run.out), context
    versions = sorted(int(p.name) for p in (run.out / "tfserving" / NAME).glob("[0-9]*"))
    assert versions, context
    newest = json.loads((run.out / "reports" / NAME / f"{versions[-1]}.json").read_text())
    assert newest["passed"] and newest["version"] == versions[-1]


def test_kill_9_during_export_never_exposes_a_partial_version(crash_run: CrashRun) -> None:
    assert crash_run.leftovers_before_final > 0, crash_run.kills  # the last kill left some
    _check_crash_run(crash_run)


def _complete_versions(out: Path) -> list[int]:
    base = out / "tfserving" / NAME
    return sorted(
        int(p.name)
        for p in base.glob("[0-9]*")
        if (p / "saved_model.pb").is_file() and (p / "assets.extra/export_report.json").is_file()
    )


def _served_problems(client: Any, out: Path, timeout_s: float = 120.0) -> list[str]:
    """Once the server caught up, it serves the newest complete version and never tried to
    load anything else (a partial version would show as END with a load error)."""
    newest = _complete_versions(out)[-1]
    states: list[Any] = []

    def caught_up() -> bool:
        states[:] = client.status(NAME, timeout=10)
        return [s.version for s in states if s.state == "AVAILABLE"] == [newest]

    with contextlib.suppress(pytest.fail.Exception):  # a timeout is reported below, in detail
        wait_for(caught_up, f"the server to serve version {newest} alone", timeout_s)
    available = [s.version for s in states if s.state == "AVAILABLE"]
    problems = [f"version {s.version}: {s.error_message}" for s in states if s.error_code]
    if available != [newest]:
        problems.append(f"served {available}, newest complete version is {newest}")
    return problems


@pytest.mark.slow
def test_kill_9_at_twenty_four_random_points(tmp_path: Path) -> None:
    """24 kills at random moments while TF Serving's drop-in polls the tree every second."""
    from serving.client import ServingClient
    from serving.launch import start_server_process

    seed = int(os.environ.get("PUBLISH_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    out = tmp_path / "out"
    first = subprocess.run(
        [sys.executable, "-m", "exporter", "export", *EXPORT_ARGS, "--out", str(out)],
        cwd=REPO_ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert first.returncode == 0, first.stderr
    server = start_server_process(
        [
            f"--model_name={NAME}",
            f"--model_base_path={out / 'tfserving' / NAME}",
            "--file_system_poll_wait_seconds=1",
        ],
        rest=False,
        env=ENV,
        cwd=REPO_ROOT,
        timeout_s=300,
    )
    run = CrashRun(out=out, seed=seed)
    try:
        with ServingClient(server.grpc_target, timeout=30.0) as client:
            client.wait_until_available(NAME, timeout=300)
            for _ in range(24):
                stage, delay = rng.choice(_STAGES), rng.uniform(0, 0.05)
                run.kills.append(_export_and_kill(out, stage, delay))
                where = f"after kill {run.kills[-1]}"
                run.problems += [f"{where}: {p}" for p in _tree_problems(out)]
                run.problems += [f"{where}: {p}" for p in _served_problems(client, out)]
            run.leftovers_before_final = len(_leftovers(out))
            run.final = subprocess.run(
                [sys.executable, "-m", "exporter", "export", *EXPORT_ARGS, "--out", str(out)],
                cwd=REPO_ROOT,
                env=ENV,
                capture_output=True,
                text=True,
                timeout=900,
                umask=0o022,
            )
            run.problems += [f"after the final export: {p}" for p in _served_problems(client, out)]
    finally:
        server.stop()
    _check_crash_run(run)


def test_every_published_entry_is_readable_by_other_users(crash_run: CrashRun) -> None:
    """umask 022: directories 0755, files 0644 — including config.pbtxt and the reports."""
    assert crash_run.final is not None and crash_run.final.returncode == 0
    entries = [crash_run.out, *crash_run.out.rglob("*")]
    assert any(p.name == "config.pbtxt" for p in entries)
    wrong = {
        str(p): oct(stat.S_IMODE(p.stat().st_mode))
        for p in entries
        if stat.S_IMODE(p.stat().st_mode) != (0o755 if p.is_dir() else 0o644)
    }
    assert not wrong


_LOAD_AS_OTHER_USER = """
import os, sys
from serving.errors import ServingError
from serving.servable import TFServable
TFServable("m", 1, sys.argv[1])  # first as ourselves: every lazy import is done by now
if os.geteuid() == 0:  # then as nobody (the interpreter may live where nobody can read)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
for path in sys.argv[1:]:
    try:
        TFServable("m", 1, path)
        print("loaded")
    except ServingError as e:
        print(e.code.name, e.message)
""".replace("NOBODY", str(NOBODY))


def test_another_user_loads_it_and_is_told_permission_denied_otherwise(
    crash_run: CrashRun,
) -> None:
    """The server as `nobody` (a non-root container) loads a published version; a private
    copy (what tempfile's 0700 made) answers PERMISSION_DENIED naming the path. Run as root
    when possible; otherwise the private copy is made unreadable to its owner instead."""
    base = crash_run.out / "tfserving" / NAME
    published = max(base.glob("[0-9]*"), key=lambda p: int(p.name))
    private = base / "9999"
    shutil.copytree(published, private)
    private.chmod(0o700 if os.geteuid() == 0 else 0o000)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _LOAD_AS_OTHER_USER, str(published), str(private)],
            cwd=REPO_ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        private.chmod(0o755)
        shutil.rmtree(private)
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0] == "loaded"
    assert lines[1].startswith("PERMISSION_DENIED") and str(private) in lines[1]
    assert "does not exist" not in lines[1]
