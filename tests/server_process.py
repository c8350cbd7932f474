"""Start `soundsift serve` as a real uvicorn process on loopback and wait until it is ready."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the test process dies, however it dies (no server
    outlives a killed or crashed pytest)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextmanager
def running_server(model_dir: Path, log_path: Path, **settings: str) -> Iterator[ServerProcess]:
    """A ready server for the block, stopped when the block ends, whether it passed or failed."""
    process = start_ready(model_dir, log_path, **settings)
    try:
        yield process
    finally:
        process.terminate()


PORT_TAKEN = "address already in use"


def start_ready(model_dir: Path, log_path: Path, *, attempts: int = 3, **settings: Any) -> ServerProcess:
    """A ready server, or the error that kept it from starting (the process is stopped then).

    The free port is picked before the server binds it, so another process on this machine (a test
    run beside this one) can take it meanwhile; that start is tried again on another port."""
    for attempt in range(1, attempts + 1):
        process = ServerProcess(model_dir, log_path, **settings)
        try:
            process.wait_ready()
            return process
        except BaseException as error:
            if process.process.poll() is None:
                process.process.kill()  # not ready in time: it may be frozen, and SIGTERM would wait
            process.terminate()
            if isinstance(error, RuntimeError) and PORT_TAKEN in process.log() and attempt < attempts:
                continue
            raise
    raise AssertionError("unreachable")


def without_read_override() -> list[str]:
    """A command prefix under which file permissions bind this process even as root (it drops the
    capabilities that let root read any folder), so tests can make a folder really unreadable."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


class ServerProcess:
    def __init__(self, model_dir: Path, log_path: Path, *, wrapper: Sequence[str] = (), **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "SOUNDSIFT_MODEL": str(model_dir),
            "SOUNDSIFT_DEVICE": "cpu",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        # Tests send many wrong keys from one address on purpose; the failure throttle itself is
        # tested on servers that set a small burst (tests/security/test_sessions.py).
        settings.setdefault("auth_failure_burst", "10000")
        env.update({f"SOUNDSIFT_{key.upper()}": value for key, value in settings.items()})
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - lives as long as the server process
        self.process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "soundsift", "serve", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=10).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or slow to answer
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready in {timeout_s} s:\n{self.log()}")

    def terminate(self, timeout_s: float = 40.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout_s`` (a hang guard); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()
