"""EventBus API: events, publish, patterns, handlers and mailboxes, close, receive."""

from __future__ import annotations

import threading

import pytest
from bus_helpers import (
    BUS_NODE,
    START_MS,
    WAIT,
    Gate,
    Recorder,
    assert_accounting,
    assert_strictly_increasing,
    bus_threads,
    remote,
    stamps,
    wait_stats,
)

import hlcbus
from hlcbus import BusClosed, ClockDriftError, Event, EventBus, Timestamp

# --- Event --------------------------------------------------------------------


def test_event_fields() -> None:
    ts = Timestamp(1_000, 2, 3)
    payload = {"k": [1, 2]}
    event = Event("vsm.a", payload, ts)
    assert (event.type, event.data, event.timestamp) == ("vsm.a", payload, ts)
    assert event.data is payload


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("", None, Timestamp(1)), ValueError),
        ((3, None, Timestamp(1)), TypeError),
        ((None, None, Timestamp(1)), TypeError),
        ((b"a", None, Timestamp(1)), TypeError),
        (("a", None, 5), TypeError),
        (("a", None, None), TypeError),
        (("a", None, (1, 0, 0)), TypeError),
    ],
)
def test_event_rejects_bad_fields(args: tuple, error: type) -> None:
    with pytest.raises(error):
        Event(*args)


@pytest.mark.parametrize("field", ["type", "data", "timestamp", "extra"])
def test_event_is_immutable(field: str) -> None:
    event = Event("a", [1], Timestamp(1_000, 0, 1))
    with pytest.raises(AttributeError):
        setattr(event, field, "x")
    assert (event.type, event.data, event.timestamp) == ("a", [1], Timestamp(1_000, 0, 1))


def test_event_identity_is_its_timestamp() -> None:
    ts = Timestamp(1_000, 1, 9)
    a, b = Event("a", 1, ts), Event("b", 2, ts)
    c = Event("a", 1, Timestamp(1_000, 1, 10))
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2


# --- publish ------------------------------------------------------------------


def test_publish_returns_event_stamped_by_the_bus_clock(mbus) -> None:
    bus, wall = mbus
    before = bus.clock.last
    first = bus.publish("vsm.a", {"x": 1})
    assert type(first) is Event
    assert (first.type, first.data) == ("vsm.a", {"x": 1})
    assert first.timestamp > before
    assert first.timestamp == bus.clock.last
    assert first.timestamp.node == BUS_NODE
    assert first.timestamp.physical == START_MS
    second = bus.publish("vsm.a")
    assert second.data is None
    assert second.timestamp > first.timestamp
    wall.advance(5)
    third = bus.publish("other")
    assert third.timestamp.physical == START_MS + 5


def test_publish_default_clock_is_a_fresh_hlc(bus: EventBus) -> None:
    assert type(bus.clock) is hlcbus.HLC
    event = bus.publish("a")
    assert event.timestamp == bus.clock.last
    assert EventBus().clock.node != bus.clock.node  # each bus gets its own node id


def test_publish_routes_to_matching_handler(bus: EventBus) -> None:
    rec = Recorder()
    bus.subscribe("a", rec)
    sent = [bus.publish("a", i) for i in range(20)]
    assert rec.wait_for(20) == sent
    assert [e.data for e in rec.events] == list(range(20))
    assert rec.threads and all(name.startswith("hlcbus-") for name in rec.threads)


PATTERN_CASES = {
    "vsm.a": {"vsm.a"},
    "*": {"vsm", "vsm.a", "vsm.a.b", "vsmx", "vsmx.a", "other"},
    "vsm.*": {"vsm.a", "vsm.a.b"},
    "vsm.a.*": {"vsm.a.b"},
    "vsm": {"vsm"},
}


