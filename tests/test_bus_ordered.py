"""Ordered delivery: release order, the window, late events, duplicates, many nodes.

Most tests drive the bus clock with a ManualClock, so the watermark moves only
when the test moves it; an ordered worker re-checks its buffer every few
milliseconds, and the tests wait for its deliveries on a Recorder.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from typing import Any

import pytest
from bus_helpers import (
    START_MS,
    WAIT,
    OrderedModel,
    Recorder,
    assert_accounting,
    assert_strictly_increasing,
    remote,
    stamps,
    wait_stats,
)

import hlcbus
from hlcbus import Event, EventBus, Timestamp

WINDOW = 50  # ms


def ordered_sub(bus: EventBus, window_ms: int = WINDOW, pattern: str = "*",
                **kwargs: Any) -> tuple[Any, Recorder]:
    rec = Recorder()
    sub = bus.subscribe(pattern, rec, ordered=True, window_ms=window_ms, on_late=rec.on_late,
                        **kwargs)
    return sub, rec


# --- order and the window --------------------------------------------------------------


def test_local_publishes_arrive_in_order_at_once() -> None:
    with EventBus() as bus:
        sub, rec = ordered_sub(bus, window_ms=0)
        sent = [bus.publish("a", i) for i in range(1_000)]
        assert rec.wait_for(1_000) == sent
        assert_strictly_increasing(rec.events)
        assert_accounting(wait_stats(sub, delivered=1_000, late=0, pending=0))


def test_out_of_order_receives_within_the_window_are_reordered(mbus) -> None:
    bus, wall = mbus
    sub, rec = ordered_sub(bus)
    rng = random.Random(3)
    events = [remote(START_MS - WINDOW + 1 + rng.randrange(WINDOW), rng.randrange(3),
                     node=rng.randrange(1, 4)) for _ in range(200)]
    events = list({e.timestamp: e for e in events}.values())
    for event in events:
        assert bus.receive(event)
    stats = sub.stats
    assert stats.delivered == 0  # nothing is below the watermark yet
    wall.advance(WINDOW + 1)
    got = rec.wait_for(len(events))
    assert got == sorted(events, key=lambda e: e.timestamp)
    stats = wait_stats(sub, delivered=len(events), pending=0)
    assert stats.reordered > 0 and stats.late == 0
    assert_accounting(stats)


def test_release_waits_for_the_watermark(mbus) -> None:
    bus, wall = mbus
    sub, rec = ordered_sub(bus)
    due = remote(START_MS - WINDOW - 1)  # below wall - window: releasable now
    held = remote(START_MS - WINDOW, node=8)  # at the watermark: not yet
    bus.receive(held)
    bus.receive(due)
    assert rec.wait_for(1) == [due]
    # Both sat in one buffer pass: had `held` been releasable it would have come too.
    assert_accounting(wait_stats(sub, delivered=1, pending=1))
    assert rec.events == [due]
    wall.advance(1)
    assert rec.wait_for(2) == [due, held]
    assert_accounting(wait_stats(sub, delivered=2, pending=0))


def test_release_follows_a_moving_watermark(mbus) -> None:
    bus, wall = mbus
    sub, rec = ordered_sub(bus)
    events = [remote(START_MS + i, node=2) for i in range(0, 100, 10)]
    for event in events:
        bus.receive(event)
    for _ in range(10):
        wall.advance(10)
        # Released: physical < wall - window.
        expected = [e for e in events if e.timestamp.physical < wall() - WINDOW]
        assert rec.wait_for(len(expected)) == expected
    assert_accounting(wait_stats(sub, delivered=len(expected)))


def test_real_clock_delay_is_the_window_plus_a_timer_tick() -> None:
    with EventBus() as bus:
        rec = Recorder()
        arrived: list[float] = []

        def handler(event: Event) -> None:
            arrived.append(time.time())
            rec(event)

        bus.subscribe("*", handler, ordered=True, window_ms=WINDOW)
        start = time.time()
        bus.publish("a")
        rec.wait_for(1)
        delay_ms = (arrived[0] - start) * 1000
        assert WINDOW <= delay_ms < 2 * WINDOW  # never early; a tick late, not a window late


def test_ordered_mailbox_yields_in_order(mbus) -> None:
    bus, _ = mbus
    sub = bus.subscribe("*", ordered=True, window_ms=WINDOW)
    events = [remote(START_MS - 10 + i, node=i % 3 + 1) for i in (4, 2, 9, 1, 7)]
    for event in events:
        bus.receive(event)
    bus.close()
    assert list(sub) == sorted(events, key=lambda e: e.timestamp)


# --- late events ------------------------------------------------------------------------------


def test_event_behind_the_release_point_is_late(mbus) -> None:
    bus, wall = mbus
    sub, rec = ordered_sub(bus)
    first = remote(START_MS - 10, node=2)
    bus.receive(first)
    wall.advance(WINDOW)  # watermark START - 10 + 0 ... first.physical < wall - window
    assert rec.wait_for(1) == [first]
    behind = remote(START_MS - 20, node=3)
    assert bus.receive(behind) is True  # new to the bus; late for this subscription
    late = rec.wait_late(1)
    assert late[0][0] == behind
    lateness = late[0][1]
    assert type(lateness) is int and lateness >= 0
    after = remote(START_MS + 1, node=3)
    bus.receive(after)
    wall.advance(WINDOW)
    assert rec.wait_for(2) == [first, after]  # the late one never entered the stream
    stats = wait_stats(sub, delivered=2, late=1, pending=0)
    assert_accounting(stats)


def test_late_is_counted_without_on_late(mbus) -> None:
    bus, wall = mbus
    rec = Recorder()
    sub = bus.subscribe("*", rec, ordered=True, window_ms=0)
    published = bus.publish("a")
    assert rec.wait_for(1) == [published]
    behind = remote(START_MS - 1, node=4)
    bus.receive(behind)
    marker = bus.publish("b")
    assert rec.wait_for(2) == [published, marker]
    assert_accounting(wait_stats(sub, delivered=2, late=1, pending=0))


def test_on_late_that_raises_is_reported_and_not_fatal(mbus) -> None:
    bus, _ = mbus
    rec = Recorder()

    def on_late(event: Event, lateness: int) -> None:
        raise RuntimeError("on_late broke")

    sub = bus.subscribe("*", rec, ordered=True, window_ms=0, on_late=on_late,
                        on_error=rec.on_error)
    first = bus.publish("a")
    rec.wait_for(1)
    behind = remote(START_MS - 1, node=4)
    bus.receive(behind)
    errors = rec.wait_errors(1)
    assert errors[0][0] == behind and isinstance(errors[0][1], RuntimeError)
    last = bus.publish("b")
    assert rec.wait_for(2) == [first, last]
    assert_accounting(wait_stats(sub, delivered=2, late=1, handler_errors=1))


def test_window_zero_receive_behind_local_release_is_late(mbus) -> None:
    bus, wall = mbus
    sub, rec = ordered_sub(bus, window_ms=0)
    mine = bus.publish("a")
    assert rec.wait_for(1) == [mine]
    ahead = remote(START_MS + 5, node=9)
    bus.receive(ahead)
    assert rec.wait_for(2) == [mine, ahead]  # window 0: released as soon as it is admitted
    behind = remote(START_MS, 0, node=1)  # below `mine` (same ms, node 1 < BUS_NODE)
    bus.receive(behind)
    assert rec.wait_late(1)[0][0] == behind
    assert_accounting(wait_stats(sub, delivered=2, late=1, pending=0))


# --- identity: equal stamps, duplicates ---------------------------------------------------------


def test_equal_physical_and_logical_from_two_nodes_are_two_events(mbus) -> None:
    bus, wall = mbus
    sub, rec = ordered_sub(bus)
    b = remote(START_MS - 5, 3, node=2, data="b")
    a = remote(START_MS - 5, 3, node=1, data="a")
    assert bus.receive(b) is True
    assert bus.receive(a) is True
    wall.advance(WINDOW)
    assert rec.wait_for(2) == [a, b]
    assert [e.data for e in rec.events] == ["a", "b"]
    assert_accounting(wait_stats(sub, delivered=2, reordered=1, duplicates=0, pending=0))


def test_echo_of_a_buffered_event_is_delivered_once(mbus) -> None:
    # A bridge may hand the bus back an event it published: the same timestamp,
    # so the same event.  The bus knows its own clock's stamps and drops the
    # echo before routing, so no subscription, ordered or not, sees it twice.
    bus, wall = mbus
    sub, rec = ordered_sub(bus)
    unordered = Recorder()
    plain = bus.subscribe("*", unordered)
    event = bus.publish("a", 1)
    assert bus.receive(Event(event.type, event.data, event.timestamp)) is False
    assert bus.stats.duplicates == 1
    wall.advance(WINDOW + 1)
    assert rec.wait_for(1) == [event]
    marker = bus.publish("marker")
    wall.advance(WINDOW + 1)
    assert rec.wait_for(2) == [event, marker]
    assert unordered.wait_for(2) == [event, marker]
    assert_accounting(wait_stats(sub, delivered=2, duplicates=0, late=0, pending=0))
    assert_accounting(wait_stats(plain, received=2, delivered=2, pending=0))


def test_echo_of_a_released_event_is_a_duplicate_not_late(mbus) -> None:
    bus, wall = mbus
    sub, rec = ordered_sub(bus)
    event = bus.publish("a", 1)
    wall.advance(WINDOW + 1)
    assert rec.wait_for(1) == [event]
    assert bus.receive(Event(event.type, event.data, event.timestamp)) is False
    marker = bus.publish("marker")
    wall.advance(WINDOW + 1)
    assert rec.wait_for(2) == [event, marker]
    assert rec.late == []
    assert bus.stats.duplicates == 1
    assert_accounting(wait_stats(sub, delivered=2, duplicates=0, late=0, pending=0))


def test_duplicate_received_after_the_bus_forgot_it_is_dropped_by_the_subscription(
        mbus) -> None:
    # Past the bus's dedupe horizon only the ordered subscription's release log
    # remembers the event: it is then counted there as a duplicate, not late.
    bus, wall = mbus
    sub, rec = ordered_sub(bus)
    event = remote(wall() - 1, 0, node=42)
    assert bus.receive(event) is True
    wall.advance(WINDOW + 1)
    assert rec.wait_for(1) == [event]
    bus._seen.clear()  # what the horizon's expiry does, without waiting it out
    assert bus.receive(Event(event.type, event.data, event.timestamp)) is True
    marker = bus.publish("marker")
    wall.advance(WINDOW + 1)
    assert rec.wait_for(2) == [event, marker]
    assert_accounting(wait_stats(sub, delivered=2, duplicates=1, late=0, pending=0))


# --- the guarantee --------------------------------------------------------------------------------


@pytest.mark.parametrize("window_ms", [0, 20, WINDOW])
def test_event_received_within_its_window_is_never_late(mbus, window_ms: int) -> None:
    # A scripted run checked step by step against OrderedModel: the release
    # point is exact with a ManualClock once each step has settled.
    bus, wall = mbus
    sub, rec = ordered_sub(bus, window_ms=window_ms)
    model = OrderedModel(window_ms)
    rng = random.Random(window_ms)
    high = wall()  # the furthest the wall has been
    on_time: set[Timestamp] = set()
    for step in range(250):
        roll = rng.random()
        if roll < 0.25:
            wall.advance(rng.choice([-15, -5, 1, 5, 10, 25]))
            high = max(high, wall())
        elif roll < 0.35:
            model.route(bus.publish("local", step))
        else:
            ahead = rng.random() < 0.6
            physical = high - window_ms + rng.randrange(0, 15) if ahead else (
                high - window_ms - 1 - rng.randrange(0, 40))
            event = remote(physical, rng.randrange(4), node=rng.randrange(1, 6), data=step)
            if any(e.timestamp == event.timestamp for e in model.released + model.buffered
                   + model.late):
                continue
            if physical + window_ms >= high:
                on_time.add(event.timestamp)
            assert bus.receive(event)
            model.route(event)
        model.settle(wall())
        model.wait_matches(rec)
    assert on_time and model.late  # both kinds were exercised
    if window_ms:
        # With window_ms=0 the release point is the bus clock (local ordering), so a
        # receive behind an admitted later stamp is late however early it arrives.
        assert not on_time & set(stamps(e for e, _ in rec.late))
    assert_strictly_increasing(rec.events)
    assert_accounting(wait_stats(sub, delivered=len(model.released), late=len(model.late),
                                 pending=model.pending))
    bus.close()
    model.drain()
    assert rec.events == model.released
    assert_accounting(sub.stats)


# --- several publisher threads, window 0 ----------------------------------------------------------


def test_window_zero_exact_order_across_publisher_threads() -> None:
    threads, per_thread = 4, 2_000
    with EventBus() as bus:
        sub, rec = ordered_sub(bus, window_ms=0)
        barrier = threading.Barrier(threads)
        sent: list[Event] = []
        lock = threading.Lock()

        def publish(k: int) -> None:
            mine = []
            barrier.wait()
            for i in range(per_thread):
                mine.append(bus.publish(f"t{k}", i))
            with lock:
                sent.extend(mine)

        workers = [threading.Thread(target=publish, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        got = rec.wait_for(threads * per_thread)
        assert got == sorted(sent, key=lambda e: e.timestamp)
        stats = wait_stats(sub, delivered=threads * per_thread, pending=0)
        assert stats.late == 0 and stats.duplicates == 0 and rec.late == []
        assert_accounting(stats)


# --- several nodes, end to end ------------------------------------------------------------------


class Node(threading.Thread):
    """A simulated node: its own HLC (node id, skewed wall) sends events to the bus.

    Each event is held back for a random delay, below the window or above it,
    before ``bus.receive``; a few are sent twice.  Sleeping here is the point:
    the test is about wall time passing between stamping and arrival.
    """

    def __init__(self, bus: EventBus, node_id: int, skew_ms: int, count: int,
                 seed: int) -> None:
        super().__init__(name=f"node-{node_id}")
        self.bus = bus
        self.clock = hlcbus.HLC(node_id, wall=lambda: time.time_ns() // 1_000_000 + skew_ms)
        self.count = count
        self.rng = random.Random(seed)
        self.arrivals: list[tuple[Event, int]] = []  # (event, bus wall just before receive)
        self.resent = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def _run(self) -> None:
        held: list[tuple[float, int, Event]] = []
        start, made = time.monotonic(), 0
        while made < self.count or held:
            now = time.monotonic()
            if made < self.count and now >= start + made * 0.0015:
                event = Event(f"node.{self.clock.node}", made, self.clock.now())
                delay = (self.rng.uniform(0, WINDOW - 15) if self.rng.random() < 0.7
                         else self.rng.uniform(WINDOW + 10, 2.5 * WINDOW))
                heapq.heappush(held, (now + delay / 1000, made, event))
                made += 1
            elif held and held[0][0] <= now:
                event = heapq.heappop(held)[2]
                arrive = self.bus.clock.wall_ms()
                assert self.bus.receive(event) is True
                self.arrivals.append((event, arrive))
                if self.rng.random() < 0.05:  # at-least-once delivery: send it again
                    again = self.arrivals[self.rng.randrange(len(self.arrivals))][0]
                    assert self.bus.receive(again) is False
                    self.resent += 1
            else:
                wake = min(start + made * 0.0015 if made < self.count else now + 1,
                           held[0][0] if held else now + 1)
                time.sleep(min(max(wake - now, 0), 0.002))


def test_nodes_with_skew_and_delays_end_to_end() -> None:
    bus = EventBus(dedupe_ms=60_000)
    try:
        s_win, windowed = ordered_sub(bus, window_ms=WINDOW, pattern="node.*", name="win")
        s_zero, zero = ordered_sub(bus, window_ms=0, name="zero", batch_size=16)
        direct = Recorder()
        s_dir = bus.subscribe("*", direct, name="direct")
        nodes = [Node(bus, 100 + k, skew, 150, seed=k)
                 for k, skew in enumerate([0, 7, 15, -20])]
        for node in nodes:
            node.start()
        for node in nodes:
            node.join(30)
        assert not any(node.is_alive() for node in nodes)
        assert [exc for node in nodes for exc in node.errors] == []
        report = bus.close()
    finally:
        bus.close()
    assert report.all_stopped
    arrivals = [a for node in nodes for a in node.arrivals]
    sent = {event.timestamp: event for event, _ in arrivals}
    assert len(sent) == len(arrivals) == 600

    assert bus.stats.received == 600
    assert bus.stats.duplicates == sum(node.resent for node in nodes)

    # Unordered: everything once.
    assert sorted(stamps(direct.events)) == sorted(sent)
    for rec, sub in ((windowed, s_win), (zero, s_zero)):
        delivered = stamps(rec.events)
        late = stamps(e for e, _ in rec.late)
        assert_strictly_increasing(rec.events)
        assert len(set(delivered)) == len(delivered)
        assert not set(delivered) & set(late)
        assert sorted(delivered + late) == sorted(sent)
        stats = sub.stats
        assert (stats.delivered, stats.late, stats.pending) == (len(delivered), len(late), 0)
        assert_accounting(stats)
    assert_accounting(s_dir.stats)

    # The guarantee, with 2 ms of slack for the wall reading taken before receive().
    on_time = {e.timestamp for e, arrive in arrivals
               if arrive + 2 <= e.timestamp.physical + WINDOW}
    assert len(on_time) > 200
    assert len(on_time) < len(arrivals)  # some arrived after their window
    assert not on_time & set(stamps(e for e, _ in windowed.late))
    assert zero.late  # window 0 makes any later arrival of an earlier stamp late


# --- races around the release point ---------------------------------------------------------


class RaceWall:
    """A wall clock that lets a receive() start inside an ordered worker's step.

    When armed, the worker's next wall reading starts ``bus.receive(event)`` on
    another thread and waits until that receive is inside the clock (its
    in-flight floor set, its own wall reading taken at ``early``); the worker
    then reads ``late``: the wall passed the event's window meanwhile.  The
    receive finishes at the worker's next wall reading, or once ``proceed`` is
    set (by the test's handler), whichever comes first.
    """

    def __init__(self, ms: int) -> None:
        self.ms = ms
        self.worker = ""
        self.armed = False
        self.fired = False
        self.inside = threading.Event()
        self.proceed = threading.Event()
        self.receiver: threading.Thread | None = None
        self.results: list[Any] = []

    def arm(self, worker: str, bus: EventBus, event: Event, early: int, late: int) -> None:
        self.worker, self.bus, self.event = worker, bus, event
        self.early, self.late = early, late
        self.armed = True

    def _receive(self) -> None:
        try:
            self.results.append(self.bus.receive(self.event))
        except BaseException as exc:  # reported by the test
            self.results.append(exc)

    def __call__(self) -> int:
        me = threading.current_thread()
        if self.armed and me.name == self.worker:
            if not self.fired:
                self.fired = True
                self.receiver = threading.Thread(target=self._receive, name="receiver")
                self.receiver.start()
                assert self.inside.wait(WAIT)
                self.ms = self.late
                return self.ms
            self.proceed.set()
        elif me is self.receiver and not self.inside.is_set():
            self.inside.set()
            self.proceed.wait(WAIT)
            return self.early
        return self.ms


def test_receive_racing_a_release_within_its_window_is_not_late() -> None:
    # The guarantee at its edge: the event reaches the bus (receive() has begun)
    # while the wall is still inside its window, and the worker reads a wall
    # past it a moment later.  A worker that takes its in-flight bound before
    # reading the wall releases past the event and makes it late.
    wall = RaceWall(START_MS)
    bus = EventBus(hlcbus.HLC(0xB05, wall=wall))
    try:
        rec = Recorder()

        def handler(event: Event) -> None:
            rec(event)
            if wall.armed:  # a release happened: let the stalled receive go on
                wall.proceed.set()

        sub = bus.subscribe("*", handler, ordered=True, window_ms=100, on_late=rec.on_late,
                            name="race")
        warm = remote(START_MS - 200, node=4)  # due at once
        bus.receive(warm)
        assert rec.wait_for(1) == [warm]  # the worker now sleeps on an empty buffer
        event = remote(START_MS - 90, node=5)  # its window ends at START + 10
        after = remote(START_MS - 50, node=6)  # a later stamp, not due at START
        wall.arm("hlcbus-race", bus, event, early=START_MS, late=START_MS + 60)
        bus.receive(after)  # wakes the worker: its step reads the armed wall
        assert wall.inside.wait(WAIT)
        assert wall.receiver is not None
        wall.receiver.join(WAIT)
        assert wall.results == [True]
        rec.wait_until(lambda: len(rec.events) + len(rec.late) == 3, what="all three")
        assert [e for e, _ in rec.late] == []
        assert rec.events == [warm, event, after]
        assert_accounting(wait_stats(sub, delivered=3, late=0, pending=0))
    finally:
        wall.proceed.set()
        bus.close()


def test_release_bound_never_passes_the_clock_while_a_receive_is_in_flight(mbus) -> None:
    # White-box (EventBus._in_flight, _in_flight_bound): a receive() records the
    # event's own timestamp as its in-flight floor before it merges the clock,
    # so that floor may lie above everything stamped so far.  Were a worker to
    # release up to just below it, a local publish stamped meanwhile (above the
    # clock the worker read, below that floor) could land behind a released
    # event and be late, with window_ms=0 too.  The bound must stay <= the clock.
    bus, _ = mbus
    bus.publish("a")
    ahead = Timestamp(START_MS + 50, 0, 9)
    fake_thread = -1
    bus._in_flight[fake_thread] = ahead
    try:
        bound = bus._in_flight_bound()
        assert bound is not None and bound <= bus.clock.last
    finally:
        del bus._in_flight[fake_thread]
    below = Timestamp(START_MS - 50, 0, 9)
    bus._in_flight[fake_thread] = below
    try:
        assert bus._in_flight_bound() < below
    finally:
        del bus._in_flight[fake_thread]
