"""Start `python -m serving` as a child process on free 127.0.0.1 ports and wait until it serves.

The server prints `Serving gRPC on HOST:PORT` (and `Serving REST on ...`) only after its initial
models loaded and its ports opened, so readiness is that line in its log, awaited by polling with
a deadline. A server that exits or stays silent is a `ServerStartError` carrying its log's tail,
never a silent skip. Tests and benchmarks start servers with it; they and the exporter's
parity check (which runs the server in-process) share `free_port`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
_POLL_S = 0.1


class ServerStartError(RuntimeError):
    """The server process exited or did not print its ready line before the deadline."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server child: its ports, its log, and `stop()`."""

    proc: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log_path: Path
    owns_log: bool = False

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_target(self) -> str | None:
        return f"127.0.0.1:{self.rest_port}" if self.rest_port else None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's combined stdout/stderr."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM (the server's graceful stop), SIGKILL if it hangs; removes a temporary log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.owns_log:
            with contextlib.suppress(FileNotFoundError):
                self.log_path.unlink()


def start_server_process(
    flags: Sequence[str],
    *,
    rest: bool = True,
    log_path: Path | None = None,
    timeout_s: float = STARTUP_TIMEOUT_S,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Run `command` (default `python -m serving`) with `--port`/`--rest_api_port` on free
    ports plus `flags`; return once it printed its ready line, else stop it and raise."""
    grpc_port = free_port()
    rest_port = free_port() if rest else 0
    owns_log = log_path is None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="serving-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    argv = [
        *(command or [sys.executable, "-m", "serving"]),
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        *flags,
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
    server = ServerProcess(proc, grpc_port, rest_port, log_path, owns_log)
    ready_line = "Serving REST on" if rest else "Serving gRPC on"
    deadline = time.monotonic() + timeout_s
    while ready_line not in log_path.read_text(errors="replace"):
        problem = None
        if proc.poll() is not None:
            problem = f"exited with code {proc.returncode}"
        elif time.monotonic() > deadline:
            problem = f"printed no {ready_line!r} line within {timeout_s:g} s"
        if problem is not None:
            tail = server.log_tail()
            server.stop()
            raise ServerStartError(f"server {' '.join(argv)} {problem}; its log ends:\n{tail}")
        time.sleep(_POLL_S)
    return server