def test_patterns_exact_star_and_prefix(bus: EventBus) -> None:
    recorders = {p: Recorder() for p in PATTERN_CASES}
    for pattern, rec in recorders.items():
        bus.subscribe(pattern, rec)
    types = ["vsm", "vsm.a", "vsm.a.b", "vsmx", "vsmx.a", "other"]
    for t in types:
        bus.publish(t)
    bus.close()  # drains every subscription
    for pattern, rec in recorders.items():
        got = [e.type for e in rec.events]
        assert got == [t for t in types if t in PATTERN_CASES[pattern]], pattern


def test_subscribe_after_publish_sees_only_later_events(bus: EventBus) -> None:
    bus.publish("a", 0)  # cached route with no subscriber
    rec = Recorder()
    bus.subscribe("a", rec)
    bus.publish("a", 1)
    assert [e.data for e in rec.wait_for(1)] == [1]
    bus.close()
    assert [e.data for e in rec.events] == [1]


def test_many_event_types_are_all_routed(bus: EventBus) -> None:
    # More distinct types than a route cache would want to keep.
    rec = Recorder()
    bus.subscribe("t.*", rec)
    sent = [bus.publish(f"t.{i}", i) for i in range(5_000)]
    assert rec.wait_for(len(sent)) == sent


# --- mailbox ---------------------------------------------------------------------


def test_mailbox_get_in_order_and_timeout(bus: EventBus) -> None:
    sub = bus.subscribe("a")
    sent = [bus.publish("a", i) for i in range(5)]
    assert [sub.get(timeout=WAIT) for _ in range(5)] == sent
    with pytest.raises(TimeoutError):
        sub.get(timeout=0.01)
    assert_accounting(wait_stats(sub, delivered=5, pending=0))


def test_mailbox_iteration_ends_after_close(bus: EventBus) -> None:
    sub = bus.subscribe("a")
    got: list[Event] = []
    reader = threading.Thread(target=lambda: got.extend(sub))
    reader.start()
    try:
        sent = [bus.publish("a", i) for i in range(50)]
        report = bus.close()
    finally:
        reader.join(WAIT)
    assert not reader.is_alive()
    assert got == sent
    assert report.stopped == {sub.name: True}
    with pytest.raises(BusClosed):
        sub.get(timeout=0)


def test_mailbox_keeps_events_until_read_after_close(bus: EventBus) -> None:
    sub = bus.subscribe("a")
    sent = [bus.publish("a", i) for i in range(3)]
    bus.close()
    assert list(sub) == sent


# --- batches -------------------------------------------------------------------------


def test_batch_size_delivers_lists_in_order(bus: EventBus) -> None:
    gate = Gate()
    bus.subscribe("a", gate, batch_size=3)
    first = bus.publish("a", 0)
    assert gate.entered.wait(WAIT)  # the worker is parked on [first]
    rest = [bus.publish("a", i) for i in range(1, 10)]
    gate.release.set()
    assert gate.wait_for(10) == [first, *rest]
    assert all(type(call) is list for call in gate.calls)
    assert [len(call) for call in gate.calls] == [1, 3, 3, 3]


def test_ordered_batches_follow_timestamp_order(mbus) -> None:
    bus, wall = mbus
    rec = Recorder()
    bus.subscribe("*", rec, ordered=True, window_ms=100, batch_size=4)
    events = [remote(START_MS - 50 + (i * 7) % 10, node=i) for i in range(10)]
    for event in events:
        assert bus.receive(event)
    wall.advance(200)
    got = rec.wait_for(10)
    assert got == sorted(events, key=lambda e: e.timestamp)
    assert [len(call) for call in rec.calls] == [4, 4, 2]


# --- subscription close and context managers ---------------------------------------------


def test_subscription_close_stops_routing(bus: EventBus) -> None:
    rec, other = Recorder(), Recorder()
    sub = bus.subscribe("a", rec)
    bus.subscribe("a", other)
    bus.publish("a", 1)
    assert sub.close() is True
    assert sub not in bus.subscriptions
    assert bus.stats.subscriptions == 1
    bus.publish("a", 2)
    assert [e.data for e in other.wait_for(2)] == [1, 2]
    assert [e.data for e in rec.events] == [1]
    assert sub.close() is True  # again: harmless
    assert not any(t.name == f"hlcbus-{sub.name}" for t in threading.enumerate())
    assert_accounting(sub.stats)


