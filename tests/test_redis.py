"""The Redis bridge against a real redis-server (see redis_server.py), in one process.

Each test uses streams of its own on the session's server, builds buses and
bridges through ``nodes`` (closed at the end) and waits on delivery, never on
time.  The three-process test is in test_redis_processes.py.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
from redis_server import REQUIRED, free_port

try:
    import redis
except ImportError:  # pragma: no cover - CI installs it (HLCBUS_REQUIRE_REDIS=1)
    if REQUIRED:
        raise
    pytest.skip("redis-py is not installed (pip install 'hlcbus[redis]')", allow_module_level=True)

from hlcbus import (
    HLC,
    BufferFull,
    Event,
    EventBus,
    HLCBusError,
    ManualClock,
    Timestamp,
    _redis_send,
    _wire,
    telemetry,
)
from hlcbus._redis_read import KEEP, Reader
from hlcbus.redis import DISCONNECTED, RECONNECTED, REJECTED, SEND_FAILED, STATS, RedisBridge

WAIT = 20.0  # seconds: the bound on every wait for a delivery


class Node:
    """A bus, its bridge and a recording ordered subscription."""

    def __init__(self, bus: EventBus, bridge: Any, window_ms: int) -> None:
        self.bus = bus
        self.bridge = bridge
        self.events: list[Event] = []
        self._wanted: Optional[Callable[[list[Event]], bool]] = None
        self._met = threading.Event()
        self._lock = threading.Lock()  # guards events, _wanted and _met between worker and test
        self.sub = bus.subscribe("*", self._record, ordered=True, window_ms=window_ms)

    def _record(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            if self._wanted is not None and self._wanted(self.events):
                self._met.set()

    def wait_for(self, condition: Callable[[list[Event]], bool]) -> list[Event]:
        """Wait (bounded) until ``condition(events)`` holds; return a copy of the events."""
        with self._lock:
            self._wanted, self._met = condition, threading.Event()
            if condition(self.events):
                self._met.set()
        assert self._met.wait(WAIT), f"condition not met; got {len(self.events)} events"
        with self._lock:
            return list(self.events)

    def wait_count(self, count: int) -> list[Event]:
        return self.wait_for(lambda events: len(events) >= count)

    def from_node(self, node: int) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.timestamp.node == node]


@pytest.fixture
def stream() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(redis_server: Any) -> Iterator[Any]:
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    connection.close()


@pytest.fixture
def nodes(redis_server: Any, stream: str) -> Iterator[Callable[..., Node]]:
    """make(node_id, **bridge_options) -> a started Node on the test's stream."""
    made: list[Node] = []

    def make(node: int, *, window_ms: int = 200, url: Optional[str] = None,
             clock: Optional[HLC] = None, bus_options: Optional[dict[str, Any]] = None,
             start: bool = True, reader_class: Any = None, **options: Any) -> Node:
        bus = EventBus(clock or HLC(node=node), **(bus_options or {}))
        options.setdefault("stream", stream)
        bridge = RedisBridge(bus, url or redis_server.url, **options)
        if reader_class is not None:
            bridge._reader = reader_class(bridge)
        made.append(Node(bus, bridge, window_ms))
        if start:
            bridge.start()
        return made[-1]

    yield make
    for node in made:
        node.bridge.close(timeout=2.0)
        node.bus.close(drain=False, timeout=5.0)


def foreign(node: int, type: str = "ext", data: Any = None,
            physical: Optional[int] = None, logical: int = 0) -> Event:
    """An event stamped by a node with no bus here (its entries are written raw)."""
    now = time.time_ns() // 1_000_000 if physical is None else physical
    return Event(type, data, Timestamp(now, logical, node=node))


def xadd(client: Any, stream: str, event: Event, *, secret: Optional[bytes] = None,
         codec: Any = None, **changes: bytes) -> None:
    fields = _wire.encode_entry(event, codec or _wire.JsonCodec(), secret, stream)
    fields.update({name.encode(): value for name, value in changes.items()})
    client.xadd(stream, fields)


def pending(client: Any, stream: str, bridge: Any) -> int:
    return int(client.xpending(stream, bridge.group)["pending"])


def dead_letters(client: Any, bridge: Any) -> list[dict[bytes, bytes]]:
    """The entries ``bridge`` dead-lettered (every node keeps its own rejections)."""
    return [fields for _, fields in client.xrange(bridge.dead_letter)
            if fields[b"dead:group"] == bridge.group.encode()]


