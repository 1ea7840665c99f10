"""EventBus: publish, receive, subscribe, close.

The bus stamps and routes; each Subscription (delivery.py) delivers on its own
worker thread.  Routing reads a cache of type -> subscriptions that
subscribe/close invalidate, so the publish path takes no lock.

Publishes in flight.  An ordered subscription must not release past an event
that is stamped but not yet in its inbox.  Each publishing thread therefore
records, before it stamps, a floor its stamp will exceed (the clock's last
value; for ``receive``, the event's own timestamp) and clears it once the
event is routed.  Workers release only below the lowest recorded floor, so
local publishes are never late, whatever the window.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from hlcbus import telemetry
from hlcbus._compat import core
from hlcbus.delivery import (
    DEDUPE_MIN_MS,
    OVERFLOW_POLICIES,
    Subscription,
    SubscriptionStats,
    _before,
)
from hlcbus.errors import BufferFull, BusClosed, ClockDriftError
from hlcbus.store import EventStore

HLC = core.HLC
Event = core.Event
Timestamp = core.Timestamp
stamp = core.stamp
get_ident = threading.get_ident

ROUTE_CACHE_LIMIT = 4_096  # distinct event types cached before the cache restarts
IN_FLIGHT_POLL = 0.0002  # seconds between checks while close waits for publishes


@dataclass(frozen=True)
class BusStats:
    """Bus-level counters: receive's duplicates and drift rejections, refused publishes."""

    received: int
    duplicates: int
    drift_rejections: int
    refused: int
    subscriptions: int


@dataclass(frozen=True)
class CloseReport:
    """What ``EventBus.close`` did, per subscription name."""

    drained: bool
    delivered: dict[str, int]
    discarded: dict[str, int]
    stopped: dict[str, bool]

    @property
    def all_stopped(self) -> bool:
        return all(self.stopped.values())


def _check_pattern(pattern: Any) -> str:
    if type(pattern) is not str:
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    if not pattern:
        raise ValueError("pattern must be a non-empty str")
    if "*" in pattern[:-1] or (pattern.endswith("*") and pattern != "*"
                               and not pattern.endswith(".*")):
        raise ValueError(f"pattern {pattern!r}: '*' may only be the whole pattern or end "
                         "it as '.*', e.g. 'vsm.*'")
    return pattern


def _matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _check_int(name: str, value: Any, minimum: int) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