def test_subscription_close_drains_ordered_buffer_in_order(mbus) -> None:
    bus, _ = mbus
    rec = Recorder()
    sub = bus.subscribe("*", rec, ordered=True, window_ms=1_000)
    events = [remote(START_MS - 10 + i, node=1) for i in (5, 1, 4, 2, 3)]
    for event in events:
        bus.receive(event)
    assert sub.close()
    assert rec.events == sorted(events, key=lambda e: e.timestamp)
    assert_accounting(wait_stats(sub, delivered=5, pending=0))


def test_subscription_close_without_drain_drops_pending(mbus) -> None:
    bus, _ = mbus
    rec = Recorder()
    sub = bus.subscribe("*", rec, ordered=True, window_ms=1_000)
    for i in range(4):
        bus.publish("a", i)
    assert sub.close(drain=False)
    assert rec.events == []
    stats = sub.stats
    assert (stats.received, stats.dropped, stats.delivered, stats.pending) == (4, 4, 0, 0)
    assert_accounting(stats)


def test_subscription_context_manager(bus: EventBus) -> None:
    rec = Recorder()
    with bus.subscribe("a", rec) as sub:
        assert sub in bus.subscriptions
        bus.publish("a", 1)
    assert sub not in bus.subscriptions
    assert [e.data for e in rec.events] == [1]  # drained by the exit
    bus.publish("a", 2)
    assert [e.data for e in rec.events] == [1]


def test_bus_context_manager_closes_and_drains() -> None:
    rec = Recorder()
    before = set(threading.enumerate())
    with EventBus() as bus:
        bus.subscribe("*", rec, ordered=True, window_ms=10_000)
        sent = [bus.publish("a", i) for i in range(10)]
    assert bus.closed
    assert rec.events == sent
    assert set(threading.enumerate()) <= before
    with pytest.raises(BusClosed):
        bus.publish("a")


# --- bus close --------------------------------------------------------------------------


def test_close_drain_delivers_everything(mbus) -> None:
    bus, _ = mbus
    ordered, direct = Recorder(), Recorder()
    s_ord = bus.subscribe("*", ordered, ordered=True, window_ms=5_000, name="ord")
    s_dir = bus.subscribe("*", direct, name="dir")
    s_box = bus.subscribe("*", ordered=True, window_ms=5_000, name="box")
    received = [remote(START_MS - 100 + i, node=n) for i, n in ((30, 2), (10, 1), (20, 3))]
    for event in received:
        bus.receive(event)
    published = [bus.publish("p", i) for i in range(5)]
    everything = sorted(received + published, key=lambda e: e.timestamp)
    report = bus.close(drain=True)
    assert report.drained is True
    assert ordered.events == everything
    assert direct.events == received + published  # arrival order
    assert list(s_box) == everything
    assert report.delivered == {"ord": 8, "dir": 8, "box": 8}
    assert report.discarded == {"ord": 0, "dir": 0, "box": 0}
    assert report.stopped == {"ord": True, "dir": True, "box": True}
    assert report.all_stopped
    for sub in (s_ord, s_dir, s_box):
        stats = sub.stats
        assert (stats.received, stats.delivered, stats.pending) == (8, 8, 0)
        assert_accounting(stats)


