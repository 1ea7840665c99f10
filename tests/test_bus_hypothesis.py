"""Hypothesis: ordered release properties, routing, and a stateful model of the bus.

The stateful test drives one bus from one thread with a ManualClock, so that
after each step the bus settles into a state a model can predict exactly: an
ordered subscription has released every event below ``wall - window_ms``
(everything, for window 0), an event routed at or below what it released is
late, and nothing else is delivered.  After every step the machine waits
(bounded) for the workers to reach that state, then checks order, no
duplicates and the accounting identity on every subscription.
"""

from __future__ import annotations

import itertools
from typing import Any

from bus_helpers import (
    BUS_NODE,
    START_MS,
    OrderedModel,
    Recorder,
    assert_accounting,
    assert_strictly_increasing,
    bus_threads,
    manual_bus,
    stamps,
    wait_stats,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import hlcbus
from hlcbus import BusClosed, Event, EventBus, Timestamp

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- properties ---------------------------------------------------------------------------------

arrivals = st.lists(
    st.tuples(st.integers(0, 49), st.integers(0, 3), st.integers(1, 4)),
    min_size=1, max_size=40, unique=True,
)


@FAST
@given(arrivals=arrivals, window=st.sampled_from([50, 80]))
def test_arrivals_within_the_window_come_out_sorted(arrivals: list, window: int) -> None:
    bus, wall = manual_bus()
    try:
        rec = Recorder()
        sub = bus.subscribe("*", rec, ordered=True, window_ms=window, on_late=rec.on_late)
        events = [Event("r", i, Timestamp(START_MS - 49 + p, lg, n))
                  for i, (p, lg, n) in enumerate(arrivals)]
        for event in events:
            assert bus.receive(event)
        wall.advance(window + 1)  # the latest arrival is at START_MS: now below the watermark
        got = rec.wait_for(len(events))
        assert got == sorted(events, key=lambda e: e.timestamp)
        behind = sum(1 for i, e in enumerate(events)
                     if i and e.timestamp < max(x.timestamp for x in events[:i]))
        stats = wait_stats(sub, delivered=len(events), pending=0)
        assert (stats.reordered, stats.late, stats.duplicates) == (behind, 0, 0)
        assert_accounting(stats)
    finally:
        bus.close()


@FAST
@given(count=st.integers(1, 60), batch_size=st.integers(1, 8))
def test_batches_chunk_one_release_in_order(count: int, batch_size: int) -> None:
    bus, wall = manual_bus()
    try:
        rec = Recorder()
        sub = bus.subscribe("*", rec, ordered=True, window_ms=10, batch_size=batch_size)
        sent = [bus.publish("a", i) for i in range(count)]
        wall.advance(11)  # everything becomes due in one step
        assert rec.wait_for(count) == sent
        assert all(type(call) is list for call in rec.calls)
        sizes = [len(call) for call in rec.calls]
        assert sizes == [batch_size] * (count // batch_size) + (
            [count % batch_size] if count % batch_size else [])
        assert_accounting(wait_stats(sub, delivered=count, pending=0))
    finally:
        bus.close()


segments = st.sampled_from(["a", "b", "ab", "vsm", "x1"])
event_types = st.lists(segments, min_size=1, max_size=3).map(".".join)
patterns = st.one_of(
    st.just("*"), event_types, event_types.map(lambda t: t + ".*"),
)


def reference_match(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-2]
        return event_type.startswith(prefix + ".")
    return pattern == event_type


@FAST
@given(pats=st.lists(patterns, min_size=1, max_size=4),
       types=st.lists(event_types, min_size=1, max_size=12))
def test_routing_matches_the_pattern_rules(pats: list, types: list) -> None:
    bus = EventBus()
    recs = [Recorder() for _ in pats]
    try:
        for pattern, rec in zip(pats, recs):
            bus.subscribe(pattern, rec)
        sent = [bus.publish(t, i) for i, t in enumerate(types)]
    finally:
        bus.close()
    for pattern, rec in zip(pats, recs):
        assert rec.events == [e for e in sent if reference_match(pattern, e.type)], pattern


# --- the stateful model -------------------------------------------------------------------------

WINDOWS = (0, 20, 50)
PATTERNS = ("*", "a.*", "a.x", "b")
TYPES = ("a.x", "a.y", "b")
REMOTE_SKEWS = {1: -30, 2: 0, 3: 25}  # node id -> ms its wall runs ahead of the bus's
DUPLICATE_HORIZON = 2 * max(WINDOWS)  # ms: the spec's dedupe horizon is at least this
MAX_SUBS = 4
CLOSE_AFTER_STEPS = 25


class SubState:
    """One live subscription and what it must have seen."""

    def __init__(self, sub: Any, rec: Recorder, pattern: str, ordered: bool,
                 window: int) -> None:
        self.sub, self.rec, self.pattern = sub, rec, pattern
        self.ordered, self.window = ordered, window
        self.model = OrderedModel(window) if ordered else None
        self.routed: list[Event] = []  # every event routed to it, in routing order

    def matches(self, event_type: str) -> bool:
        return reference_match(self.pattern, event_type)

    def route(self, event: Event, high_wall: int) -> None:
        self.routed.append(event)
        if self.model is None:
            return
        self.model.route(event)
        on_time = event.timestamp.physical + self.window >= high_wall
        if self.window and on_time:
            # The guarantee: the model equals the bus (checked after every step),
            # so an event predicted late here would be a late on-time event there.
            assert self.model.late[-1:] != [event], f"on-time event late: {event!r}"

    def settle(self, wall_ms: int) -> None:
        if self.model is not None:
            self.model.settle(wall_ms)
            self.model.wait_matches(self.rec)
            expected = dict(delivered=len(self.model.released), late=len(self.model.late),
                            pending=self.model.pending)
        else:
            assert self.rec.wait_for(len(self.routed)) == self.routed
            expected = dict(delivered=len(self.routed), late=0, pending=0)
        stats = wait_stats(self.sub, received=len(self.routed), duplicates=0, dropped=0,
                           handler_errors=0, **expected)
        assert_accounting(stats)
        delivered = stamps(self.rec.events)
        assert len(set(delivered)) == len(delivered)
        if self.ordered:
            assert_strictly_increasing(self.rec.events)

    def drained(self) -> None:
        """Check the state after a draining close."""
        if self.model is not None:
            self.model.drain()
            assert self.rec.events == self.model.released
            assert [e for e, _ in self.rec.late] == self.model.late
        else:
            assert self.rec.events == self.routed
        stats = self.sub.stats
        assert stats.pending == 0
        assert_accounting(stats)


class BusMachine(RuleBasedStateMachine):
    """Publish, receive held-back remote events, move the clock, (un)subscribe, close."""

    def __init__(self) -> None:
        super().__init__()
        self.bus, self.wall = manual_bus()
        wall = self.wall
        self.remotes = {
            node: hlcbus.HLC(node, wall=lambda skew=skew: wall() + skew)
            for node, skew in REMOTE_SKEWS.items()
        }
        self.high = wall()  # the furthest the wall has been
        self.subs: list[SubState] = []
        self.held: list[Event] = []  # stamped remotely, still on their way
        self.received: list[tuple[Event, int]] = []  # (event, wall when received)
        self.counter = itertools.count()
        self.bus_received = self.bus_duplicates = 0
        self.steps = 0
        self.closed = False

    @initialize(ordered=st.booleans(), window=st.sampled_from(WINDOWS))
    def first_subscription(self, ordered: bool, window: int) -> None:
        self.subscribe("*", ordered, window)

    # --- rules ------------------------------------------------------------------

    @precondition(lambda self: not self.closed and len(self.subs) < MAX_SUBS)
    @rule(pattern=st.sampled_from(PATTERNS), ordered=st.booleans(),
          window=st.sampled_from(WINDOWS))
    def subscribe(self, pattern: str, ordered: bool, window: int) -> None:
        rec = Recorder()
        sub = self.bus.subscribe(pattern, rec, ordered=ordered, window_ms=window,
                                 on_late=rec.on_late, on_error=rec.on_error)
        self.subs.append(SubState(sub, rec, pattern, ordered, window))

    @precondition(lambda self: not self.closed and self.subs)
    @rule(index=st.integers(0, MAX_SUBS - 1))
    def unsubscribe(self, index: int) -> None:
        state = self.subs.pop(index % len(self.subs))
        assert state.sub.close() is True
        assert state.sub not in self.bus.subscriptions
        state.drained()

    @precondition(lambda self: not self.closed)
    @rule(event_type=st.sampled_from(TYPES))
    def publish(self, event_type: str) -> None:
        event = self.bus.publish(event_type, next(self.counter))
        assert event.timestamp == self.bus.clock.last
        self.route(event)

    @precondition(lambda self: not self.closed)
    @rule(node=st.sampled_from(sorted(REMOTE_SKEWS)), event_type=st.sampled_from(TYPES))
    def send_remote(self, node: int, event_type: str) -> None:
        """A remote node stamps an event; it reaches the bus later (deliver_held)."""
        self.held.append(Event(event_type, next(self.counter), self.remotes[node].now()))

    @precondition(lambda self: not self.closed and self.held)
    @rule(index=st.integers(0, 1_000))
    def deliver_held(self, index: int) -> None:
        event = self.held.pop(index % len(self.held))
        assert self.bus.receive(event) is True
        assert self.bus.clock.last > event.timestamp
        self.bus_received += 1
        self.received.append((event, self.wall()))
        self.route(event)

    @precondition(lambda self: not self.closed and self.recent())
    @rule(index=st.integers(0, 1_000))
    def duplicate(self, index: int) -> None:
        recent = self.recent()
        original = recent[index % len(recent)]
        assert self.bus.receive(Event(original.type, "copy", original.timestamp)) is False
        self.bus_duplicates += 1

    @precondition(lambda self: not self.closed)
    @rule(delta=st.sampled_from([-100, -20, -1, 1, 5, 19, 20, 21, 49, 50, 51, 120]))
    def move_clock(self, delta: int) -> None:
        self.wall.advance(delta)
        self.high = max(self.high, self.wall())

    # Closing ends the interesting part of a run: allowed only once it has some history.
    @precondition(lambda self: not self.closed and self.steps >= CLOSE_AFTER_STEPS)
    @rule(drain=st.booleans())
    def close(self, drain: bool) -> None:
        pending = {s.sub.name: s.model.pending if s.model else 0 for s in self.subs}
        delivered = {s.sub.name: len(s.rec.events) for s in self.subs}
        report = self.bus.close(drain=drain)
        self.closed = True
        assert report.drained is drain and report.all_stopped
        assert set(report.stopped) == set(pending)
        if drain:
            for state in self.subs:
                state.drained()
                assert report.discarded[state.sub.name] == 0
        else:
            for state in self.subs:
                name = state.sub.name
                assert report.discarded[name] == pending[name]
                assert len(state.rec.events) == delivered[name]  # nothing more delivered
                stats = state.sub.stats
                assert stats.pending == 0 and stats.dropped == pending[name]
                assert_accounting(stats)
        assert bus_threads() == []

    @precondition(lambda self: self.closed)
    @rule()
    def use_after_close(self) -> None:
        try:
            self.bus.publish("a.x")
        except BusClosed:
            pass
        else:
            raise AssertionError("publish after close did not raise BusClosed")
        try:
            self.bus.receive(Event("a.x", None, Timestamp(START_MS, 0, 1)))
        except BusClosed:
            pass
        else:
            raise AssertionError("receive after close did not raise BusClosed")

    # --- helpers and invariants -----------------------------------------------------

    def recent(self) -> list[Event]:
        """Received events still well inside the dedupe horizon."""
        return [e for e, at in self.received if self.high - at <= DUPLICATE_HORIZON]

    def route(self, event: Event) -> None:
        for state in self.subs:
            if state.matches(event.type):
                state.route(event, self.high)

    @invariant()
    def settled_state_matches_the_model(self) -> None:
        self.steps += 1
        if self.closed:
            return
        wall = self.wall()
        for state in self.subs:
            state.settle(wall)
        stats = self.bus.stats
        assert (stats.received, stats.duplicates, stats.drift_rejections,
                stats.subscriptions) == (self.bus_received, self.bus_duplicates, 0,
                                         len(self.subs))
        assert self.bus.clock.node == BUS_NODE

    def teardown(self) -> None:
        self.bus.close()
        assert bus_threads() == []


def test_bus_state_machine() -> None:
    run_state_machine_as_test(
        BusMachine,
        settings=settings(FAST, max_examples=50, stateful_step_count=50),
    )
