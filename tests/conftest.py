"""Fixtures shared by the whole suite.

Every core test takes the ``core`` fixture, so it runs once against the
compiled ``hlcbus._core`` and once against the pure ``hlcbus._core_py``
(PEP 399: one suite, two implementations).  Deselect the compiled leg with
``-m 'not compiled'``.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from bus_helpers import manual_bus
from hypothesis import HealthCheck, settings
from redis_server import REQUIRED as REDIS_REQUIRED
from redis_server import RedisServer
from redis_server import missing as redis_missing

import hlcbus
from hlcbus import EventBus

NO_EXTENSIONS = os.environ.get("HLCBUS_NO_EXTENSIONS", "") not in ("", "0")
LEFTOVER_JOIN_TIMEOUT = 2.0  # seconds, for all of a test's leftover threads together

# The fixtures are function-scoped but hold no per-example state (``core`` is
# a module, the thread check brackets the whole test), so hypothesis may reuse
# them across examples.  No deadline: the first call into a core can be slow.
settings.register_profile(
    "hlcbus",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("hlcbus")


def _import_core(name: str) -> ModuleType:
    """Import a core; a missing compiled core fails unless the kill switch is set."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if name == "hlcbus._core" and NO_EXTENSIONS:
            pytest.skip("HLCBUS_NO_EXTENSIONS is set: the compiled core is not built")
        # A silent skip here would let a broken build pass the suite on the pure core alone.
        pytest.fail(f"cannot import {name} ({exc}); set HLCBUS_NO_EXTENSIONS=1 for a pure build")


@pytest.fixture(
    params=[
        pytest.param("hlcbus._core", id="c", marks=pytest.mark.compiled),
        pytest.param("hlcbus._core_py", id="py"),
    ]
)
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core module under test: compiled ("c") or pure ("py")."""
    return _import_core(request.param)


@pytest.fixture
def compiled() -> ModuleType:
    """The compiled core alone, for tests that compare it with the pure one."""
    return _import_core("hlcbus._core")


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves a thread running after it returns."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before]
    deadline = time.monotonic() + LEFTOVER_JOIN_TIMEOUT
    for thread in leftover:  # a thread that is just finishing is not a leak
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in leftover if t.is_alive()]
    if alive:
        pytest.fail(f"test left threads running: {alive}")


@pytest.fixture
def bus() -> Iterator[EventBus]:
    """A bus on the system clock, closed after the test."""
    bus = EventBus()
    try:
        yield bus
    finally:
        bus.close()


@pytest.fixture
def mbus() -> Iterator[tuple[EventBus, hlcbus.ManualClock]]:
    """A bus whose clock reads a ManualClock (returned with it), closed after the test."""
    bus, wall = manual_bus()
    try:
        yield bus, wall
    finally:
        bus.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; each test uses streams of its own."""
    yield from _redis_server(tmp_path_factory.mktemp("redis"), durable=False)


@pytest.fixture
def durable_redis(tmp_path: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test's own, with an append-only file: it may be restarted."""
    yield from _redis_server(tmp_path, durable=True)  # type: ignore[arg-type]


def _redis_server(directory: Path, durable: bool) -> Iterator[RedisServer]:
    reason = redis_missing()
    if reason is not None:
        if REDIS_REQUIRED:  # CI installs both: a skip there would hide a broken setup
            pytest.fail(f"HLCBUS_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    server = RedisServer(directory, durable=durable).start()
    try:
        yield server
    finally:
        server.stop()
