"""Telemetry: named events a service can export, in the style of Erlang's :telemetry.

    from hlcbus import telemetry
    telemetry.attach("my-exporter", ("hlcbus", "subscription", "late"), handle)
    # handle(event_name, measurements, metadata) is called on the emitting thread

Event names are tuples of str.  Measurements are a dict of numbers, metadata
a dict of anything.  A handler that raises is detached and logged; it never
breaks delivery.  With no handler attached to a name, ``execute`` is one dict
lookup, and the bus calls it only on rare paths (late events, drift
rejections, handler errors, restarts) or once per STATS_INTERVAL.

Events emitted by hlcbus:

- ("hlcbus", "subscription", "stats"): every STATS_INTERVAL per subscription;
  measurements received, delivered, reordered, late, duplicates, dropped,
  pending, size (events in the ordered buffer), watermark_lag_ms;
  metadata subscription, pattern, ordered.
- ("hlcbus", "subscription", "late"): each late event; measurements
  lateness_ms; metadata subscription, event.
- ("hlcbus", "subscription", "handler_error"): each exception from a
  handler or on_late; measurements count (1); metadata subscription, event,
  exception.
- ("hlcbus", "subscription", "restart"): a worker thread died and was
  restarted, or ("hlcbus", "subscription", "failed") when it was not;
  measurements restarts; metadata subscription, exception.
- ("hlcbus", "clock", "drift_rejected"): ``receive`` refused a timestamp;
  measurements ahead_ms; metadata remote, local (wall ms), limit (ms).
- ("hlcbus", "clock", "jumps"): the clock's wall-jump counts, when they
  changed since the last stats tick; measurements backward, forward.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional

log = logging.getLogger("hlcbus")

Handler = Callable[[tuple[str, ...], Mapping[str, Any], Mapping[str, Any]], Any]

STATS_INTERVAL = 1.0  # seconds between ("hlcbus", "subscription", "stats") events
LOG_BURST = 10  # per-event warnings logged per LOG_PERIOD for one source ...
LOG_PERIOD = 10.0  # seconds; the rest are counted and summarised

SUBSCRIPTION_STATS = ("hlcbus", "subscription", "stats")
LATE = ("hlcbus", "subscription", "late")
HANDLER_ERROR = ("hlcbus", "subscription", "handler_error")
RESTART = ("hlcbus", "subscription", "restart")
FAILED = ("hlcbus", "subscription", "failed")
DRIFT_REJECTED = ("hlcbus", "clock", "drift_rejected")
CLOCK_JUMPS = ("hlcbus", "clock", "jumps")

# event name -> ((handler_id, function), ...).  Replaced whole under _lock, so
# execute() reads it without a lock and never sees a half-made change.
_handlers: dict[tuple[str, ...], tuple[tuple[str, Handler], ...]] = {}
_lock = threading.Lock()  # guards changes to _handlers


def _check_name(event_name: Any) -> tuple[str, ...]:
    if (type(event_name) is not tuple or not event_name
            or not all(type(part) is str and part for part in event_name)):
        raise TypeError(f"event_name must be a non-empty tuple of non-empty str, "
                        f"got {event_name!r}")
    return event_name


def attach(handler_id: str, event_name: tuple[str, ...], function: Handler) -> None:
    """Call ``function(event_name, measurements, metadata)`` on each such event.

    Raises ValueError if ``handler_id`` is attached already, TypeError for a
    bad name or a non-callable.
    """
    attach_many(handler_id, [event_name], function)


def attach_many(handler_id: str, event_names: Iterable[tuple[str, ...]],
                function: Handler) -> None:
    """attach() one handler to several event names under one id."""
    if type(handler_id) is not str or not handler_id:
        raise TypeError(f"handler_id must be a non-empty str, not {handler_id!r}")
    names = [_check_name(name) for name in event_names]
    if not names:
        raise ValueError("event_names must name at least one event")
    if not callable(function):
        raise TypeError(f"function must be callable, not {type(function).__name__}")
    global _handlers
    with _lock:
        if any(hid == handler_id for entries in _handlers.values() for hid, _ in entries):
            raise ValueError(f"handler_id {handler_id!r} is attached already")
        handlers = dict(_handlers)
        for name in names:
            handlers[name] = handlers.get(name, ()) + ((handler_id, function),)
        _handlers = handlers


def detach(handler_id: str) -> bool:
    """Detach every attachment of ``handler_id``; False if there was none."""
    global _handlers
    with _lock:
        handlers = {name: tuple(e for e in entries if e[0] != handler_id)
                    for name, entries in _handlers.items()}
        handlers = {name: entries for name, entries in handlers.items() if entries}
        found = sum(map(len, handlers.values())) != sum(map(len, _handlers.values()))
        _handlers = handlers
    return found


def list_handlers(prefix: tuple[str, ...] = ()) -> list[tuple[str, tuple[str, ...]]]:
    """(handler_id, event_name) pairs whose name starts with ``prefix``."""
    return [(hid, name) for name, entries in _handlers.items()
            if name[:len(prefix)] == prefix for hid, _ in entries]


def attached(event_name: tuple[str, ...]) -> bool:
    """True if a handler listens to ``event_name``: skip building costly measurements."""
    return event_name in _handlers


def execute(event_name: tuple[str, ...], measurements: Mapping[str, Any],
            metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Call every handler attached to ``event_name``; a handler that raises is detached."""
    entries = _handlers.get(event_name)
    if entries is None:
        return
    metadata = {} if metadata is None else metadata
    for handler_id, function in entries:
        try:
            function(event_name, measurements, metadata)
        except Exception:  # noqa: BLE001 - a broken handler must not break delivery
            log.exception("hlcbus telemetry handler %r raised on %r; detaching it",
                          handler_id, event_name)
            detach(handler_id)


class RateLimitedLog:
    """Log at most LOG_BURST records per LOG_PERIOD, then summarise the rest.

    One per source of per-event warnings (a subscription's late events, its
    handler errors), used from one thread, so it needs no lock.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._window_start = time.monotonic()
        self._logged = 0
        self._suppressed = 0

    def __call__(self, level: int, message: str, *args: Any,
                 exc_info: Optional[BaseException] = None) -> None:
        now = time.monotonic()
        if now - self._window_start >= LOG_PERIOD:
            if self._suppressed:
                log.log(level, "%s: %d more like this in the last %.0f s, not logged",
                        self._what, self._suppressed, now - self._window_start)
            self._window_start, self._logged, self._suppressed = now, 0, 0
        if self._logged < LOG_BURST:
            self._logged += 1
            log.log(level, message, *args, exc_info=exc_info)
        else:
            self._suppressed += 1
