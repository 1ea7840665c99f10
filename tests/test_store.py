"""The event store and replay: TTL, the size bound, ranges, and the replay_from seam.

Most tests drive a bus on a ManualClock from one thread and call ``replay``,
which folds staged events in and purges before it reads, so what the store
holds is exact.  The seam tests run real publisher threads against a
subscription made with ``replay_from`` and check, after a draining close,
that every event from the replay point on arrived exactly once.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest
from bus_helpers import (
    POLL,
    START_MS,
    WAIT,
    Gate,
    Recorder,
    assert_accounting,
    assert_strictly_increasing,
    manual_bus,
    remote,
    stamps,
    wait_stats,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hlcbus
import hlcbus.store
from hlcbus import BufferFull, ClockDriftError, EventBus, Timestamp

TTL_MS = 1_000
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def wait_until(predicate: Any, what: str, timeout: float = WAIT) -> None:
    """Wait (bounded) for state that nothing notifies, such as the worker's maintenance."""
    deadline = time.monotonic() + timeout
    idle = threading.Condition()
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        with idle:
            idle.wait(POLL)


def matches(pattern: str, event_type: str) -> bool:
    """The pattern rule as the README states it, written independently of the bus."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


@pytest.fixture
def ttl_bus() -> Iterator[tuple[EventBus, hlcbus.ManualClock]]:
    bus, wall = manual_bus(store_ttl_ms=TTL_MS)
    try:
        yield bus, wall
    finally:
        bus.close()


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"store_ttl_ms": -1}, ValueError),
        ({"store_ttl_ms": 1.5}, TypeError),
        ({"store_ttl_ms": True}, TypeError),
        ({"store_max_events": 0}, ValueError),
        ({"store_max_events": "10"}, TypeError),
    ],
)
def test_bad_store_settings_are_rejected(kwargs: dict, error: type) -> None:
    with pytest.raises(error, match=next(iter(kwargs))):
        EventBus(**kwargs)


def test_store_ttl_zero_turns_the_store_off() -> None:
    bus, _ = manual_bus(store_ttl_ms=0)
    try:
        assert bus._store is None
        rec = Recorder()
        bus.subscribe("*", rec)
        event = bus.publish("a", 1)
        assert bus.receive(remote(START_MS - 5))
        assert rec.wait_for(2) == [event, remote(START_MS - 5)]  # the bus still works
        with pytest.raises(ValueError, match="store_ttl_ms"):
            bus.replay()
        with pytest.raises(ValueError, match="store_ttl_ms"):
            bus.replay(start=event.timestamp)
        with pytest.raises(ValueError, match="store_ttl_ms"):
            bus.subscribe("*", rec, replay_from=event.timestamp)
        assert len(bus.subscriptions) == 1  # the refused subscribe changed nothing
    finally:
        bus.close()


# --- TTL ----------------------------------------------------------------------------------------


def test_ttl_purges_by_event_time_as_the_clock_advances(ttl_bus) -> None:
    bus, wall = ttl_bus
    a = bus.publish("a")
    wall.advance(400)
    b = bus.publish("b")
    wall.advance(TTL_MS - 400)  # a is exactly TTL_MS old: still kept (age <= ttl)
    assert bus.replay() == [a, b]
    wall.advance(1)
    assert bus.replay() == [b]
    assert len(bus._store) == 1  # purged from memory, not only hidden from replay
    wall.advance(399)  # b is exactly TTL_MS old
    assert bus.replay() == [b]
    wall.advance(1)
    assert bus.replay() == []
    assert len(bus._store) == 0


def test_ttl_applies_to_received_event_time_not_arrival_time(ttl_bus) -> None:
    bus, wall = ttl_bus
    old = remote(START_MS - TTL_MS - 1, 0xFFFF, 0xFFFF)  # already too old when it arrives
    lowest_kept = remote(START_MS - TTL_MS, 0, 0)  # exactly TTL_MS old, the smallest such key
    edge = remote(START_MS - TTL_MS, node=8)
    fresh = remote(START_MS - 10, node=9)
    for event in (fresh, old, edge, lowest_kept):
        assert bus.receive(event)
    assert bus.replay() == [lowest_kept, edge, fresh]
    wall.advance(TTL_MS - 10)
    assert bus.replay() == [fresh]
    wall.advance(1)
    assert bus.replay() == []


def test_ttl_follows_the_wall_clock_after_a_backward_jump(ttl_bus) -> None:
    bus, wall = ttl_bus
    a = bus.publish("a")
    wall.advance(-5 * TTL_MS)  # the HLC keeps stamping ahead; the store reads the wall
    b = bus.publish("b")
    assert b.timestamp > a.timestamp
    assert bus.replay() == [a, b]
    wall.set(START_MS + TTL_MS + 1)
    assert bus.replay() == []  # both carry physical START_MS


def test_worker_maintenance_purges_without_a_replay(monkeypatch, ttl_bus) -> None:
    monkeypatch.setattr(hlcbus.store, "MAINTAIN_INTERVAL", 0.0)
    bus, wall = ttl_bus
    rec = Recorder()
    bus.subscribe("*", rec)
    bus.publish("a")
    rec.wait_for(1)
    wait_until(lambda: not bus._store._staged, "the worker to fold the staged event in")
    wall.advance(TTL_MS + 1)
    b = bus.publish("b")
    rec.wait_for(2)
    wait_until(lambda: bus._store._sorted == [b], "the worker to purge the expired event")


# --- the size bound -----------------------------------------------------------------------------


@pytest.mark.parametrize("replay_every", [1, 3, 7, 100])
def test_size_bound_keeps_the_newest_published(replay_every: int) -> None:
    bound = 5
    bus, wall = manual_bus(store_max_events=bound)
    try:
        published = []
        for i in range(23):
            published.append(bus.publish("e", i))
            wall.advance(i % 2)
            if i % replay_every == 0:
                got = bus.replay()
                assert got == published[-bound:]
        assert bus.replay() == published[-bound:]
        assert bus.replay(start=published[-3].timestamp) == published[-3:]
    finally:
        bus.close()


def test_size_bound_keeps_the_newest_timestamps_of_out_of_order_receives() -> None:
    bound = 4
    bus, _ = manual_bus(store_max_events=bound)
    try:
        # A replay after each receive folds it in, so the count purge sees every
        # arrival and keeps the newest timestamps (the staging deque, when more
        # than `bound` arrive between folds, keeps the latest arrivals instead).
        offsets = [50, 10, 40, 30, 70, 20, 60, 0, 80, 5]
        received = []
        for offset in offsets:
            received.append(remote(START_MS - offset))
            assert bus.receive(received[-1])
            newest = sorted(received, key=lambda e: e.timestamp)[-bound:]
            assert bus.replay() == newest
    finally:
        bus.close()


def test_memory_stays_bounded_without_subscribers() -> None:
    bound = 1_000
    bus, _ = manual_bus(store_max_events=bound)
    try:
        # Nothing folds staged events in while nobody replays or subscribes, so
        # the bound has two parts: the staging deque's maxlen (the publish path
        # appends without a lock and never purges) and the sorted list, cut to
        # `bound` at each fold.  A replay after the first third fills the sorted
        # part, so the staged part's bound is what the rest of the run checks.
        published = []
        for i in range(3 * bound):
            published.append(bus.publish("e", i))
            assert len(bus._store) <= 2 * bound
            if i == bound:
                assert len(bus.replay()) == bound
        assert len(bus._store) == 2 * bound  # both parts full: the bound is reached, not loose
        assert bus.replay() == published[-bound:]
        assert len(bus._store) == bound
    finally:
        bus.close()


# --- replay: arguments, order, duplicates -------------------------------------------------------


def test_replay_bounds_are_inclusive_and_none_is_open(mbus) -> None:
    bus, wall = mbus
    events = []
    for i in range(6):
        events.append(bus.publish("e", i))
        wall.advance(10)
    ts = stamps(events)
    assert bus.replay() == events
    assert bus.replay(ts[1], ts[4]) == events[1:5]
    assert bus.replay(start=ts[2]) == events[2:]
    assert bus.replay(end=ts[2]) == events[:3]
    assert bus.replay(ts[3], ts[3]) == [events[3]]
    assert bus.replay(ts[4], ts[1]) == []
    # Bounds between stored keys: the nearest keys inside count, none outside.
    just_after_1 = Timestamp(ts[1].physical, ts[1].logical, ts[1].node + 1)
    just_before_4 = Timestamp(ts[4].physical, ts[4].logical, ts[4].node - 1)
    assert bus.replay(just_after_1, just_before_4) == events[2:4]
    assert bus.replay(Timestamp(START_MS + 1_000_000)) == []
    assert bus.replay(end=Timestamp(1)) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"start": START_MS}, TypeError, "start"),
        ({"start": (START_MS, 0, 0)}, TypeError, "start"),
        ({"end": "now"}, TypeError, "end"),
        ({"start": Timestamp(1), "end": 5.0}, TypeError, "end"),
        ({"pattern": ""}, ValueError, "pattern"),
        ({"pattern": "a*"}, ValueError, "pattern"),
        ({"pattern": "*.a"}, ValueError, "pattern"),
        ({"pattern": "a.*.b"}, ValueError, "pattern"),
        ({"pattern": None}, TypeError, "pattern"),
    ],
)
def test_replay_rejects_bad_arguments(mbus, kwargs: dict, error: type, match: str) -> None:
    bus, _ = mbus
    bus.publish("a")
    with pytest.raises(error, match=match):
        bus.replay(**kwargs)


def test_replay_rejects_a_timestamp_of_the_other_core(mbus) -> None:
    bus, _ = mbus
    try:
        other = importlib.import_module("hlcbus._core_py" if hlcbus.CORE == "c" else "hlcbus._core")
    except ImportError:
        pytest.skip("a pure build has no other core")
    with pytest.raises(TypeError, match="start"):
        bus.replay(start=other.Timestamp(1))
    with pytest.raises(TypeError, match="replay_from"):
        bus.subscribe("*", replay_from=other.Timestamp(1))


def test_replay_of_out_of_order_receives_is_in_timestamp_order(mbus) -> None:
    bus, _ = mbus
    first = [remote(START_MS - 30), remote(START_MS - 10, node=3), remote(START_MS - 20)]
    for event in first:
        assert bus.receive(event)
    assert bus.replay() == sorted(first, key=lambda e: e.timestamp)
    # Arrivals older than what was folded in already: the two sorted runs are merged.
    later = [remote(START_MS - 40), remote(START_MS - 10, node=2), remote(START_MS - 15, 3)]
    for event in later:
        assert bus.receive(event)
    own = bus.publish("own")
    expected = sorted(first + later + [own], key=lambda e: e.timestamp)
    got = bus.replay()
    assert got == expected
    assert_strictly_increasing(got)


def test_a_received_duplicate_is_stored_once(mbus) -> None:
    bus, _ = mbus
    event = remote(START_MS - 5, data="first")
    assert bus.receive(event)
    assert not bus.receive(remote(START_MS - 5, data="again"))
    own = bus.publish("own")
    assert not bus.receive(own)  # an echo of our own publish
    got = bus.replay()
    assert got == [event, own]
    assert got[0].data == "first"
    assert bus.stats.duplicates == 2


def test_drift_rejected_events_are_not_stored(mbus) -> None:
    bus, _ = mbus
    limit = bus.clock.max_drift_ms
    ok = remote(START_MS + limit)
    too_far = remote(START_MS + limit + 1, node=8)
    with pytest.raises(ClockDriftError):
        bus.receive(too_far)
    assert bus.receive(ok)
    assert bus.replay() == [ok]
    assert bus.stats.drift_rejections == 1


# --- replay against a sorted reference ----------------------------------------------------------

TYPES = ["a", "a.b", "a.c", "b", "b.x.y"]
PATTERNS = ["*", "a", "a.*", "b.*", "b.x.*", "a.b", "zz", "zz.*"]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(TYPES), st.integers(0, 20)),
        st.tuples(st.just("receive"), st.sampled_from(TYPES),
                  st.tuples(st.integers(-300, 300), st.integers(0, 2), st.integers(1, 3))),
        st.tuples(st.just("replay"), st.sampled_from(PATTERNS), st.none()),
    ),
    min_size=1, max_size=40,
)


def bound_strategy(stored: list[Any]) -> st.SearchStrategy[Optional[Any]]:
    """None, a stored timestamp (to hit the inclusive bounds) or one anywhere near them."""
    near = st.builds(Timestamp, st.integers(START_MS - 310, START_MS + 1_200),
                     st.integers(0, 3), st.integers(0, 4))
    if not stored:
        return st.one_of(st.none(), near)
    return st.one_of(st.none(), st.sampled_from(stamps(stored)), near)


def reference_replay(stored: list[Any], start: Any, end: Any, pattern: str) -> list[Any]:
    return [e for e in sorted(stored, key=lambda e: e.timestamp)
            if (start is None or start <= e.timestamp) and (end is None or e.timestamp <= end)
            and matches(pattern, e.type)]


@FAST
@given(ops=ops, data=st.data())
def test_replay_matches_a_sorted_reference(ops: list, data: st.DataObject) -> None:
    # The wall advances at most 40 * 20 ms: within the TTL and the receive
    # dedupe horizon, so the reference need not model either.
    bus, wall = manual_bus()
    try:
        stored: list[Any] = []
        seen: set[Any] = set()
        for op, kind, arg in ops:
            if op == "publish":
                wall.advance(arg)
                stored.append(bus.publish(kind, len(stored)))
            elif op == "receive":
                physical, logical, node = arg
                event = remote(START_MS + physical, logical, node, kind, len(stored))
                assert bus.receive(event) == (event.timestamp not in seen)
                if event.timestamp not in seen:
                    seen.add(event.timestamp)
                    stored.append(event)
            else:
                start = data.draw(bound_strategy(stored), "start")
                end = data.draw(bound_strategy(stored), "end")
                got = bus.replay(start, end, kind)
                # Events compare by timestamp alone: compare what they carry too.
                assert [(e.timestamp, e.type, e.data) for e in got] == [
                    (e.timestamp, e.type, e.data)
                    for e in reference_replay(stored, start, end, kind)]
        assert bus.replay() == reference_replay(stored, None, None, "*")
        assert len(bus._store) == len(stored)
    finally:
        bus.close()


# --- subscribe(replay_from=...) -----------------------------------------------------------------


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_replay_from_delivers_stored_then_live(mbus, ordered: bool) -> None:
    bus, wall = mbus
    stored = []
    for i in range(5):
        stored.append(bus.publish("e.x" if i % 2 else "e.y", i))
        bus.publish("other", i)
        wall.advance(5)
    # Stamped elsewhere just after stored[2] and received last: replayed in its place.
    late_arrival = remote(stored[2].timestamp.physical, 0, 0xFFFF, "e.z")
    assert bus.receive(late_arrival)
    rec = Recorder()
    sub = bus.subscribe("e.*", rec, ordered=ordered, window_ms=0,
                        replay_from=stored[2].timestamp)
    replayed = [stored[2], late_arrival, stored[3], stored[4]]
    assert sorted(replayed, key=lambda e: e.timestamp) == replayed
    assert rec.wait_for(4) == replayed
    live = [bus.publish("e.live", i) for i in range(3)]
    bus.publish("other")
    assert rec.wait_for(7) == replayed + live
    stats = wait_stats(sub, delivered=7, received=7, pending=0)
    assert stats.late == stats.duplicates == stats.dropped == 0


def test_replay_from_between_keys_and_beyond_the_end(mbus) -> None:
    bus, wall = mbus
    events = []
    for i in range(4):
        events.append(bus.publish("e", i))
        wall.advance(10)
    rec = Recorder()
    between = Timestamp(events[1].timestamp.physical + 1)
    bus.subscribe("*", rec, replay_from=between)
    assert rec.wait_for(2) == events[2:]
    future = Recorder()
    sub = bus.subscribe("*", future, replay_from=Timestamp(START_MS + 100_000))
    live = bus.publish("e", "live")
    assert future.wait_for(1) == [live]  # nothing stored that late: live events only
    wait_stats(sub, delivered=1, received=1)
    assert rec.wait_for(3) == events[2:] + [live]


def test_replay_from_a_mailbox_and_beyond_maxsize(mbus) -> None:
    bus, wall = mbus
    stored = []
    for i in range(12):
        stored.append(bus.publish("e", i))
        wall.advance(1)
    sub = bus.subscribe("*", replay_from=stored[0].timestamp, maxsize=4)
    # The whole snapshot is delivered, though it is three times maxsize; a
    # publish now would block (the "block" policy) until the reader caught up.
    got = [sub.get(WAIT) for _ in range(12)]
    live = bus.publish("e", "live")
    got.append(sub.get(WAIT))
    assert got == stored + [live]
    stats = wait_stats(sub, delivered=13, pending=0)
    assert stats.dropped == 0


def test_replay_from_rejects_bad_arguments_and_changes_nothing(mbus) -> None:
    bus, _ = mbus
    bus.publish("a")
    with pytest.raises(TypeError, match="replay_from"):
        bus.subscribe("*", Recorder(), replay_from=START_MS)
    with pytest.raises(TypeError, match="replay_from"):
        bus.subscribe("*", Recorder(), replay_from=(START_MS, 0, 0))
    assert bus.subscriptions == []


def test_a_replay_that_fails_leaves_no_half_made_subscription(mbus, monkeypatch) -> None:
    bus, _ = mbus
    first = bus.publish("a")

    def broken(*args):
        raise RuntimeError("the store broke")

    monkeypatch.setattr(bus._store, "range", broken)
    with pytest.raises(RuntimeError, match="the store broke"):
        bus.subscribe("*", Recorder(), replay_from=first.timestamp)
    assert bus.subscriptions == []
    bus.publish("a")  # nothing routes to the failed one
    report = bus.close(timeout=WAIT)  # and close does not wait for its worker
    assert report.all_stopped


def test_replay_from_with_an_ordered_subscription_and_out_of_order_receives(mbus) -> None:
    bus, wall = mbus
    received = [remote(START_MS - d, 0, n) for d, n in [(5, 1), (30, 2), (10, 3), (20, 1)]]
    for event in received:
        assert bus.receive(event)
    rec = Recorder()
    sub = bus.subscribe("*", rec, ordered=True, window_ms=50, on_late=rec.on_late,
                        replay_from=Timestamp(START_MS - 20))
    in_window = remote(START_MS - 15, 0, 4)  # older than the newest replayed, not yet released
    assert bus.receive(in_window)
    wall.advance(200)
    expected = sorted([received[0], received[2], received[3], in_window],
                      key=lambda e: e.timestamp)
    assert rec.wait_for(4) == expected
    stats = wait_stats(sub, delivered=4, pending=0)
    assert stats.late == 0 and rec.late == []


@pytest.mark.parametrize("overflow", ["block", "drop_newest", "drop_oldest", "error"])
def test_publishes_between_routing_and_snapshot_meet_no_limit(overflow: str) -> None:
    # The window a publisher thread can hit at any time: the new subscription
    # is routed but its worker has not started, so nothing drains its inbox.
    # Publishes there are also in the snapshot; a limit would make them block
    # (the worker never comes) or count as dropped events that are delivered.
    bus, _ = manual_bus(publish_timeout=WAIT / 10)
    try:
        first = bus.publish("e", "first")
        prepare = bus._prepare_replay
        racing: list[Any] = []
        refused: list[BaseException] = []

        def publish_then_prepare(sub: Any, start: Any) -> None:
            for i in range(6):
                try:
                    racing.append(bus.publish("e", i))
                except BufferFull as exc:  # raised here, it would leave sub unstarted
                    refused.append(exc)
            prepare(sub, start)

        bus._prepare_replay = publish_then_prepare
        rec = Recorder()
        sub = bus.subscribe("*", rec, maxsize=3, overflow=overflow, replay_from=first.timestamp)
        assert refused == []
        assert rec.wait_for(7) == [first] + racing
        stats = wait_stats(sub, delivered=7, pending=0)
        assert stats.received == 7 and stats.dropped == 0
    finally:
        bus.close()


# --- the replay_from seam under concurrent publishing -------------------------------------------

SEAM_START_AT = 2_000  # each publisher's count before the subscriber picks its replay point
SEAM_AFTER = 5_000  # events each publisher still publishes once subscribe has returned
SEAM_CAP = 100_000  # per publisher: the bound on a round, should subscribe never return
SEAM_ROUNDS = 5
SEAM_MAXSIZE = 64  # far below the burst and the replayed snapshot
SEAM_SWITCH_INTERVAL = 1e-5  # seconds: hand the GIL over often, so the seam meets publishes


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Hand the GIL over every SEAM_SWITCH_INTERVAL during the test.

    With the default 5 ms slices the publishers run to their end while
    subscribe waits for the GIL, and no publish is ever in flight at the seam.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(SEAM_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def seam_round(overflow: str, ordered: bool, publishers: int, recent: bool) -> dict[str, Any]:
    """Subscribe with replay_from while publishers run; check the seam; return what it saw."""
    bus = EventBus(publish_timeout=WAIT, store_max_events=publishers * SEAM_CAP)
    published: list[list[Any]] = [[] for _ in range(publishers)]
    errors: list[BaseException] = []
    started = [threading.Event() for _ in range(publishers)]
    subscribed = threading.Event()
    after_subscribe = [0] * publishers
    got: list[Any] = []
    result: dict[str, Any] = {}

    def publisher(k: int) -> None:
        out, publish = published[k], bus.publish
        try:
            for i in range(SEAM_CAP):
                # Every third event is noise the pattern filters out.
                out.append(publish(f"seam.{k}" if i % 3 else "noise", (k, i)))
                if i == SEAM_START_AT:
                    started[k].set()
                if subscribed.is_set():
                    after_subscribe[k] += 1
                    if after_subscribe[k] == SEAM_AFTER:
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
            started[k].set()

    def subscriber() -> None:
        try:
            for event in started:
                assert event.wait(WAIT)
            # An old replay point replays thousands of events; a recent one
            # replays a few, so that subscribe reaches the seam quickly.
            start = published[0][-1 if recent else SEAM_START_AT // 2].timestamp
            result["start"] = start
            before = sum(map(len, published))
            began = time.monotonic()
            result["sub"] = bus.subscribe("seam.*", got.append, ordered=ordered, window_ms=0,
                                          maxsize=SEAM_MAXSIZE, overflow=overflow,
                                          replay_from=start)
            result["subscribe_s"] = time.monotonic() - began
            result["during"] = sum(map(len, published)) - before
            subscribed.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    # A parked subscription routed ahead of the one under test: every publish
    # then goes through its overflow path (a Python call that takes a lock)
    # after storing the event and before appending it to the new inbox.  Under
    # the GIL that is the only switch point inside the window the seam must
    # close; without it the window is a few bytecodes that never yield.
    bystander = Gate()
    bus.subscribe("*", bystander, maxsize=1, overflow="drop_newest", name="bystander")
    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(publishers)]
    threads.append(threading.Thread(target=subscriber))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(4 * WAIT)
        assert not any(t.is_alive() for t in threads), "publishers or subscribe deadlocked"
    finally:
        bystander.release.set()
        report = bus.close(timeout=WAIT)
    assert errors == []
    assert report.all_stopped
    assert result["subscribe_s"] < WAIT
    assert after_subscribe == [SEAM_AFTER] * publishers  # live events followed the seam

    start, sub = result["start"], result["sub"]
    expected = sorted((e for out in published for e in out
                       if e.type != "noise" and e.timestamp >= start), key=lambda e: e.timestamp)
    stats = sub.stats
    assert_accounting(stats)
    assert stats.pending == 0 and stats.late == 0
    # A publish looks its route up before it stamps, so every event routed to
    # the new subscription is stamped after `start`: nothing older arrives.
    assert stats.received == len(expected)
    assert len(set(stamps(got))) == len(got), "an event was delivered twice"
    assert all(e.timestamp >= start for e in got)
    if overflow == "block":
        assert stats.dropped == 0
        assert sorted(stamps(got)) == stamps(expected), "an event was lost at the seam"
    else:
        assert set(stamps(got)) <= set(stamps(expected))
        assert len(got) + stats.dropped == len(expected)
    if ordered:
        assert_strictly_increasing(got)
    else:  # replayed in order, then arrivals: each publisher's events stay in its order
        for k in range(publishers):
            assert_strictly_increasing([e for e in got if e.data[0] == k])
    return {"during": result["during"], "dropped": stats.dropped}


@pytest.mark.parametrize(
    ("overflow", "ordered", "publishers"),
    [
        ("block", False, 1),
        ("block", False, 2),
        ("drop_newest", False, 2),
        ("drop_newest", True, 2),
        ("block", True, 1),
        ("block", True, 2),
    ],
)
def test_replay_from_seam_under_concurrent_publishing(busy_switching: None, overflow: str,
                                                     ordered: bool, publishers: int) -> None:
    rounds = [seam_round(overflow, ordered, publishers, recent=bool(i % 2))
              for i in range(SEAM_ROUNDS)]
    # The seam was exercised: some subscribe ran while publishes went on.
    assert any(r["during"] for r in rounds), rounds


def test_a_repeat_received_after_the_dedupe_horizon_is_stored_once() -> None:
    bus, wall = manual_bus()
    try:
        first = remote(START_MS - 10, node=5, data="first")
        assert bus.receive(first) is True
        bus.replay()  # folds the first copy in
        bus._seen.clear()  # what the dedupe horizon's expiry does, without waiting it out
        assert bus.receive(remote(START_MS - 10, node=5, data="repeat")) is True
        replayed = bus.replay()
        assert [(e.timestamp, e.data) for e in replayed] == [(first.timestamp, "first")]
    finally:
        bus.close()