def test_close_without_drain_discards_and_reports(mbus) -> None:
    bus, _ = mbus
    rec = Recorder()
    s_ord = bus.subscribe("*", rec, ordered=True, window_ms=5_000, name="ord")
    s_box = bus.subscribe("*", name="box", maxsize=3, overflow="drop_newest")
    for i in range(6):
        bus.publish("p", i)
    report = bus.close(drain=False)
    assert report.drained is False
    assert rec.events == []
    assert report.delivered["ord"] == 0 and report.discarded["ord"] == 6
    # The mailbox holds what was delivered to it; the rest was dropped on arrival or discarded.
    box = s_box.stats
    assert report.delivered["box"] == box.delivered == len(list(s_box))
    assert report.discarded["box"] + box.delivered <= 6
    for sub in (s_ord, s_box):
        stats = sub.stats
        assert stats.pending == 0
        assert_accounting(stats)
    assert s_ord.stats.dropped == 6
    assert report.all_stopped


def test_publish_receive_subscribe_after_close_raise(mbus) -> None:
    bus, _ = mbus
    bus.subscribe("a", Recorder())
    last = bus.clock.last
    first = bus.close()
    assert bus.closed
    with pytest.raises(BusClosed):
        bus.publish("a")
    with pytest.raises(BusClosed):
        bus.receive(remote(START_MS))
    with pytest.raises(BusClosed):
        bus.subscribe("a", Recorder())
    assert bus.clock.last == last
    second = bus.close()  # again: fine
    assert isinstance(second, hlcbus.CloseReport)
    assert second.stopped == first.stopped
    assert bus.subscriptions == []


def test_no_thread_remains_after_close() -> None:
    before = set(threading.enumerate())
    bus = EventBus()
    bus.subscribe("a", Recorder())
    bus.subscribe("*", Recorder(), ordered=True, window_ms=0)
    bus.subscribe("*", Recorder(), ordered=True, window_ms=50, batch_size=2)
    bus.subscribe("b")
    for i in range(100):
        bus.publish("a", i)
    assert len(set(threading.enumerate()) - before) >= 4
    report = bus.close()
    assert report.all_stopped
    assert set(threading.enumerate()) - before == set()
    assert bus_threads() == []


def test_close_of_an_idle_bus() -> None:
    bus = EventBus()
    report = bus.close()
    assert report.delivered == {} and report.all_stopped


# --- receive ---------------------------------------------------------------------------------


def test_receive_merges_the_clock_and_routes(mbus) -> None:
    bus, _ = mbus
    rec = Recorder()
    bus.subscribe("r", rec)
    ahead = remote(START_MS + 500, 3, node=42)  # within the default max drift
    assert bus.receive(ahead) is True
    assert bus.clock.last > ahead.timestamp
    assert bus.publish("x").timestamp > ahead.timestamp
    assert rec.wait_for(1) == [ahead]
    assert bus.stats.received == 1


def test_receive_duplicate_returns_false_and_is_counted(mbus) -> None:
    bus, _ = mbus
    rec = Recorder()
    sub = bus.subscribe("*", rec)
    event = remote(START_MS - 5, node=3)
    assert bus.receive(event) is True
    assert bus.receive(Event("r", "other payload", event.timestamp)) is False
    assert bus.receive(event) is False
    marker = bus.publish("marker")
    assert rec.wait_for(2) == [event, marker]
    stats = bus.stats
    assert (stats.received, stats.duplicates) == (1, 2)
    assert_accounting(wait_stats(sub, received=2, delivered=2))


def test_receive_beyond_max_drift_changes_nothing() -> None:
    wall = hlcbus.ManualClock(START_MS)
    bus = EventBus(hlcbus.HLC(BUS_NODE, wall=wall, max_drift_ms=100))
    try:
        rec = Recorder()
        sub = bus.subscribe("*", rec)
        ordered = Recorder()
        bus.subscribe("*", ordered, ordered=True, window_ms=0)
        bus.publish("first")
        last = bus.clock.last
        too_far = remote(START_MS + 101, node=5)
        with pytest.raises(ClockDriftError):
            bus.receive(too_far)
        assert bus.clock.last == last
        assert bus.stats.drift_rejections == 1
        assert bus.stats.received == 0
        edge = remote(START_MS + 100, node=5)  # exactly at the limit: accepted
        assert bus.receive(edge) is True
        assert [e.type for e in rec.wait_for(2)] == ["first", "r"]
        assert rec.events[1] == edge
        assert too_far not in rec.events
        assert ordered.wait_for(2)[1] == edge
        assert_accounting(wait_stats(sub, received=2, delivered=2))
        # The rejected event is not remembered either: once in range, it is new.
        wall.advance(50)
        assert bus.receive(too_far) is True
    finally:
        bus.close()


