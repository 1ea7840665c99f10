"""Overflow policies: a slow subscriber (a handler parked on a gate) beside a fast one.

Each test parks the slow worker inside its handler on the first event, so its
inbox and ready queue are empty; the next ``MAXSIZE`` publishes then fill the
inbox exactly and every publish after that meets the overflow policy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bus_helpers import (
    WAIT,
    Gate,
    Recorder,
    assert_accounting,
    assert_strictly_increasing,
    wait_stats,
)

from hlcbus import BufferFull, Event, EventBus

MAXSIZE = 5
EXTRA = 4  # publishes beyond a full inbox


@pytest.fixture
def bus() -> Iterator[EventBus]:
    bus = EventBus(publish_timeout=WAIT)
    try:
        yield bus
    finally:
        bus.close()


def slow_and_fast(bus: EventBus, overflow: str, slow_ordered: bool,
                  fast_ordered: bool) -> tuple[Gate, Any, Recorder, Any]:
    slow = Gate()
    # Subscribed first, so that publishers meet the slow one before the fast one.
    s_slow = bus.subscribe("*", slow, maxsize=MAXSIZE, overflow=overflow,
                           ordered=slow_ordered, window_ms=0, name="slow")
    fast = Recorder()
    s_fast = bus.subscribe("*", fast, ordered=fast_ordered, window_ms=0, name="fast")
    return slow, s_slow, fast, s_fast


def fill(bus: EventBus, slow: Gate) -> list[Event]:
    """Park the slow worker on event 0, then fill its inbox; return the events."""
    first = bus.publish("e", 0)
    assert slow.entered.wait(WAIT)
    return [first] + [bus.publish("e", i) for i in range(1, MAXSIZE + 1)]


ORDERINGS = pytest.mark.parametrize(
    ("slow_ordered", "fast_ordered"), [(False, False), (True, False), (False, True), (True, True)],
    ids=["unordered", "slow-ordered", "fast-ordered", "both-ordered"],
)


@ORDERINGS
def test_drop_oldest(bus: EventBus, slow_ordered: bool, fast_ordered: bool) -> None:
    slow, s_slow, fast, s_fast = slow_and_fast(bus, "drop_oldest", slow_ordered, fast_ordered)
    sent = fill(bus, slow)
    sent += [bus.publish("e", MAXSIZE + 1 + i) for i in range(EXTRA)]  # never blocks
    # The fast subscriber got everything while the slow one is still parked.
    assert fast.wait_for(len(sent)) == sent
    assert not slow.release.is_set()
    slow.release.set()
    kept = [sent[0]] + sent[1 + EXTRA:]  # the EXTRA oldest waiting events were dropped
    assert slow.wait_for(len(kept)) == kept
    stats = wait_stats(s_slow, delivered=len(kept), pending=0)
    assert (stats.received, stats.dropped) == (len(sent), EXTRA)
    assert_accounting(wait_stats(s_fast, delivered=len(sent), dropped=0))


@ORDERINGS
def test_drop_newest(bus: EventBus, slow_ordered: bool, fast_ordered: bool) -> None:
    slow, s_slow, fast, s_fast = slow_and_fast(bus, "drop_newest", slow_ordered, fast_ordered)
    sent = fill(bus, slow)
    sent += [bus.publish("e", MAXSIZE + 1 + i) for i in range(EXTRA)]
    assert fast.wait_for(len(sent)) == sent
    assert not slow.release.is_set()
    slow.release.set()
    kept = sent[:MAXSIZE + 1]
    assert slow.wait_for(len(kept)) == kept
    stats = wait_stats(s_slow, delivered=len(kept), pending=0)
    assert (stats.received, stats.dropped) == (len(sent), EXTRA)
    # A later event finds room again.
    last = bus.publish("e", "after")
    assert slow.wait_for(len(kept) + 1)[-1] == last
    assert_accounting(wait_stats(s_fast, delivered=len(sent) + 1, dropped=0))


@ORDERINGS
def test_error_raises_at_once_for_that_subscription_only(
        bus: EventBus, slow_ordered: bool, fast_ordered: bool) -> None:
    slow, s_slow, fast, s_fast = slow_and_fast(bus, "error", slow_ordered, fast_ordered)
    sent = fill(bus, slow)
    refused = []
    for i in range(EXTRA):
        start = time.monotonic()
        with pytest.raises(BufferFull) as info:
            bus.publish("e", MAXSIZE + 1 + i)
        assert time.monotonic() - start < WAIT / 2  # at once, not after the publish timeout
        assert info.value.subscriptions == [s_slow]
        refused.append(info.value.event)
    assert [e.data for e in refused] == list(range(MAXSIZE + 1, MAXSIZE + 1 + EXTRA))
    # The refused events still reached the fast subscriber, in order.
    assert fast.wait_for(len(sent) + EXTRA) == sent + refused
    assert not slow.release.is_set()
    slow.release.set()
    assert slow.wait_for(len(sent)) == sent
    stats = wait_stats(s_slow, delivered=len(sent), pending=0)
    assert (stats.received, stats.dropped) == (len(sent) + EXTRA, EXTRA)
    assert_accounting(wait_stats(s_fast, delivered=len(sent) + EXTRA))


@pytest.mark.parametrize("slow_ordered", [False, True], ids=["unordered", "ordered"])
def test_block_times_out_with_buffer_full(slow_ordered: bool) -> None:
    timeout = 0.2
    bus = EventBus(publish_timeout=timeout)
    try:
        slow, s_slow, fast, s_fast = slow_and_fast(bus, "block", slow_ordered, False)
        sent = fill(bus, slow)
        # The publish that meets the full inbox is in flight already: it never
        # waits there (an ordered worker may hold releases for it), its event
        # goes in one over maxsize, and the next publish waits before stamping.
        sent.append(bus.publish("e", "over"))
        start = time.monotonic()
        with pytest.raises(BufferFull) as info:
            bus.publish("e", "refused")
        waited = time.monotonic() - start
        assert timeout <= waited < timeout + WAIT / 2
        assert info.value.subscriptions == [s_slow] and info.value.event is None
        assert "nothing was published" in str(info.value)
        assert bus.stats.refused == 1
        assert fast.wait_for(len(sent)) == sent  # the refused publish reached nobody
        slow.release.set()
        assert slow.wait_for(len(sent)) == sent
        stats = wait_stats(s_slow, delivered=len(sent), pending=0)
        assert (stats.received, stats.dropped) == (len(sent), 0)
        assert_accounting(wait_stats(s_fast, delivered=len(sent)))
        assert [e.data for e in bus.replay()][-1] == "over"  # nor was it stored
    finally:
        slow.release.set()
        bus.close()


def test_publishes_of_other_types_do_not_lift_the_block() -> None:
    """A publish that reaches no full subscription must not let the next ones in."""
    bus = EventBus(publish_timeout=0.05)
    slow = Gate()
    s_slow = bus.subscribe("a.*", slow, maxsize=MAXSIZE, overflow="block", name="slow")
    try:
        bus.publish("a.x", 0)
        assert slow.entered.wait(WAIT)
        refused = 0
        for i in range(1, 20):
            bus.publish("b.x", i)  # nobody listens: it must not clear the back-pressure
            try:
                bus.publish("a.x", i)
            except BufferFull:
                refused += 1
        assert refused > 0 and bus.stats.refused == refused
        assert s_slow.stats.pending <= MAXSIZE + 1  # one over, for the publish in flight
    finally:
        slow.release.set()
        bus.close()


@pytest.mark.parametrize("slow_ordered", [False, True], ids=["unordered", "ordered"])
def test_block_waits_for_room(bus: EventBus, slow_ordered: bool) -> None:
    slow, s_slow, fast, s_fast = slow_and_fast(bus, "block", slow_ordered, False)
    sent = fill(bus, slow)
    sent.append(bus.publish("e", "over"))  # goes in one over maxsize: see above
    outcome: list[Any] = []
    done = threading.Event()

    def publish() -> None:
        try:
            outcome.append(bus.publish("e", "waited"))
        except BaseException as exc:  # reported below
            outcome.append(exc)
        done.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        # Nothing can make room while the slow handler is parked: the publisher waits.
        assert not done.wait(0.05)
    finally:
        slow.release.set()
        publisher.join(WAIT)
    assert not publisher.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Event)
    sent.append(outcome[0])
    assert slow.wait_for(len(sent)) == sent
    assert fast.wait_for(len(sent)) == sent
    stats = wait_stats(s_slow, delivered=len(sent), pending=0)
    assert stats.dropped == 0
    assert_accounting(wait_stats(s_fast, delivered=len(sent)))


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest", "error"])
def test_drop_and_error_policies_never_slow_publishers(bus: EventBus, overflow: str) -> None:
    # Many publishes against a parked subscriber: they all return while it is
    # still parked, and the fast subscriber sees every one, in order.
    slow, s_slow, fast, s_fast = slow_and_fast(bus, overflow, False, True)
    sent = fill(bus, slow)
    for i in range(2_000):
        try:
            sent.append(bus.publish("e", i))
        except BufferFull as exc:
            assert overflow == "error"
            sent.append(exc.event)
    assert fast.wait_for(len(sent)) == sent
    assert_strictly_increasing(fast.events)
    assert not slow.release.is_set()
    slow.release.set()
    stats = wait_stats(s_slow, pending=0, dropped=2_000)
    assert stats.received == len(sent)
    assert stats.delivered == MAXSIZE + 1
    assert_accounting(stats)


@pytest.mark.parametrize("overflow", ["drop_newest", "error"])
def test_unread_mailbox_overflows_by_policy(bus: EventBus, overflow: str) -> None:
    box = bus.subscribe("*", maxsize=MAXSIZE, overflow=overflow)
    fast = Recorder()
    bus.subscribe("*", fast)
    sent, refused = [], 0
    for i in range(100):
        try:
            sent.append(bus.publish("e", i))
        except BufferFull as exc:
            assert exc.subscriptions == [box]
            sent.append(exc.event)
            refused += 1
    assert fast.wait_for(100) == sent
    stats = wait_stats(box)
    assert stats.received == 100 and stats.dropped >= 100 - 3 * MAXSIZE
    if overflow == "error":
        assert refused == stats.dropped
    assert_accounting(stats)
    got = [box.get(timeout=WAIT) for _ in range(stats.delivered)]
    # Reading made room: what was held back comes through, in publish order.
    bus.close()
    got += list(box)
    assert got == [e for e in sent if e in set(got)]
    assert len(got) == 100 - box.stats.dropped
    assert_accounting(box.stats)


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_pending_never_exceeds_maxsize(bus: EventBus, ordered: bool) -> None:
    # The handler takes its time while the publisher keeps the inbox full:
    # pending (inbox, buffer, released but not yet handled) stays within maxsize.
    gate = Gate()
    sub = bus.subscribe("*", gate, maxsize=MAXSIZE, overflow="drop_newest",
                        ordered=ordered, window_ms=0)
    gate.release.set()
    peak = 0
    for i in range(2_000):
        bus.publish("e", i)
        peak = max(peak, sub.stats.pending)
    assert peak <= MAXSIZE
    assert_accounting(wait_stats(sub, pending=0))


def test_block_on_an_ordered_subscription_never_deadlocks() -> None:
    # Two publishers keep a small ordered "block" subscription full.  A publish
    # in flight holds the ordered worker's releases below it, so a publisher
    # that waited for room while in flight would wait for itself: every such
    # publish then timed out.  Now none does, and nothing is dropped.
    per_thread, maxsize = 5_000, 16
    bus = EventBus(publish_timeout=WAIT)
    try:
        rec = Recorder()
        sub = bus.subscribe("*", rec, ordered=True, window_ms=0, maxsize=maxsize,
                            overflow="block")
        errors: list[BaseException] = []

        def publish(k: int) -> None:
            try:
                for i in range(per_thread):
                    bus.publish("e", (k, i))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=publish, args=(k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(4 * WAIT)
        assert not any(t.is_alive() for t in threads) and errors == []
        stats = wait_stats(sub, delivered=2 * per_thread, pending=0)
        assert stats.dropped == 0 and bus.stats.refused == 0
        assert_strictly_increasing(rec.wait_for(2 * per_thread))
    finally:
        bus.close()
