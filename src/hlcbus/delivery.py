"""Per-subscription delivery: the inbox, the worker thread, ordered release.

Each Subscription owns an inbox (a deque that publishers append to) and one
worker thread that drains it.  An unordered subscription delivers in arrival
order; an ordered one moves events into a ReorderBuffer (a heap keyed by
timestamp, in the compiled core) and releases them in
strict timestamp order once the watermark (wall time minus the window) and
the bus's in-flight publishes allow.

Guarantees:
- An ordered subscription's handler sees strictly increasing timestamps.
- Every event routed to a subscription ends in exactly one of the counters
  delivered, late, duplicates or dropped, or is still pending; at a
  quiescent moment ``received == delivered + late + duplicates + dropped +
  pending``.
- Handler exceptions never reach ``threading.excepthook``: they go to
  ``on_error`` or to the log, and the worker carries on.

Threads: publishers only append to the inbox (deque.append is atomic) and
read a few plain attributes; everything else belongs to the worker thread.
The slow paths (a full inbox, close, restart) take ``_lock``.
"""

from __future__ import annotations

import _thread
import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from hlcbus import telemetry
from hlcbus._compat import core
from hlcbus.errors import BusClosed

if TYPE_CHECKING:
    from hlcbus.bus import EventBus

log = logging.getLogger("hlcbus")

Event = core.Event
Timestamp = core.Timestamp
ReorderBuffer = core.ReorderBuffer

FLUSH_INTERVAL = 0.005  # seconds: longest an ordered worker sleeps while holding events
IN_FLIGHT_RETRY = 0.0002  # seconds: re-check delay when a publish in flight holds releases
RESTART_LIMIT = 3  # worker restarts allowed within RESTART_PERIOD ...
RESTART_PERIOD = 5.0  # seconds; one more and the subscription is marked failed
MAX_NODE = (1 << 64) - 1
OVERFLOW_POLICIES = ("block", "drop_oldest", "drop_newest", "error")
DEDUPE_MIN_MS = 1_000  # ms: an ordered subscription remembers released keys at least this long


@dataclass(frozen=True)
class SubscriptionStats:
    """A snapshot of one subscription's counters.

    At a quiescent moment ``received == delivered + late + duplicates +
    dropped + pending``.  ``reordered`` counts events that arrived behind a
    later timestamp and were put back in order (a subset of delivered or
    pending).  ``watermark_lag_ms`` is how far the release point trails the
    wall clock (the window, plus any hold by publishes in flight).
    """

    received: int
    delivered: int
    reordered: int
    late: int
    duplicates: int
    dropped: int
    handler_errors: int
    restarts: int
    pending: int
    watermark_lag_ms: int
    failed: bool


def _before(ts: Timestamp) -> Optional[Timestamp]:
    """Return the greatest key strictly below ``ts``, or None if there is none."""
    if ts.node:
        return Timestamp.from_packed(ts.packed, ts.node - 1)
    if ts.packed:
        return Timestamp.from_packed(ts.packed - 1, MAX_NODE)
    return None


