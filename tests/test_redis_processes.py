"""Three OS processes share one Redis stream, each with its own bus, node id and skewed clock.

Each node (``redis_node.py``, run with this interpreter) publishes while the
others do; every node's ordered subscriber must get every node's events
exactly once, in strictly increasing timestamp order, with the accounting
identity holding, and every bridge's counters must balance.  The children
start their bridges, say ``ready``, and publish only on the parent's ``go``,
so all three consumer groups exist before the first entry is added.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest
from bus_helpers import assert_accounting
from redis_server import RedisServer

NODE_SCRIPT = Path(__file__).with_name("redis_node.py")
SKEWS_MS = {1: -200, 2: 0, 3: 250}  # node id -> wall clock skew
COUNT = 3_000  # events each node publishes
# The ordered window must exceed the skew spread (450 ms) plus the transit time.
WINDOW_MS = 1_000
READY_TIMEOUT = 20.0  # seconds for every child to start its bridge
RUN_TIMEOUT = 120.0  # seconds for every child to publish, deliver and report


@pytest.mark.parametrize("on_down", [
    pytest.param(("buffer", "buffer", "buffer"), id="buffer"),
    pytest.param(("raise", "buffer", "buffer"), id="one-raise"),
])
def test_three_processes_deliver_every_event_once_in_order(
        redis_server: RedisServer, tmp_path: Path, on_down: tuple[str, ...]) -> None:
    stream = f"test-processes-{uuid.uuid4().hex}"
    results = _run_nodes(redis_server.url, stream, on_down, tmp_path)
    published = {r["node"]: r["published"] for r in results}
    every = set().union(*published.values())
    assert len(every) == len(SKEWS_MS) * COUNT, "two nodes published the same timestamp"
    for result in results:
        _check_node(result, every)


def _check_node(result: dict[str, Any], every: set[str]) -> None:
    node, total = result["node"], len(SKEWS_MS) * COUNT
    delivered = [stamp for stamp, _, _ in result["delivered"]]
    assert len(delivered) == total, f"node {node}: {_summary(result)}"
    # Byte order of to_bytes() is timestamp order: this is strictly increasing, no repeats.
    for a, b in zip(delivered, delivered[1:]):
        assert a < b, f"node {node}: order broken, {a} then {b}"
    assert set(delivered) == every, f"node {node}: delivered a timestamp nobody published"
    # Each origin's events arrive with their data, in the order it published them.
    for origin in SKEWS_MS:
        seq = [i for _, kind, i in result["delivered"] if kind == f"node.{origin}"]
        assert seq == list(range(COUNT)), f"node {node}: events of node.{origin} out of order"

    sub = SimpleNamespace(**result["sub"])
    assert (sub.received, sub.delivered, sub.late, sub.dropped, sub.duplicates, sub.pending,
            sub.handler_errors, sub.failed) == (total, total, 0, 0, 0, 0, 0, False), \
        f"node {node}: {result['sub']}"
    assert_accounting(sub)

    bridge = result["bridge"]
    assert bridge["rejected"] == dict.fromkeys(bridge["rejected"], 0), f"node {node}: {bridge}"
    assert bridge["read"] == (bridge["delivered"] + bridge["duplicates"] + bridge["own"]
                              + sum(bridge["rejected"].values())), f"node {node}: {bridge}"
    others = total - COUNT
    assert {k: bridge[k] for k in ("sent", "own", "delivered", "duplicates", "read", "acked",
                                   "unsent", "encode_errors", "pending_out", "refused")} == {
        "sent": COUNT, "own": COUNT, "delivered": others, "duplicates": 0, "read": total,
        "acked": total, "unsent": 0, "encode_errors": 0, "pending_out": 0, "refused": 0,
    }, f"node {node}: {bridge}"
    assert result["bus"]["received"] == others, f"node {node}: {result['bus']}"
    assert (result["bus"]["duplicates"], result["bus"]["drift_rejections"],
            result["bus"]["refused"]) == (0, 0, 0), f"node {node}: {result['bus']}"


# --- the children ---------------------------------------------------------------------------

def _run_nodes(url: str, stream: str, on_down: tuple[str, ...],
               tmp_path: Path) -> list[dict[str, Any]]:
    """Start a child per node, release them together, return their parsed reports."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for (node, skew), policy in zip(SKEWS_MS.items(), on_down):
            logs.append(tmp_path / f"node{node}.stderr")
            procs.append(_start(url, stream, node, skew, policy, logs[-1]))
        deadline = time.monotonic() + READY_TIMEOUT
        for node, proc, log in zip(SKEWS_MS, procs, logs):
            _wait_ready(node, proc, deadline, log)
        for proc in procs:  # the barrier: every consumer group exists now
            assert proc.stdin is not None
            try:
                proc.stdin.write(b"go\n")
            except BrokenPipeError:
                pass  # it died after "ready": _report fails with its stderr
        deadline = time.monotonic() + RUN_TIMEOUT
        return [_report(node, proc, deadline, log)
                for node, proc, log in zip(SKEWS_MS, procs, logs)]
    finally:
        for proc in procs:  # only after a failure: kill what is still running, by pid
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()


def _start(url: str, stream: str, node: int, skew: int, on_down: str,
           log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(NODE_SCRIPT), url, stream, str(node), str(skew),
               str(COUNT), str(WINDOW_MS), on_down]
    with open(log, "wb") as stderr:  # a file, not a pipe: a chatty child never blocks on it
        # Unbuffered, so reading the "ready" line takes nothing after it.
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, bufsize=0)


def _wait_ready(node: int, proc: subprocess.Popen[bytes], deadline: float, log: Path) -> None:
    stdout: IO[bytes] = proc.stdout  # type: ignore[assignment]
    remaining = max(0.0, deadline - time.monotonic())
    readable, _, _ = select.select([stdout], [], [], remaining)
    line = stdout.readline() if readable else b"(nothing before the timeout)"
    if line.strip() != b"ready":
        pytest.fail(f"node {node}: not ready: {line!r}\n{_stderr(log)}")


def _report(node: int, proc: subprocess.Popen[bytes], deadline: float,
            log: Path) -> dict[str, Any]:
    """Wait for the child (bounded) and parse its JSON line; fail with its stderr."""
    try:
        out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"node {node} still running after {RUN_TIMEOUT} s\n{_stderr(log)}")
    try:
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"node {node} exited {proc.returncode} without a report\n{_stderr(log)}")
    assert proc.returncode == 0, (f"node {node} exited {proc.returncode}: {_summary(result)}\n"
                                  f"{_stderr(log)}")
    return result


def _summary(result: dict[str, Any]) -> str:
    return (f"delivered {len(result['delivered'])}, sub {result['sub']}, "
            f"bridge {result['bridge']}, bus {result['bus']}")


def _stderr(log: Path) -> str:
    return "stderr:\n" + log.read_text(errors="replace")[-4000:]