def assert_in_balance(stats: Any) -> None:
    """Every entry read has exactly one outcome (the bridge is closed: none in hand)."""
    assert stats.read == (stats.delivered + stats.duplicates + stats.own
                          + sum(stats.rejected.values()))
    assert stats.acked == stats.read


# --- across two buses ------------------------------------------------------------------


def test_two_nodes_deliver_each_others_events_in_hlc_order(nodes: Any) -> None:
    a, b = nodes(0xA), nodes(0xB)
    for i in range(300):
        a.bus.publish("a.tick", {"i": i})
        b.bus.publish("b.tick", [i, "x"])
    for node in (a, b):
        events = node.wait_count(600)
        stamps = [e.timestamp for e in events]
        assert stamps == sorted(set(stamps)) and len(stamps) == 600
    remote = a.from_node(0xB)
    assert [e.data for e in remote] == [[i, "x"] for i in range(300)]  # JSON: lists
    assert {e.type for e in remote} == {"b.tick"}
    for node in (a, b):
        node.bridge.close()
        stats = node.bridge.stats
        assert (stats.sent, stats.delivered, stats.own) == (300, 300, 300)
        assert_in_balance(stats)
        assert node.bus.clock.last >= max(e.timestamp for e in node.events)


def test_receiving_merges_the_clock(nodes: Any) -> None:
    ahead = ManualClock(time.time_ns() // 1_000_000 + 5_000)  # 5 s ahead, within max drift
    a, b = nodes(0xA, clock=HLC(node=0xA, wall=ahead)), nodes(0xB)
    with b.bus.subscribe("t") as mailbox:  # unordered: the ordered one holds it for 5 s
        sent = a.bus.publish("t", 1)
        assert mailbox.get(timeout=WAIT).timestamp == sent.timestamp
    assert b.bus.clock.last > sent.timestamp
    assert b.bus.publish("t", 2).timestamp > sent.timestamp


def test_only_matching_types_are_sent(nodes: Any, client: Any, stream: str) -> None:
    a = nodes(0xA, pattern="shared.*")
    a.bus.publish("local.only", 1)
    a.bus.publish("shared.x", 2)
    a.bridge.close()
    assert [f[b"type"] for _, f in client.xrange(stream)] == [b"shared.x"]
    assert a.bridge.stats.sent == 1


def test_a_node_skips_its_own_entries(nodes: Any) -> None:
    a = nodes(0xA)
    for i in range(5):
        a.bus.publish("t", i)
    a.wait_count(5)
    a.bridge.close()
    assert [e.data for e in a.events] == [0, 1, 2, 3, 4]  # once each, from the publish
    assert a.bridge.stats.own == 5 and a.bridge.stats.delivered == 0


def test_a_send_only_bridge_has_no_group_and_no_reader(nodes: Any, client: Any,
                                                       stream: str) -> None:
    a, b = nodes(0xA, consume=False), nodes(0xB)
    assert a.bridge._reader._thread is None
    a.bus.publish("t", 1)
    assert [e.data for e in b.wait_count(1)] == [1]
    groups = [g["name"] for g in client.xinfo_groups(stream)]
    assert groups == [b.bridge.group.encode()]
    a.bridge.close()
    assert a.bridge.stats.sent == 1 and a.bridge.stats.read == 0


@pytest.mark.parametrize("options", [
    pytest.param({"protocol": 2}, id="resp2"),
    pytest.param({"protocol": 3}, id="resp3"),
    pytest.param({"protocol": 3, "legacy_responses": False}, id="resp3-unified"),
])
def test_a_callers_client_in_every_reply_shape(nodes: Any, redis_server: Any,
                                                options: dict[str, Any]) -> None:
    """A caller's own client works as a URL does, whatever shape its replies take."""
    client = redis.Redis.from_url(redis_server.url, **options)
    try:
        a, b = nodes(0xA, url=client), nodes(0xB, url=client)
        for i in range(3):
            a.bus.publish("t", i)
        assert [e.data for e in b.wait_count(3)] == [0, 1, 2]
        b.bridge.close()
        stats = b.bridge.stats
        assert (stats.delivered, stats.read, stats.acked, stats.errors) == (3, 3, 3, 0)
        # The pending list too: entries read, never acknowledged, then re-read.
        c = nodes(0xC, url=client, reader_class=TakeNever)
        a.bus.publish("t", 3)
        c.bridge._reader._thread.join(WAIT)
        c.bridge.close()
        again = RedisBridge(c.bus, client, stream=c.bridge.stream).start()
        assert [e.data for e in c.wait_count(1)] == [3]
        again.close()
        assert again.stats.delivered == 1 and again.stats.errors == 0
    finally:
        client.close()


# --- rejected entries: drift, signatures, malformed -------------------------------------------


def test_an_entry_60_s_ahead_is_rejected_dead_lettered_and_leaves_the_clock(
        nodes: Any, client: Any, stream: str) -> None:
    b = nodes(0xB, clock=HLC(node=0xB, max_drift_ms=1_000))
    before = b.bus.clock.last
    future = foreign(0xF1, "evil", {"x": 1}, physical=time.time_ns() // 1_000_000 + 60_000)
    xadd(client, stream, future)
    sentinel = foreign(0xF2, "ok")
    xadd(client, stream, sentinel)
    events = b.wait_for(lambda es: any(e.type == "ok" for e in es))
    b.bridge.close()
    assert [e.type for e in events] == ["ok"]
    assert b.bus.clock.last < future.timestamp and b.bus.clock.last > before
    stats = b.bridge.stats
    assert stats.rejected["drift"] == 1 and stats.dead_lettered == 1
    assert b.bus.stats.drift_rejections == 1
    (dead,) = dead_letters(client, b.bridge)
    assert dead[b"dead:reason"] == b"drift" and dead[b"ts"] == future.timestamp.to_bytes()
    assert pending(client, stream, b.bridge) == 0  # acknowledged, never re-read
    assert_in_balance(stats)


SECRET = b"0123456789abcdef-shared-secret"


def test_with_a_secret_tampered_and_unsigned_entries_are_rejected(
        nodes: Any, client: Any, stream: str) -> None:
    a, b = nodes(0xA, secret=SECRET), nodes(0xB, secret=SECRET)
    a.bus.publish("signed", 1)
    b.wait_count(1)
    genuine = _wire.encode_entry(foreign(0xF1, "t", 5), _wire.JsonCodec(), SECRET, stream)
    tampered = dict(genuine, data=b"6")
    client.xadd(stream, tampered)
    far = time.time_ns() // 1_000_000 + 10 * 365 * 86_400_000  # ten years on
    ahead = dict(genuine, ts=foreign(0xF1, "t", 5, physical=far).timestamp.to_bytes())
    client.xadd(stream, ahead)  # the rogue writer's aim: move every clock forward
    xadd(client, stream, foreign(0xF3, "t", 7))  # unsigned
    xadd(client, stream, foreign(0xF4, "t", 8), secret=b"another-secret-of-16+")
    xadd(client, stream, foreign(0xF5, "last", 9), secret=SECRET)
    events = b.wait_for(lambda es: any(e.type == "last" for e in es))
    b.bridge.close()
    assert [e.data for e in events] == [1, 9]
    assert b.bus.clock.last.physical < far - 60_000
    assert b.bridge.stats.rejected["bad_signature"] == 3
    assert b.bridge.stats.rejected["unsigned"] == 1
    reasons = [d[b"dead:reason"] for d in dead_letters(client, b.bridge)]
    assert reasons == [b"bad_signature"] * 2 + [b"unsigned", b"bad_signature"]
    assert_in_balance(b.bridge.stats)


def test_malformed_entries_are_rejected(nodes: Any, client: Any, stream: str) -> None:
    b = nodes(0xB)
    client.xadd(stream, {b"hello": b"world"})
    xadd(client, stream, foreign(0xF1), v=b"2")
    xadd(client, stream, foreign(0xF1), ts=b"short")
    xadd(client, stream, foreign(0xF1), data=b"{not json")
    xadd(client, stream, foreign(0xF1), type=b"")
    xadd(client, stream, foreign(0xF1), ct=b"text/x-unknown")
    xadd(client, stream, foreign(0xF2, "last"))
    b.wait_for(lambda es: any(e.type == "last" for e in es))
    b.bridge.close()
    assert b.bridge.stats.rejected["malformed"] == 5
    assert b.bridge.stats.rejected["content_type"] == 1
    assert len(dead_letters(client, b.bridge)) == 6
    assert [e.type for e in b.events] == ["last"]
    assert_in_balance(b.bridge.stats)


UNPICKLED: list[str] = []


class Trap:
    """Records its own unpickling: what a malicious pickle would run."""

    def __reduce__(self) -> Any:
        return (UNPICKLED.append, ("ran",))


def test_a_json_bridge_never_unpickles(nodes: Any, client: Any, stream: str) -> None:
    b = nodes(0xB)
    xadd(client, stream, foreign(0xF1, "t", Trap()), codec=_wire.PickleCodec())
    xadd(client, stream, foreign(0xF2, "last"))
    b.wait_for(lambda es: any(e.type == "last" for e in es))
    b.bridge.close()
    assert UNPICKLED == [] and b.bridge.stats.rejected["content_type"] == 1


def test_pickle_only_when_asked_for_by_name(nodes: Any) -> None:
    a, b = nodes(0xA, codec="pickle"), nodes(0xB, codec="pickle")
    a.bus.publish("t", {"set": {1, 2}, "tuple": (1, "x"), "bytes": b"\x00"})
    (event,) = b.wait_count(1)
    assert event.data == {"set": {1, 2}, "tuple": (1, "x"), "bytes": b"\x00"}


def test_an_unencodable_payload_is_counted_and_the_rest_sent(nodes: Any, caplog: Any) -> None:
    a, b = nodes(0xA), nodes(0xB)
    with caplog.at_level(logging.ERROR, logger="hlcbus.redis"):
        a.bus.publish("t", 1)
        a.bus.publish("t", object())
        a.bus.publish("t", 3)
        assert [e.data for e in b.wait_count(2)] == [1, 3]
        a.bridge.close()
    assert a.bridge.stats.encode_errors == 1 and a.bridge.stats.sent == 2
    assert "cannot encode" in caplog.text


# --- crashes and restarts -------------------------------------------------------------------


class AckNever(Reader):
    """Dies between handing entries to the bus and acknowledging them."""

    def _acknowledge(self, acks: Any, dead: Any) -> None:
        self._stop.set()  # the reader ends here, as if killed


class TakeNever(Reader):
    """Dies between reading entries and handing them to the bus."""

    def _take(self, fields: Any) -> Any:
        self._stop.set()
        return KEEP  # not handed to the bus, not acknowledged


@pytest.mark.parametrize("dying", ["AckNever", "TakeNever"])
def test_a_reader_killed_before_acking_loses_and_duplicates_nothing(
        nodes: Any, client: Any, stream: str, dying: str) -> None:
    b = nodes(0xB, reader_class=globals()[dying])
    with client.pipeline(transaction=True) as batch:  # all ten in the reader's first read
        for i in range(10):
            xadd(batch, stream, foreign(0xF1, "t", i, logical=i))
        batch.execute()
    b.bridge._reader._thread.join(WAIT)  # the dying reader stops after its first batch
    assert not b.bridge._reader._thread.is_alive()
    b.bridge.close()
    assert pending(client, stream, b.bridge) == 10  # read, never acknowledged
    restarted = RedisBridge(b.bus, client, stream=stream).start()
    try:
        for i in range(10, 15):
            xadd(client, stream, foreign(0xF1, "t", i, logical=i))
        events = b.wait_count(15)
    finally:
        restarted.close()
    assert [e.data for e in events] == list(range(15))
    stats = restarted.stats
    assert stats.delivered + stats.duplicates == 15
    assert pending(client, stream, restarted) == 0
    assert_in_balance(stats)


def test_pending_entries_trimmed_before_a_restart_are_counted(
        nodes: Any, client: Any, stream: str) -> None:
    b = nodes(0xB, reader_class=TakeNever)
    with client.pipeline(transaction=True) as batch:
        for i in range(3):
            xadd(batch, stream, foreign(0xF1, "t", i, logical=i))
        batch.execute()
    b.bridge._reader._thread.join(WAIT)
    b.bridge.close()
    client.xtrim(stream, maxlen=0)  # gone from the stream, still in the pending list
    restarted = RedisBridge(b.bus, client, stream=stream).start()
    xadd(client, stream, foreign(0xF2, "last"))
    b.wait_for(lambda es: any(e.type == "last" for e in es))
    restarted.close()
    assert restarted.stats.rejected["trimmed"] == 3
    assert pending(client, stream, restarted) == 0
    assert_in_balance(restarted.stats)


def test_redis_restart_with_the_buffer_policy_loses_nothing(durable_redis: Any) -> None:
    stream = "restart-buffer"
    a = _node(durable_redis, 0xA, stream, on_down="buffer")
    b = _node(durable_redis, 0xB, stream)
    try:
        for i in range(50):
            a.bus.publish("t", i)
        b.wait_count(50)
        durable_redis.stop()
        for i in range(50, 100):  # accepted and held while Redis is down
            a.bus.publish("t", i)
        durable_redis.start()
        events = b.wait_count(100)
        assert [e.data for e in events] == list(range(100))
    finally:
        _close(a, b)
    assert a.bridge.stats.sent == 100 and a.bridge.stats.send_failures >= 1
    assert a.bridge.stats.unsent == 0 and a.bridge.stats.refused == 0
    assert b.bridge.stats.reconnects >= 1 and b.bridge.stats.delivered == 100


def test_a_full_buffer_makes_publish_raise_at_once(durable_redis: Any) -> None:
    a = _node(durable_redis, 0xA, "full-buffer", on_down="buffer", max_pending=5)
    b = _node(durable_redis, 0xB, "full-buffer")
    sent, refused = [], []
    try:
        durable_redis.stop()
        for i in range(16):
            try:
                sent.append(a.bus.publish("t", i).data)
            except BufferFull as exc:  # published locally, not to Redis: the caller knows
                assert exc.event is not None and exc.event.data == i
                refused.append(i)
        assert refused and len(sent) + len(refused) == 16
        durable_redis.start()
        assert [e.data for e in b.wait_count(len(sent))] == sent
        assert [e.data for e in a.wait_count(16)] == list(range(16))  # local subscribers: all
    finally:
        _close(a, b)
    assert a.bridge.stats.refused == len(refused) and a.bridge.stats.sent == len(sent)


def test_redis_down_with_the_raise_policy_makes_publish_raise(durable_redis: Any) -> None:
    stream = "restart-raise"
    a = _node(durable_redis, 0xA, stream, on_down="raise", max_pending=5,
              bus_options={"publish_timeout": 0.2})
    b = _node(durable_redis, 0xB, stream)
    accepted, refused = [], 0
    try:
        durable_redis.stop()
        for i in range(16):  # 5 in the batch being sent, 5 waiting, 1 over; then refusals
            try:
                accepted.append(a.bus.publish("t", i).data)
            except BufferFull as exc:
                assert exc.event is None  # refused before stamping: not published anywhere
                refused += 1
        assert refused >= 1
        durable_redis.start()
        events = b.wait_count(len(accepted))
        assert [e.data for e in events] == accepted  # every accepted event arrives
    finally:
        _close(a, b)
    assert a.bus.stats.refused == refused
    assert a.bridge.stats.sent == len(accepted)


def test_close_while_redis_is_down_counts_the_unsent(durable_redis: Any) -> None:
    a = _node(durable_redis, 0xA, "down-close")
    try:
        durable_redis.stop()
        for i in range(5_000):
            a.bus.publish("t", i)
        started = time.monotonic()
        assert a.bridge.close(timeout=0.5) is False
        assert time.monotonic() - started < 3.0  # not one try per batch past the deadline
        with pytest.raises(ValueError, match="timeout"):
            a.bridge.close(timeout=None)  # type: ignore[arg-type]
    finally:
        _close(a)
    stats = a.bridge.stats
    assert stats.unsent + stats.sent == 5_000 and stats.unsent >= 1


def _node(server: Any, node: int, stream: str, *, bus_options: Optional[dict[str, Any]] = None,
          **options: Any) -> Node:
    bus = EventBus(HLC(node=node), **(bus_options or {}))
    made = Node(bus, RedisBridge(bus, server.url, stream=stream, **options), window_ms=100)
    made.bridge.start()
    return made


def _close(*made: Node) -> None:
    for node in made:
        node.bridge.close(timeout=2.0)
        node.bus.close(drain=False, timeout=5.0)


# --- failures the reader and the sender outlive ------------------------------------------------


def test_an_event_the_bus_refuses_unexpectedly_is_rejected_and_reading_goes_on(
        nodes: Any, client: Any, stream: str) -> None:
    """A clock with overflow="raise" refuses a remote counter at its limit."""
    b = nodes(0xB, clock=HLC(node=0xB, overflow="raise"))
    poison = foreign(0xF1, "poison", physical=time.time_ns() // 1_000_000 + 2_000,
                     logical=0xFFFF)
    xadd(client, stream, poison)
    xadd(client, stream, foreign(0xF2, "last"))
    b.wait_for(lambda es: any(e.type == "last" for e in es))
    b.bridge.close()
    stats = b.bridge.stats
    assert stats.rejected["error"] == 1 and stats.errors == 0
    (letter,) = dead_letters(client, b.bridge)
    assert letter[b"dead:reason"] == b"error"
    assert pending(client, stream, b.bridge) == 0
    assert_in_balance(stats)


class FailsOnce(Reader):
    """A read that raises something unexpected, once."""

    failed = False

    def _read_new(self) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug, say")
        super()._read_new()


def test_the_reader_outlives_an_unexpected_error(nodes: Any, client: Any, stream: str) -> None:
    b = nodes(0xB, reader_class=FailsOnce)
    xadd(client, stream, foreign(0xF1, "t", 1))
    assert [e.data for e in b.wait_count(1)] == [1]
    b.bridge.close()
    assert b.bridge.stats.errors == 1


class AckFailsOnce(Reader):
    """The first acknowledgement is lost with the connection."""

    failed = False

    def _acknowledge(self, acks: Any, dead: Any) -> None:
        if not self.failed:
            self.failed = True
            raise redis.ConnectionError("lost before the ack")
        super()._acknowledge(acks, dead)


def test_entries_read_again_after_a_failed_ack_are_not_delivered_twice(
        nodes: Any, client: Any, stream: str) -> None:
    """Even past the bus's dedupe horizon (0 here): the reader remembers them."""
    b = nodes(0xB, reader_class=AckFailsOnce, bus_options={"dedupe_ms": 0})
    with b.bus.subscribe("t") as mailbox, client.pipeline(transaction=True) as batch:
        for i in range(3):
            xadd(batch, stream, foreign(0xF1, "t", i, logical=i))
        xadd(batch, stream, foreign(0xF1, "t", "bad"), v=b"9")  # dead-lettered on the re-read
        batch.execute()
        assert [mailbox.get(timeout=WAIT).data for _ in range(3)] == [0, 1, 2]
        xadd(client, stream, foreign(0xF2, "t", "last"))
        assert mailbox.get(timeout=WAIT).data == "last"  # nothing came twice before it
    b.bridge.close()
    stats = b.bridge.stats
    assert (stats.read, stats.delivered, stats.acked, stats.dead_lettered) == (5, 4, 5, 1)
    assert pending(client, stream, b.bridge) == 0
    assert_in_balance(stats)


def test_a_refused_dead_letter_does_not_hold_the_stream_up(nodes: Any, client: Any,
                                                           stream: str) -> None:
    b = nodes(0xB)
    client.set(b.bridge.dead_letter, "not a stream")  # XADD there fails: WRONGTYPE
    xadd(client, stream, foreign(0xF1), v=b"9")
    xadd(client, stream, foreign(0xF2, "last"))
    b.wait_for(lambda es: any(e.type == "last" for e in es))
    b.bridge.close()
    stats = b.bridge.stats
    assert (stats.dead_lettered, stats.dead_letter_failures) == (0, 1)
    assert pending(client, stream, b.bridge) == 0
    assert_in_balance(stats)


def test_a_lost_consumer_group_is_recreated_where_it_left_off(nodes: Any, client: Any,
                                                              stream: str) -> None:
    b = nodes(0xB)
    xadd(client, stream, foreign(0xF1, "t", 1))
    b.wait_count(1)
    client.xgroup_destroy(stream, b.bridge.group)
    xadd(client, stream, foreign(0xF1, "t", 2, logical=1))  # before the group is back
    xadd(client, stream, foreign(0xF1, "t", 3, logical=2))
    assert [e.data for e in b.wait_count(3)] == [1, 2, 3]


def test_a_redis_error_on_xadd_is_retried_and_counted(nodes: Any, client: Any,
                                                      stream: str) -> None:
    refused = threading.Event()
    telemetry.attach("xadd-refused", SEND_FAILED, lambda *args: refused.set())
    try:
        client.set(stream, "not a stream")  # XADD fails: WRONGTYPE
        a = nodes(0xA, consume=False)
        for i in range(3):
            a.bus.publish("t", i)
        assert refused.wait(WAIT)
        client.delete(stream)
        a.bridge.close(timeout=WAIT)
    finally:
        telemetry.detach("xadd-refused")
    stats = a.bridge.stats
    assert stats.sent == 3 and stats.send_failures >= 1 and stats.unsent == 0
    assert client.xlen(stream) == 3


def test_received_events_never_enter_the_outbound_buffer(nodes: Any) -> None:
    a, b = nodes(0xA), nodes(0xB)
    for i in range(5):
        a.bus.publish("t", i)
    b.wait_count(5)
    b.bridge.close()
    assert b.bridge._sender.sub.stats.received == 0
    assert b.bridge.stats.refused == 0 and b.bridge.stats.pending_out == 0


def test_closing_the_bus_first_with_redis_down_gives_up_after_a_while(
        durable_redis: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(_redis_send, "CLOSE_DEFAULT", 0.2)
    a = _node(durable_redis, 0xA, "bus-first")
    durable_redis.stop()
    for i in range(10):
        a.bus.publish("t", i)
    started = time.monotonic()
    a.bus.close()
    assert time.monotonic() - started < 5.0
    a.bridge.close(timeout=0.1)
    assert a.bridge.stats.unsent + a.bridge.stats.sent == 10 and a.bridge.stats.unsent > 0


# --- trimming, lifecycle, telemetry -------------------------------------------------------------


def test_the_stream_is_trimmed_to_the_ttl(nodes: Any, client: Any, stream: str) -> None:
    filler = nodes(0xA, ttl_ms=0)
    for i in range(1_000):
        filler.bus.publish("t", i)
    filler.bridge.close()
    assert client.xlen(stream) == 1_000
    (newest, _), = client.xrevrange(stream, count=1)
    trimmer = nodes(0xB, ttl_ms=20)
    trimmer.bus.publish("t", "learn")  # its entry id tells the bridge Redis's time
    assert client.xread({stream: newest}, block=int(WAIT * 1000))  # waits for that entry
    time.sleep(0.05)  # waits for time itself: the 1,000 entries are now past the TTL
    trimmer.bus.publish("t", "trim")
    trimmer.bridge.close()
    # "~" trims whole radix-tree nodes (100 entries each by default) only.
    assert client.xlen(stream) <= 102


def test_a_skewed_wall_clock_does_not_trim_fresh_entries(nodes: Any, client: Any,
                                                         stream: str) -> None:
    a = nodes(0xA)
    for i in range(500):
        a.bus.publish("t", i)
    a.bridge.close()
    ahead = ManualClock(time.time_ns() // 1_000_000 + 30_000)  # 30 s fast, within max drift
    fast = nodes(0xF, clock=HLC(node=0xF, wall=ahead), ttl_ms=5_000)
    fast.bus.publish("t", "one")
    fast.bus.publish("t", "two")
    fast.bridge.close()
    assert client.xlen(stream) == 502


def test_ttl_zero_never_trims(nodes: Any, client: Any, stream: str) -> None:
    wall = ManualClock(time.time_ns() // 1_000_000 + 3_600_000)
    a = nodes(0xA, clock=HLC(node=0xA, wall=wall), ttl_ms=0)
    for i in range(300):
        a.bus.publish("t", i)
    a.bridge.close()
    assert client.xlen(stream) == 300


def test_the_ttl_defaults_to_the_stores(redis_server: Any) -> None:
    for bus, ttl_ms in ((EventBus(store_ttl_ms=5_000), 5_000), (EventBus(store_ttl_ms=0), 60_000)):
        bridge = RedisBridge(bus, redis_server.url)
        assert bridge.ttl_ms == ttl_ms
        bridge.close()
        bus.close()


def test_start_twice_raises_and_start_after_close_raises(nodes: Any) -> None:
    a = nodes(0xA)
    with pytest.raises(HLCBusError):
        a.bridge.start()
    a.bridge.close()
    assert a.bridge.close() is True  # again: harmless
    with pytest.raises(HLCBusError):
        a.bridge.start()


def test_start_without_redis_raises_and_changes_nothing() -> None:
    bus = EventBus()
    # Nothing listens on a free port once the probe socket is closed.
    bridge = RedisBridge(bus, f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError):
        bridge.start()
    assert bus.subscriptions == [] and bridge._reader._thread is None
    bridge.close()
    bus.close()


def test_the_bus_closing_first_stops_the_reader(nodes: Any, client: Any, stream: str) -> None:
    b = nodes(0xB)
    b.bus.close()
    xadd(client, stream, foreign(0xF1))
    b.bridge._reader._thread.join(WAIT)
    assert not b.bridge._reader._thread.is_alive()
    b.bridge.close()
    assert pending(client, stream, b.bridge) == 1  # kept for the next start


def test_telemetry_reports_rejections_and_stats(nodes: Any, client: Any, stream: str,
                                                monkeypatch: Any) -> None:
    seen: list[tuple[Any, ...]] = []
    got_stats = threading.Event()

    def record(name: Any, measurements: Any, metadata: Any) -> None:
        seen.append((name, dict(measurements), dict(metadata)))
        if name == STATS:
            got_stats.set()

    monkeypatch.setattr(telemetry, "STATS_INTERVAL", 0.05)
    telemetry.attach_many("redis-test", [REJECTED, STATS, DISCONNECTED, RECONNECTED], record)
    try:
        b = nodes(0xB)
        xadd(client, stream, foreign(0xF1), v=b"9")
        xadd(client, stream, foreign(0xF2, "last"))
        b.wait_for(lambda es: any(e.type == "last" for e in es))
        assert got_stats.wait(WAIT)
        b.bridge.close()
    finally:
        telemetry.detach("redis-test")
    rejected = [m for n, _, m in seen if n == REJECTED]
    assert rejected[0]["reason"] == "malformed" and rejected[0]["stream"] == stream
    stats = [m for n, m, _ in seen if n == STATS]
    assert stats[-1]["read"] >= 1 and "rejected" in stats[-1]


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "error", "words"), [
    ({"stream": ""}, TypeError, "stream"),
    ({"stream": 5}, TypeError, "stream"),
    ({"dead_letter": b"x"}, TypeError, "dead_letter"),
    ({"pattern": ""}, ValueError, "pattern"),
    ({"codec": "yaml"}, ValueError, "codec"),
    ({"codec": object()}, TypeError, "codec"),
    ({"secret": "short"}, ValueError, "secret"),
    ({"secret": 12345678901234567}, TypeError, "secret"),
    ({"on_down": "drop"}, ValueError, "on_down"),
    ({"max_pending": 0}, ValueError, "max_pending"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 1.5}, TypeError, "batch_size"),
    ({"ttl_ms": -1}, ValueError, "ttl_ms"),
    ({"block_ms": 0}, ValueError, "block_ms"),
    ({"block_ms": 5_001}, ValueError, "block_ms"),
    ({"consume": 1}, TypeError, "consume"),
])
def test_bad_arguments_raise_naming_the_argument(redis_server: Any, options: dict[str, Any],
                                                 error: type, words: str) -> None:
    bus = EventBus()
    try:
        with pytest.raises(error, match=words):
            RedisBridge(bus, redis_server.url, **options)
        assert bus.subscriptions == []
    finally:
        bus.close()


def test_bad_bus_or_client(redis_server: Any) -> None:
    bus = EventBus()
    try:
        with pytest.raises(TypeError, match="bus"):
            RedisBridge("bus", redis_server.url)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="redis"):
            RedisBridge(bus, 6379)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="redis"):
            RedisBridge(bus, "http://nowhere")
        decoding = redis.Redis.from_url(redis_server.url, decode_responses=True)
        with pytest.raises(ValueError, match="decode"):
            RedisBridge(bus, decoding)
        decoding.close()
    finally:
        bus.close()