@pytest.mark.parametrize("value", [None, 3, "r", Timestamp(1), (("r", None, Timestamp(1)))])
def test_receive_rejects_non_events(mbus, value) -> None:
    bus, _ = mbus
    rec = Recorder()
    bus.subscribe("*", rec)
    last = bus.clock.last
    with pytest.raises(TypeError):
        bus.receive(value)
    assert bus.clock.last == last
    assert bus.stats.received == 0
    event = bus.publish("ok")
    assert rec.wait_for(1) == [event]


def test_stats_fields(bus: EventBus) -> None:
    sub = bus.subscribe("a", Recorder())
    stats = sub.stats
    for field in ("received", "delivered", "reordered", "late", "duplicates", "dropped",
                  "handler_errors", "restarts", "pending", "watermark_lag_ms", "failed"):
        assert hasattr(stats, field), field
    assert stats.failed is False
    assert_accounting(stats)
    bus_stats = bus.stats
    assert (bus_stats.received, bus_stats.duplicates, bus_stats.drift_rejections,
            bus_stats.subscriptions) == (0, 0, 0, 1)


def test_publishers_on_many_threads(bus: EventBus) -> None:
    rec = Recorder()
    sub = bus.subscribe("*", rec)
    per_thread, threads = 500, 4
    barrier = threading.Barrier(threads)
    sent: list[list[Event]] = [[] for _ in range(threads)]

    def publish(k: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            sent[k].append(bus.publish(f"t{k}", i))

    workers = [threading.Thread(target=publish, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    got = rec.wait_for(per_thread * threads)
    assert len(set(stamps(got))) == per_thread * threads
    for k in range(threads):  # each publisher's events arrive in its own order
        assert [e for e in got if e.type == f"t{k}"] == sent[k]
    assert_strictly_increasing(sorted(got, key=lambda e: e.timestamp))
    assert_accounting(wait_stats(sub, delivered=per_thread * threads, pending=0))


def test_subscription_closed_from_its_own_handler(bus: EventBus) -> None:
    # An "unsubscribe after the first match" handler: close() cannot wait for
    # its own worker, so it must return (False: not stopped yet) instead of
    # waiting forever; the worker stops once the handler returns.
    rec = Recorder()
    returned: list[bool] = []
    done = threading.Event()

    def handler(event: Event) -> None:
        rec(event)
        if event.data == 0:
            returned.append(sub.close())
            done.set()

    sub = bus.subscribe("a", handler)
    first = bus.publish("a", 0)
    assert done.wait(WAIT), "close() from the handler never returned"
    assert returned == [False]
    assert sub not in bus.subscriptions
    bus.publish("a", 1)  # no longer routed
    assert sub.close(timeout=WAIT) is True
    assert rec.events == [first]
    assert_accounting(wait_stats(sub, delivered=1, pending=0))


def test_bus_closed_from_a_handler(bus: EventBus) -> None:
    rec, other = Recorder(), Recorder()
    reports: list[hlcbus.CloseReport] = []
    done = threading.Event()

    def handler(event: Event) -> None:
        rec(event)
        reports.append(bus.close())
        done.set()

    bus.subscribe("stop", handler, name="stopper")
    bus.subscribe("*", other, name="other")
    sent = [bus.publish("x", i) for i in range(3)]
    stop = bus.publish("stop")
    assert done.wait(WAIT), "bus.close() from a handler never returned"
    assert reports[0].stopped == {"stopper": False, "other": True}
    assert other.events == [*sent, stop]
    with pytest.raises(BusClosed):
        bus.publish("x")
