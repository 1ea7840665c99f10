"""A throwaway redis-server for the bridge's tests and benchmark.

It listens on 127.0.0.1 only, on a free port, keeps its files in a directory
of the caller's, and is stopped by its own pid.  ``HLCBUS_REQUIRE_REDIS=1``
(set by .ci/run) turns a missing server or redis-py into a failure; without it
the tests that need them skip and say why.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

REQUIRED = os.environ.get("HLCBUS_REQUIRE_REDIS") == "1"
START_TIMEOUT = 10.0  # seconds for a server to accept connections
STOP_TIMEOUT = 10.0


def missing() -> Optional[str]:
    """Why the Redis tests cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'hlcbus[redis]')"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PortTaken(RuntimeError):
    """Another process bound the port between our probe and the server's bind."""


class RedisServer:
    """One redis-server process; ``start``, ``stop`` and ``restart`` keep its port and data."""

    def __init__(self, directory: Path, *, durable: bool = False) -> None:
        self.directory = directory
        self.durable = durable  # an append-only file, so a restart keeps the streams
        self.port = free_port()
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.started_before = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start on ``port``; a first start that loses its port to another process moves on."""
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except PortTaken:
                if self.started_before or attempt == 2:
                    raise
                self.port = free_port()  # probed free, then taken before the server bound it
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                   "--dir", str(self.directory), "--logfile", "redis.log",
                   "--save", "", "--appendonly", "yes" if self.durable else "no",
                   "--protected-mode", "yes", "--daemonize", "no"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()
        self.started_before = True  # restarts keep the port: clients hold its URL

    def _wait_ready(self) -> None:
        # redis-server gives no readiness signal but its log: poll the port,
        # bounded in time, and fail with the log if it never answers.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        log = (self.directory / "redis.log")
        text = log.read_text() if log.exists() else "(no log)"
        self.stop()
        if "Address already in use" in text:
            raise PortTaken(self.port)
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{text[-2000:]}")

    def stop(self) -> None:
        """SIGTERM by pid (a durable server flushes its file first), then wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()