def test_prometheus_exports_the_bridge_stats(nodes: Any, client: Any, stream: str) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from hlcbus import metrics

    a, b = nodes(0xA), nodes(0xB)
    a.bus.publish("t", 1)
    xadd(client, stream, foreign(0xF1), v=b"9")
    xadd(client, stream, foreign(0xF2, "last"))
    b.wait_for(lambda es: any(e.type == "last" for e in es))
    b.bridge.close()
    registry = prometheus_client.CollectorRegistry()
    collector = metrics.register_bridges(a.bridge, b.bridge, registry=registry)
    text = prometheus_client.generate_latest(registry).decode()
    metrics.unregister(collector, registry=registry)
    samples = {(s.name, s.labels["node"], s.labels.get("reason")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples
               if s.name.startswith("hlcbus_redis_")}
    node_b = metrics.node_label(b.bus)
    stats = b.bridge.stats
    assert samples["hlcbus_redis_read_total", node_b, None] == stats.read
    assert samples["hlcbus_redis_delivered_total", node_b, None] == stats.delivered == 2
    assert samples["hlcbus_redis_rejected_total", node_b, "malformed"] == 1
    assert samples["hlcbus_redis_connected", node_b, None] == 1
    assert samples["hlcbus_redis_sent_total", metrics.node_label(a.bus), None] == 1
    assert {name for name, _, _ in samples} == set(metrics.bridge_metric_names())