class Subscription:
    """One subscriber: a pattern, an inbox and a worker thread.

    Made by ``EventBus.subscribe``; see there for the options.  ``stats``
    reads the counters, ``close()`` unsubscribes and stops the worker, and a
    subscription without a handler is a mailbox read with ``get()`` or by
    iteration.
    """

    def __init__(self, bus: EventBus, pattern: str, handler: Optional[Callable[..., Any]], *,
                 ordered: bool, window_ms: int, maxsize: int, overflow: str,
                 on_late: Optional[Callable[[Event, int], Any]],
                 on_error: Optional[Callable[[Any, BaseException], Any]],
                 batch_size: Optional[int], name: str) -> None:
        self.pattern = pattern
        self.name = name
        self.ordered = ordered
        self.window_ms = window_ms
        self.maxsize = maxsize
        self.overflow = overflow
        self._bus = bus
        self._clock = bus.clock
        self._handler = handler
        self._on_late = on_late
        self._on_error = on_error
        self._batch_size = batch_size
        # Written by publishers (append) and drained by the worker only.
        self._inbox: collections.deque[Event] = collections.deque()
        # How full publishers may fill the inbox before the overflow policy
        # applies: maxsize minus what the worker holds (see _update_room).
        self._room = maxsize
        self._sleeping = False  # the worker is (about to be) waiting on _wake
        self._local_only = False  # set by EventBus._keep_local: receive skips it
        # A binary semaphore: unlocked means "a wake-up is pending".  Any thread
        # may release it; releasing it twice is harmless (see _wake_up).  A
        # threading.Event was measured at ~1 us per set() and, worse, its
        # Condition lock handed the GIL to the worker on every publish.
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        # Guards the slow paths shared between threads: overflow decisions and
        # their counters, the stop flags, restarts, and the mailbox condition.
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)  # signalled when the inbox drains
        self._mail = threading.Condition(self._lock)  # signalled when mail arrives
        self._space_waiters = 0
        self._mailbox: collections.deque[Event] = collections.deque()
        self._stopping = False
        self._drain_on_stop = True
        self._stopped = threading.Event()
        self._failed = False
        self._restart_times: collections.deque[float] = collections.deque()
        # Worker-owned state.
        self._buffer = ReorderBuffer() if ordered else None
        self._ready: collections.deque[Event] = collections.deque()  # released, not yet handled
        self._late_queue: collections.deque[Event] = collections.deque()
        self._lag_ms = 0
        self._held = False  # the buffer's head waits for a publish in flight
        # Counters: the worker's own, then those publishers change under _lock.
        self._received = self._delivered = 0
        self._late = self._dropped = 0
        self._handler_errors = self._restarts = 0
        self._offer_dropped = 0  # refused or evicted by publishers (counted received too)
        self._evictions_owed = 0  # drop_oldest evictions the worker still has to make
        self._thread: Optional[threading.Thread] = None
        self.discarded = 0  # events dropped by a close without drain
        self._late_log = telemetry.RateLimitedLog(f"hlcbus subscription {name!r}: late events")
        self._error_log = telemetry.RateLimitedLog(f"hlcbus subscription {name!r}: handler errors")
        self._stats_due = time.monotonic() + telemetry.STATS_INTERVAL

    # --- lifecycle ---------------------------------------------------------

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name=f"hlcbus-{self.name}", daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a dying worker is restarted, not lost
            self._crashed(exc)
        else:
            self._mark_stopped()

    def _mark_stopped(self) -> None:
        with self._lock:
            self._stopped.set()
            self._mail.notify_all()  # wake get() callers so they see the end

    def _crashed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._restart_times
            while times and now - times[0] > RESTART_PERIOD:
                times.popleft()
            give_up = len(times) >= RESTART_LIMIT or self._stopping
            if not give_up:
                times.append(now)
                self._restarts += 1
        metadata = {"subscription": self.name, "exception": exc}
        if give_up:
            log.error("hlcbus subscription %r failed: worker died (%r); pending events dropped",
                      self.name, exc)
            telemetry.execute(telemetry.FAILED, {"restarts": self._restarts}, metadata)
            self._fail()
        else:
            log.warning("hlcbus subscription %r: worker died (%r); restarting", self.name, exc)
            telemetry.execute(telemetry.RESTART, {"restarts": self._restarts}, metadata)
            self._start()

    def _fail(self) -> None:
        with self._lock:
            self._failed = True
            self._space.notify_all()  # publishers blocked on room: they count and go
        self._bus._unroute(self)
        self._discard_pending()
        self._mark_stopped()

    def _discard_pending(self) -> int:
        """Count everything not yet delivered as dropped; the worker is not running."""
        count = self._take_inbox_count() + len(self._ready)
        self._ready.clear()
        if self._buffer is not None:
            count += self._buffer.clear()
        self._dropped += count
        return count

    def _take_inbox_count(self) -> int:
        inbox, count = self._inbox, 0
        while inbox:
            try:
                inbox.popleft()
            except IndexError:
                break
            count += 1
        self._received += count
        return count

    def _wake_up(self) -> None:
        """Wake the worker if it waits; cheap, never blocks, safe from any thread."""
        try:
            self._wake.release()
        except RuntimeError:  # already released: a wake-up is pending anyway
            pass

    def _request_stop(self, drain: bool) -> None:
        with self._lock:
            self._stopping = True
            self._drain_on_stop = drain
            self._space.notify_all()
        self._wake_up()

    def _join(self, deadline: Optional[float]) -> bool:
        if self._thread is threading.current_thread():
            return False  # called from a handler: the worker stops once it returns
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._stopped.wait(timeout):
            return False
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            return not thread.is_alive()
        return True

    def close(self, drain: bool = True, timeout: Optional[float] = None) -> bool:
        """Unsubscribe and stop the worker; True once it has stopped.

        With ``drain`` everything pending is delivered first (an ordered
        subscription releases its whole buffer, in order); without it
        pending events are dropped and counted.  Safe to call again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._bus._unroute(self)
        self._request_stop(drain)
        return self._join(deadline)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- the publisher side --------------------------------------------------

    def _offer_slow(self, event: Event) -> bool:
        """Apply the overflow policy to a full inbox; False if ``event`` was refused."""
        with self._lock:
            if self._failed:  # no worker will take it: dropped, and counted
                self._offer_dropped += 1
                return True
            if self._stopping:  # the stop path delivers or counts what it finds
                self._inbox.append(event)
                return True
            if self.overflow == "block":
                # Never wait here: this publish is in flight, and an ordered
                # worker holds its releases below it, so waiting for room it
                # cannot make would deadlock (seen: every publish of two threads
                # timing out).  The event goes in, one over maxsize for each
                # publisher in flight, and the bus makes the next publishes wait
                # for room before they stamp (EventBus._hold_back).
                self._inbox.append(event)
                self._bus._backpressure = True
                return True
            if self.overflow == "drop_oldest":
                self._evict_oldest()
                self._inbox.append(event)
                return True
            self._offer_dropped += 1
            return self.overflow != "error"

    def _wait_for_room(self, deadline: float) -> bool:
        """Wait, outside any publish in flight, until the inbox has room; False at the deadline."""
        with self._lock:
            self._space_waiters += 1
            try:
                while len(self._inbox) >= self._room and not (self._stopping or self._failed):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._space.wait(remaining)
                return True
            finally:
                self._space_waiters -= 1

    def _evict_oldest(self) -> None:
        """Drop the oldest pending event to make room; called under _lock.

        An unordered subscription's oldest is the inbox's head.  An ordered
        one's is the buffer's smallest timestamp, which only the worker may
        touch: it is owed, and the worker evicts it on its next pass.
        """
        if self.ordered:
            self._evictions_owed += 1
            return
        try:
            self._inbox.popleft()
        except IndexError:
            return  # the worker took everything meanwhile: there is room now
        self._offer_dropped += 1

    # --- the worker ------------------------------------------------------------

    def _replay_first(self, snapshot: list[Event], overlap: int) -> None:
        """Deliver ``snapshot`` before the inbox; called before the worker starts.

        The first ``overlap`` inbox events may also be in the snapshot: those
        are dropped here, before anything counts them.
        """
        seen = {event.timestamp for event in snapshot}
        inbox, kept = self._inbox, []
        for _ in range(overlap):
            event = inbox.popleft()
            if event.timestamp not in seen:
                kept.append(event)
        inbox.extendleft(reversed(snapshot + kept))

    def _loop(self) -> None:
        store = self._bus._store
        while True:
            if self.ordered:
                self._ordered_step()
            else:
                self._direct_step()
            self._deliver_ready()
            self._update_room()
            self._report_late()
            if store is not None:
                store.maintain_if_due()
            if self._stats_wanted() and time.monotonic() >= self._stats_due:
                self._emit_stats()
            if self._stopping and self._finish_stop():
                return
            self._sleep()

    def _sleep(self) -> None:
        self._sleeping = True
        if self._inbox or self._stopping:  # re-check: an append may have seen _sleeping False
            self._sleeping = False
            return
        timeout = self._timeout()
        self._wake.acquire(True, -1 if timeout is None else timeout)
        self._sleeping = False

    def _stats_wanted(self) -> bool:
        return telemetry.attached(telemetry.SUBSCRIPTION_STATS) or telemetry.attached(
            telemetry.CLOCK_JUMPS)

    def _emit_stats(self) -> None:
        self._stats_due = time.monotonic() + telemetry.STATS_INTERVAL
        stats = self.stats
        telemetry.execute(telemetry.SUBSCRIPTION_STATS, {
            "received": stats.received, "delivered": stats.delivered,
            "reordered": stats.reordered, "late": stats.late, "duplicates": stats.duplicates,
            "dropped": stats.dropped, "pending": stats.pending,
            "size": len(self._buffer or ()), "watermark_lag_ms": stats.watermark_lag_ms,
        }, {"subscription": self.name, "pattern": self.pattern, "ordered": self.ordered})
        self._bus._report_jumps()

    def _timeout(self) -> Optional[float]:
        timeout = self._buffer_timeout()
        if self._stats_wanted():  # wake for the next stats tick even when idle
            until_stats = max(0.0, self._stats_due - time.monotonic())
            timeout = until_stats if timeout is None else min(timeout, until_stats)
        return timeout

    def _buffer_timeout(self) -> Optional[float]:
        if not self._buffer:
            return None
        if self._held:  # by a publish in flight: its append wakes us, or we poll soon
            return IN_FLIGHT_RETRY
        head = self._buffer.peek()
        assert head is not None  # the buffer is not empty
        due_ms = head.physical + self.window_ms + 1 - self._clock.wall_ms()
        return min(FLUSH_INTERVAL, max(due_ms, 0) / 1000.0 + 0.0002)

    def _direct_step(self) -> None:
        inbox, ready = self._inbox, self._ready
        if ready:  # a full mailbox: leave events in the inbox, where the bound applies
            return
        count = len(inbox)
        for _ in range(count):
            ready.append(inbox.popleft())
        self._received += count
        self._update_room()

    def _ordered_step(self) -> None:
        # Order matters: read the wall, then the in-flight bound, then drain the
        # inbox.  Every event stamped below the bound is then already drained,
        # and a receive that the bound missed began after the wall reading: if
        # it is inside its window, the watermark is below it (the guarantee).
        wall = self._clock.wall_ms()
        local_bound = self._bus._in_flight_bound()
        self._absorb_inbox()
        bound = local_bound
        if self.window_ms and local_bound is not None:
            watermark = wall - self.window_ms
            below = (Timestamp.from_packed((watermark << 16) - 1, MAX_NODE)
                     if watermark > 0 else None)
            bound = below if below is None or below < local_bound else local_bound
        buffer = self._buffer
        assert buffer is not None
        if bound is not None and buffer and not self._ready:
            self._ready.extend(buffer.release(bound))
        head = buffer.peek()
        self._held = head is not None and local_bound is not None and head > local_bound
        self._lag_ms = wall - bound.physical if bound is not None else self.window_ms
        buffer.expire(wall - max(2 * self.window_ms, DEDUPE_MIN_MS))

    def _absorb_inbox(self) -> None:
        buffer = self._buffer
        assert buffer is not None
        count = len(self._inbox)
        late = buffer.absorb(self._inbox, count)
        if late:
            self._late += len(late)
            self._late_queue.extend(late)
        self._received += count
        if self._evictions_owed:
            self._pay_evictions(buffer)
        self._update_room()

    def _pay_evictions(self, buffer: ReorderBuffer) -> None:
        with self._lock:
            owed, self._evictions_owed = self._evictions_owed, 0
        self._dropped += buffer.evict(owed)

    def _update_room(self) -> None:
        """Let publishers fill the inbox up to maxsize minus what the worker holds.

        Runs once per batch (handing an event to the handler adds one), so
        pending (inbox + buffer + released, not yet handled) never exceeds
        maxsize, except by the evictions owed under ``drop_oldest``.
        """
        self._room = self.maxsize - len(self._ready) - len(self._buffer or ())
        self._signal_space()

    def _signal_space(self) -> None:
        if self._space_waiters:
            with self._lock:
                self._space.notify_all()

    def _deliver_ready(self) -> None:
        ready = self._ready
        if self._handler is None:
            self._deliver_mail()
        elif self._batch_size:
            while ready:
                batch = [ready.popleft() for _ in range(min(self._batch_size, len(ready)))]
                self._room += len(batch)
                self._call(batch, len(batch))
        else:
            handler = self._handler
            while ready:
                event = ready.popleft()
                self._room += 1  # it left the held events: one more may queue
                try:
                    handler(event)
                except Exception as exc:  # noqa: BLE001 - reported, never fatal
                    self._handler_failed(event, exc)
                finally:  # counted even when a BaseException kills the worker
                    self._delivered += 1

    def _call(self, payload: Any, count: int) -> None:
        try:
            self._handler(payload)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - reported, never fatal
            self._handler_failed(payload, exc)
        finally:
            self._delivered += count

    def _handler_failed(self, payload: Any, exc: Exception) -> None:
        self._handler_errors += 1
        telemetry.execute(telemetry.HANDLER_ERROR, {"count": 1},
                          {"subscription": self.name, "event": payload, "exception": exc})
        if self._on_error is None:
            self._error_log(logging.ERROR, "hlcbus subscription %r: handler raised on %r",
                            self.name, payload, exc_info=exc)
            return
        try:
            self._on_error(payload, exc)
        except Exception:  # noqa: BLE001 - an error handler's error is only logged
            log.exception("hlcbus subscription %r: on_error raised", self.name)

    def _deliver_mail(self) -> None:
        """Move released events to the mailbox, up to maxsize unless stopping."""
        ready, mailbox = self._ready, self._mailbox
        if not ready:
            return
        with self._lock:
            room = len(ready) if self._stopping else self.maxsize - len(mailbox)
            count = min(room, len(ready))
            for _ in range(count):
                mailbox.append(ready.popleft())
            self._delivered += count
            self._mail.notify_all()

    def _report_late(self) -> None:
        queue = self._late_queue
        while queue:
            event = queue.popleft()
            # Late means "below the last release": only ordered subscriptions have one.
            last = self._buffer.last_released  # type: ignore[union-attr]
            lateness = max(0, last.physical - event.timestamp.physical)  # type: ignore[union-attr]
            telemetry.execute(telemetry.LATE, {"lateness_ms": lateness},
                              {"subscription": self.name, "event": event})
            if self._on_late is None:
                self._late_log(logging.WARNING, "hlcbus subscription %r: late by %d ms, not "
                               "delivered: %r", self.name, lateness, event)
                continue
            try:
                self._on_late(event, lateness)
            except Exception as exc:  # noqa: BLE001 - reported, never fatal
                self._handler_failed(event, exc)

    def _finish_stop(self) -> bool:
        """Complete a stop request; False while a draining stop still has work."""
        if not self._drain_on_stop:
            self.discarded = self._discard_pending()
            return True
        if self._inbox:
            if not self.ordered:
                self._direct_step()
                self._deliver_ready()
            return False
        if self._buffer:
            self._absorb_inbox()
            self._ready.extend(self._buffer.release_all())
            self._deliver_ready()
            self._report_late()
        return not self._inbox and not self._ready

    # --- the mailbox -----------------------------------------------------------

    def get(self, timeout: Optional[float] = None) -> Event:
        """Take the next event of a handler-less subscription.

        Blocks up to ``timeout`` seconds (None: forever); raises TimeoutError
        when none came, BusClosed once the subscription is closed and empty.
        """
        if self._handler is not None:
            raise TypeError("get() is for subscriptions without a handler")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._mailbox:
                if self._stopped.is_set() or self._failed:
                    raise BusClosed(f"subscription {self.name!r} is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no event for {self.name!r} within {timeout} s")
                self._mail.wait(remaining)
            event = self._mailbox.popleft()
        if self._ready:  # the worker holds events back while the mailbox is full
            self._wake_up()
        return event

    def __iter__(self) -> Iterator[Event]:
        """Yield events until the subscription is closed and drained."""
        while True:
            try:
                yield self.get()
            except BusClosed:
                return

    # --- stats -------------------------------------------------------------------

    @property
    def stats(self) -> SubscriptionStats:
        """A snapshot of the counters (consistent when the subscription is quiescent)."""
        buffer = self._buffer
        pending = len(self._inbox) + len(self._ready) + len(buffer or ())
        return SubscriptionStats(
            received=self._received + self._offer_dropped + len(self._inbox),
            delivered=self._delivered,
            reordered=buffer.reordered if buffer is not None else 0,
            late=self._late,
            duplicates=buffer.duplicates if buffer is not None else 0,
            dropped=self._dropped + self._offer_dropped,
            handler_errors=self._handler_errors,
            restarts=self._restarts,
            pending=pending,
            watermark_lag_ms=self._lag_ms,
            failed=self._failed,
        )

    def __repr__(self) -> str:
        kind = "ordered" if self.ordered else "unordered"
        return f"<Subscription {self.name!r} {self.pattern!r} {kind}>"
