"""A real PostgreSQL 16 server with pgvector on 127.0.0.1, from the binaries of the `pgserver` wheel
(a dev dependency): initdb in a temporary folder, `postgres` on a free loopback port with password
authentication, stopped by its PID at the end. We start the binaries ourselves rather than through
pgserver's API, which listens on a Unix socket only and, as root, creates a system user.

As root (PostgreSQL refuses to run as root) the server runs as `nobody`."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.server_process import free_port

USER, PASSWORD = "soundsift", "s3cret-pw"
NOBODY = 65534
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def postgres_bin() -> Path | None:
    """The folder of the wheel's PostgreSQL binaries, or None when pgserver is not installed."""
    spec = importlib.util.find_spec("pgserver")  # not imported: only its files are used
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return folder if (folder / "postgres").is_file() else None


def _as_server_user() -> None:
    """In the child: drop root to nobody, then die with the test process (prctl after setuid, which
    clears the parent-death signal)."""
    if os.geteuid() == 0:
        os.setgid(NOBODY)
        os.setgroups([])
        os.setuid(NOBODY)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def running_postgres(bin_dir: Path) -> Iterator[str]:
    """Yield the server's URL (with user and password) while it runs."""
    root = Path(tempfile.mkdtemp(prefix="soundsift-pg-"))
    try:
        if os.geteuid() == 0:
            os.chown(root, NOBODY, NOBODY)
        data = root / "data"
        (root / "pw").write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(root / "pw", NOBODY, NOBODY)
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(root / "pw"),
             "--auth=scram-sha-256", "--encoding=utf8", "--no-sync"],
            check=True, capture_output=True, preexec_fn=_as_server_user, timeout=120,
        )  # fmt: skip
        process, port = _start(bin_dir, data, root / "log")
        try:
            yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
        finally:
            _stop(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(bin_dir: Path, data: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(3):  # the free port may be taken before the server binds it
        port = free_port()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", "",
                 "-c", "fsync=off", "-c", "max_connections=60", "-c", "shared_buffers=32MB"],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_as_server_user,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if "ready to accept connections" in log.read_text(errors="replace"):
                return process, port
            time.sleep(0.1)
        _stop(process)
        if "already in use" not in log.read_text(errors="replace"):
            break
    raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text(errors='replace')[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT) by PID; SIGKILL if it does not end in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