class EventBus:
    """An in-process event bus whose subscribers may receive events in HLC order.

    ``publish`` stamps events with ``clock``; ``receive`` takes events stamped
    elsewhere.  Thread-safe throughout.  ``publish_timeout`` (seconds) bounds
    how long a publisher waits on a full subscription under the ``"block"``
    policy; ``dedupe_ms`` how long ``receive`` remembers timestamps (default:
    twice the largest window, at least DEDUPE_MIN_MS).  The event store keeps
    published and received events for ``store_ttl_ms`` of event time (0: no
    store) and at most ``store_max_events``, for ``replay``.
    """

    def __init__(self, clock: Optional[HLC] = None, *, publish_timeout: float = 5.0,
                 dedupe_ms: Optional[int] = None, store_ttl_ms: int = 60_000,
                 store_max_events: int = 100_000) -> None:
        if clock is None:
            clock = HLC()
        elif type(clock) is not HLC:
            raise TypeError(f"clock must be an hlcbus.HLC, not {type(clock).__name__}")
        if type(publish_timeout) not in (int, float) or not publish_timeout > 0:
            raise ValueError(f"publish_timeout must be a positive number, got {publish_timeout!r}")
        if dedupe_ms is not None:
            _check_int("dedupe_ms", dedupe_ms, 0)
        _check_int("store_ttl_ms", store_ttl_ms, 0)
        _check_int("store_max_events", store_max_events, 1)
        self.clock = clock
        self._store = (EventStore(store_ttl_ms, store_max_events, clock.wall_ms)
                       if store_ttl_ms else None)
        self._store_add = self._store.add if self._store is not None else None
        self.publish_timeout = float(publish_timeout)
        self._dedupe_ms = dedupe_ms
        # _dedupe_horizon() of the current subscriptions, kept by subscribe and
        # _unroute so that receive does not scan them (read without a lock).
        self._horizon_ms = dedupe_ms if dedupe_ms is not None else DEDUPE_MIN_MS
        # Guards _subs, the route cache's invalidation, _closed's transition and
        # the subscription names.  The publish path never takes it.
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._routes: dict[Any, tuple[Subscription, ...]] = {}
        # The same for receive, without local-only subscriptions (see _keep_local).
        self._received_routes: dict[Any, tuple[Subscription, ...]] = {}
        self._names: collections.Counter[str] = collections.Counter()
        self._closed = False
        self._close_report: Optional[CloseReport] = None
        self._jumps_reported = (0, 0)  # clock jump counts last emitted
        # thread id -> floor of that thread's publish in flight (None: idle).
        # Each thread writes only its own key, so no lock is needed.
        self._in_flight: dict[int, Optional[Timestamp]] = {}
        # Guards _seen, _seen_order and the receive counters: a duplicate check,
        # the clock merge and the insert must be one step.
        self._seen_lock = threading.Lock()
        self._seen: set[Timestamp] = set()
        self._seen_order: collections.deque[tuple[int, Timestamp]] = collections.deque()
        self._received = self._duplicates = self._drift_rejections = 0
        self._refused = 0  # publishes refused before stamping by a full "block" subscription
        # Set when an event went into a full "block" subscription: publishes
        # then wait for room before they go in flight (see _hold_back).
        self._backpressure = False

    # --- publishing -------------------------------------------------------------

    def publish(self, type: str, data: Any = None) -> Event:
        """Stamp ``Event(type, data, clock.now())`` and route it; return the event.

        Costs well under a microsecond with one subscriber: it only appends
        to each matching subscription's inbox.  Raises BusClosed after
        ``close``, TypeError/ValueError for a bad type, BufferFull when an
        ``"error"`` or timed-out ``"block"`` subscription had no room (the
        other subscriptions still got the event).
        """
        if self._backpressure:
            self._hold_back(type)
        # The slot is set before the closed check and the route lookup, so that
        # close() and _unroute() see every publish that may still append.
        slots, tid, clock = self._in_flight, get_ident(), self.clock
        slots[tid] = clock.last
        full = None
        try:
            if self._closed:
                raise BusClosed("the bus is closed")
            try:
                subs = self._routes[type]
            except (KeyError, TypeError):
                subs = self._route(type)
            event = stamp(clock, type, data)
            store_add = self._store_add
            if store_add is not None:  # stored before routed: replay_from relies on it
                store_add(event)
            # _offer's loop, inlined: the method call was a tenth of a publish.
            for sub in subs:
                inbox = sub._inbox
                if len(inbox) < sub._room:
                    inbox.append(event)
                elif not sub._offer_slow(event):
                    full = [sub] if full is None else full + [sub]
                    continue
                if sub._sleeping:
                    sub._sleeping = False
                    sub._wake_up()
        finally:
            slots[tid] = None
        if full:
            raise BufferFull(event, full)
        return event

    def receive(self, event: Event) -> bool:
        """Take an event stamped elsewhere; False if it is a duplicate.

        Merges the clock (``clock.update``) and routes the event.  Raises
        TypeError for a non-Event, BusClosed after ``close``, and
        ClockDriftError when its timestamp is beyond the clock's max drift
        (then nothing is stored, delivered or changed; it is counted).
        """
        if type(event) is not Event:
            raise TypeError(f"event must be an hlcbus.Event, not {type(event).__name__}")
        if self._backpressure:
            self._hold_back(event.type, received=True)
        slots, tid = self._in_flight, get_ident()
        ts = event.timestamp
        slots[tid] = ts
        try:
            if self._closed:
                raise BusClosed("the bus is closed")
            try:
                subs = self._received_routes[event.type]
            except KeyError:
                subs = self._route(event.type, received=True)
            if not self._admit(ts):
                return False
            store_add = self._store_add
            if store_add is not None:
                store_add(event)
            full = self._offer(subs, event) if subs else None
        finally:
            slots[tid] = None
        if full:
            raise BufferFull(event, full)
        return True

    def _hold_back(self, event_type: Any, received: bool = False) -> None:
        """Before a publish goes in flight, wait for room in its full "block" subscriptions.

        Raises BufferFull (with ``event`` None: nothing was stamped, stored
        or routed) when one has no room within ``publish_timeout``.
        """
        routes = self._received_routes if received else self._routes
        try:
            subs = routes[event_type]
        except (KeyError, TypeError):
            subs = self._route(event_type, received)
        deadline = time.monotonic() + self.publish_timeout
        full = [sub for sub in subs if sub.overflow == "block"
                and not sub._wait_for_room(deadline)]
        if full:
            with self._seen_lock:
                self._refused += 1
            raise BufferFull(None, full)
        # Only when no "block" subscription is over its limit: one this type
        # does not reach may be, and the next publish of its types must wait.
        self._backpressure = any(sub.overflow == "block" and len(sub._inbox) >= sub._room
                                 for sub in tuple(self._subs))

    def _admit(self, ts: Timestamp) -> bool:
        """Check for a duplicate and merge the clock, as one step.

        An event carrying this clock's node id at or below its last value is
        an echo of one of our own publishes (a bridge or a replay sending it
        back): a duplicate, since the publish delivered it already.
        """
        with self._seen_lock:
            clock = self.clock
            if ts in self._seen or (ts.node == clock.node and ts <= clock.last):
                self._duplicates += 1
                return False
            try:
                self.clock.update(ts)
            except ClockDriftError as exc:
                self._drift_rejections += 1
                telemetry.execute(telemetry.DRIFT_REJECTED, {"ahead_ms": ts.physical - exc.wall_ms},
                                  {"remote": ts, "local": exc.wall_ms, "limit": exc.max_drift_ms})
                raise
            self._received += 1
            self._remember(ts)
        return True

    def _remember(self, ts: Timestamp) -> None:
        wall = self.clock.wall_ms()
        self._seen.add(ts)
        order = self._seen_order
        order.append((wall, ts))
        horizon = wall - self._horizon_ms
        while order[0][0] < horizon:
            self._seen.discard(order.popleft()[1])

    def _dedupe_horizon(self) -> int:
        """How long receive remembers a timestamp; called under _lock when _subs change."""
        if self._dedupe_ms is not None:
            return self._dedupe_ms
        windows = [s.window_ms for s in self._subs if s.ordered]
        return max(DEDUPE_MIN_MS, 2 * max(windows, default=0))

    def _offer(self, subs: tuple[Subscription, ...], event: Event) -> Optional[list[Subscription]]:
        full = None
        for sub in subs:
            inbox = sub._inbox
            if len(inbox) < sub._room:
                inbox.append(event)
            elif not sub._offer_slow(event):
                full = [sub] if full is None else full + [sub]
                continue
            if sub._sleeping:  # cleared here, or every publish until the worker runs would wake it
                sub._sleeping = False
                sub._wake_up()
        return full

    def _in_flight_bound(self) -> Optional[Timestamp]:
        """Return the greatest timestamp a worker may release now, or None."""
        last = self.clock.last  # read first: what is stamped later exceeds it
        floors = [f for f in self._in_flight.copy().values() if f is not None]
        if not floors:
            return last
        # A receive's floor is its event's timestamp, which may be above `last`:
        # a publish stamped after `last` was read may still fall below that floor.
        bound = _before(min(floors))
        return bound if bound is None or bound < last else last

    # --- routing ----------------------------------------------------------------

    def _route(self, event_type: Any, received: bool = False) -> tuple[Subscription, ...]:
        if type(event_type) is not str:
            raise TypeError(f"type must be a str, not {type(event_type).__name__}")
        if not event_type:
            raise ValueError("type must be a non-empty str")
        with self._lock:
            subs = tuple(s for s in self._subs if _matches(s.pattern, event_type)
                         and not (received and s._local_only))
            if received:
                if len(self._received_routes) >= ROUTE_CACHE_LIMIT:
                    self._received_routes = {}
                self._received_routes[event_type] = subs
            else:
                if len(self._routes) >= ROUTE_CACHE_LIMIT:
                    self._routes = {}
                self._routes[event_type] = subs
        return subs

    def _invalidate_routes(self) -> None:
        """Drop both route caches; called under _lock whenever _subs or a flag changes."""
        self._routes = {}
        self._received_routes = {}

    def _keep_local(self, sub: Subscription) -> None:
        """Route only this bus's own publishes to ``sub``, never what receive takes.

        For a bridge's outbound subscription: what others sent is theirs to send.
        """
        with self._lock:
            sub._local_only = True
            self._invalidate_routes()
        self._wait_in_flight(None)  # a receive that still holds the old routes

    def _unroute(self, sub: Subscription) -> None:
        """Stop routing to ``sub`` and wait out the publishes that may still reach it."""
        with self._lock:
            if sub not in self._subs:
                return
            self._subs.remove(sub)
            self._invalidate_routes()
            self._horizon_ms = self._dedupe_horizon()
        self._wait_in_flight(None)

    def _wait_in_flight(self, deadline: Optional[float]) -> bool:
        me = get_ident()
        pending = {tid: f for tid, f in self._in_flight.copy().items()
                   if f is not None and tid != me}
        while pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(IN_FLIGHT_POLL)
            slots = self._in_flight
            pending = {tid: f for tid, f in pending.items() if slots.get(tid) is f}
        return True

    # --- subscriptions ----------------------------------------------------------

    def subscribe(self, pattern: str, handler: Optional[Callable[..., Any]] = None, *,
                  ordered: bool = False, window_ms: int = 100, maxsize: int = 10_000,
                  overflow: str = "block",
                  on_late: Optional[Callable[[Event, int], Any]] = None,
                  on_error: Optional[Callable[[Any, BaseException], Any]] = None,
                  batch_size: Optional[int] = None, name: Optional[str] = None,
                  replay_from: Optional[Timestamp] = None) -> Subscription:
        """Subscribe to events whose type matches ``pattern``; see README "Ordered delivery".

        ``pattern`` is an exact type, ``"*"``, or a prefix such as
        ``"vsm.*"``.  Without a ``handler`` the subscription is a mailbox
        (``get()``, iteration).  With ``replay_from`` (a Timestamp) it first
        gets the stored events from that timestamp on, in order, then the live
        ones, with no gap and no duplicate between them.  Bad arguments raise
        TypeError/ValueError and change nothing.  Raises BusClosed after
        ``close``.
        """
        _check_pattern(pattern)
        _check_callable("handler", handler)
        _check_callable("on_late", on_late)
        _check_callable("on_error", on_error)
        if type(ordered) is not bool:
            raise TypeError(f"ordered must be a bool, not {type(ordered).__name__}")
        _check_int("window_ms", window_ms, 0)
        _check_int("maxsize", maxsize, 1)
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}; "
                             f"got {overflow!r}")
        if batch_size is not None:
            _check_int("batch_size", batch_size, 1)
        if name is not None and (type(name) is not str or not name):
            raise TypeError("name must be a non-empty str or None")
        if replay_from is not None:
            self._check_replay("replay_from", replay_from)
        with self._lock:
            if self._closed:
                raise BusClosed("the bus is closed")
            sub = Subscription(self, pattern, handler, ordered=ordered, window_ms=window_ms,
                               maxsize=maxsize, overflow=overflow, on_late=on_late,
                               on_error=on_error, batch_size=batch_size,
                               name=self._unique_name(name or pattern))
            if replay_from is not None:
                # Before it is routed: a publish that saw a full inbox here would
                # block on (or drop) an event the snapshot delivers; see _prepare_replay.
                sub._room = sys.maxsize
            self._subs.append(sub)
            self._invalidate_routes()
            self._horizon_ms = self._dedupe_horizon()
        if replay_from is not None:
            try:
                self._prepare_replay(sub, replay_from)
            except BaseException:
                # Routed but with no worker, it would hold close() forever: unroute it.
                sub._failed = True  # publishes that still reach it count and go
                self._unroute(sub)
                raise
        sub._start()  # its first pass restores the room to maxsize
        return sub

    def _prepare_replay(self, sub: Subscription, start: Timestamp) -> None:
        """Hand ``sub`` the stored events from ``start`` on, seamlessly.

        ``sub`` is already routed.  Publishes in flight may still hold the old
        routes: they are waited out, so each of them is stored before the
        snapshot (no gap).  Publishes after that reach the inbox, and those
        stored before the snapshot may be in both: waiting out the publishes
        in flight at the snapshot bounds them to the first ``overlap`` inbox
        events, which the worker drops if the snapshot has them (no duplicate).
        """
        # Until the worker runs nothing drains the inbox: a publisher blocked on
        # it would never leave the flight we wait out.  So subscribe() lifted the
        # limit before routing ``sub``.
        self._wait_in_flight(None)
        # subscribe() called _check_replay, so the store exists.
        stored = self._store.range(start, None)  # type: ignore[union-attr]
        snapshot = [e for e in stored if _matches(sub.pattern, e.type)]
        self._wait_in_flight(None)
        sub._replay_first(snapshot, overlap=len(sub._inbox))

    def _check_replay(self, name: str, value: Any) -> None:
        if self._store is None:
            raise ValueError(f"{name} needs the event store, and this bus has store_ttl_ms=0")
        if type(value) is not Timestamp:
            raise TypeError(f"{name} must be an hlcbus.Timestamp, not {type(value).__name__}")

    def replay(self, start: Optional[Timestamp] = None, end: Optional[Timestamp] = None,
               pattern: str = "*") -> list[Event]:
        """Return the stored events with ``start <= timestamp <= end`` matching ``pattern``.

        In timestamp order, whatever order they arrived in.  ``None`` leaves
        a bound open.  Costs O(log n + k) for k events in range, once the
        events stored since the last call are folded in.
        """
        for name, bound in (("start", start), ("end", end)):
            if bound is not None:
                self._check_replay(name, bound)
        if self._store is None:
            raise ValueError("replay needs the event store, and this bus has store_ttl_ms=0")
        _check_pattern(pattern)
        events = self._store.range(start, end)
        if pattern == "*":
            return events
        return [e for e in events if _matches(pattern, e.type)]

    def _unique_name(self, base: str) -> str:
        self._names[base] += 1
        count = self._names[base]
        return base if count == 1 else f"{base}#{count}"

    @property
    def subscriptions(self) -> list[Subscription]:
        """The live subscriptions."""
        return list(self._subs)

    def _report_jumps(self) -> None:
        """Emit the clock's jump counts if they changed since the last report."""
        counts = (self.clock.backward_jumps, self.clock.forward_jumps)
        with self._lock:
            if counts == self._jumps_reported:
                return
            self._jumps_reported = counts
        telemetry.execute(telemetry.CLOCK_JUMPS, {"backward": counts[0], "forward": counts[1]},
                          {"node": self.clock.node})

    @property
    def stats(self) -> BusStats:
        """A snapshot of the bus-level counters."""
        return BusStats(received=self._received, duplicates=self._duplicates,
                        drift_rejections=self._drift_rejections, refused=self._refused,
                        subscriptions=len(self._subs))

    # --- closing ------------------------------------------------------------------

    def close(self, drain: bool = True, timeout: Optional[float] = None) -> CloseReport:
        """Stop every subscription and refuse further publish/receive.

        With ``drain`` everything pending is delivered first (ordered
        subscriptions release their whole buffer, in order); without it
        pending events are discarded and counted.  ``timeout`` (seconds)
        bounds the whole close; a subscription whose handler is still
        running then is reported as not stopped.  Calling it again returns
        the first report.
        """
        with self._lock:
            if self._close_report is not None or self._closed:
                return self._close_report or CloseReport(drain, {}, {}, {})
            self._closed = True
            subs, self._subs = self._subs, []
            self._invalidate_routes()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_in_flight(deadline)
        for sub in subs:
            sub._request_stop(drain)
        stopped = {sub.name: sub._join(deadline) for sub in subs}
        report = CloseReport(
            drained=drain,
            delivered={sub.name: sub.stats.delivered for sub in subs},
            discarded={sub.name: sub.discarded for sub in subs},
            stopped=stopped,
        )
        self._close_report = report
        return report

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> EventBus:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._subs)} subscriptions"
        return f"<EventBus {state}, node {self.clock.node:#018x}>"


__all__ = ["BusStats", "CloseReport", "EventBus", "Subscription", "SubscriptionStats"]
