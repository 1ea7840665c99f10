"""Failures: raising, dying and hanging handlers; bad arguments at the call site."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bus_helpers import (
    POLL,
    START_MS,
    WAIT,
    ExcepthookRecorder,
    Gate,
    Recorder,
    assert_accounting,
    bus_threads,
    manual_bus,
    remote,
    wait_stats,
)

from hlcbus import Event, EventBus, Timestamp, delivery


class WorkerKiller(BaseException):
    """Not an Exception: a handler raising it kills its worker thread."""


@pytest.fixture
def excepthook(monkeypatch: pytest.MonkeyPatch) -> ExcepthookRecorder:
    recorder = ExcepthookRecorder()
    monkeypatch.setattr(threading, "excepthook", recorder)
    return recorder


class LogSignal(logging.Handler):
    """Sets ``seen`` when a record whose message contains ``needle`` is logged."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@pytest.fixture
def failed_signal() -> Iterator[LogSignal]:
    signal = LogSignal("failed")
    logger = logging.getLogger("hlcbus")
    logger.addHandler(signal)
    try:
        yield signal
    finally:
        logger.removeHandler(signal)


# --- a handler that raises -----------------------------------------------------------------


@pytest.mark.parametrize("ordered", [False, True])
def test_handler_error_goes_to_on_error_and_the_worker_goes_on(
        bus: EventBus, excepthook: ExcepthookRecorder, ordered: bool) -> None:
    rec = Recorder()

    def handler(event: Event) -> None:
        if event.data % 3 == 0:
            raise ValueError(f"bad {event.data}")
        rec(event)

    sub = bus.subscribe("*", handler, on_error=rec.on_error, ordered=ordered, window_ms=0)
    sent = [bus.publish("a", i) for i in range(10)]
    assert rec.wait_for(6) == [e for e in sent if e.data % 3]
    errors = rec.wait_errors(4)
    assert [payload for payload, _ in errors] == [e for e in sent if e.data % 3 == 0]
    assert all(type(exc) is ValueError for _, exc in errors)
    assert str(errors[0][1]) == "bad 0"
    stats = wait_stats(sub, delivered=10, handler_errors=4, pending=0)
    assert stats.restarts == 0 and not stats.failed
    assert_accounting(stats)
    assert excepthook.calls == []


def test_handler_error_without_on_error_is_logged(
        bus: EventBus, excepthook: ExcepthookRecorder, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="hlcbus")
    rec = Recorder()

    def handler(event: Event) -> None:
        if event.data == "boom":
            raise KeyError("boom")
        rec(event)

    sub = bus.subscribe("a", handler, name="logged-sub")
    bus.publish("a", "boom")
    after = bus.publish("a", "fine")
    assert rec.wait_for(1) == [after]
    records = [r for r in caplog.records if r.name == "hlcbus" and r.exc_info]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert record.exc_info[0] is KeyError
    message = record.getMessage()
    assert "logged-sub" in message and "boom" in message  # names the subscription and event
    assert_accounting(wait_stats(sub, delivered=2, handler_errors=1))
    assert excepthook.calls == []


def test_batch_handler_error_reports_the_batch(
        bus: EventBus, excepthook: ExcepthookRecorder) -> None:
    gate, rec = Gate(), Recorder()

    def handler(batch: list) -> None:
        gate(batch)
        if len(batch) > 1:
            raise RuntimeError("batch")

    sub = bus.subscribe("*", handler, batch_size=4, on_error=rec.on_error)
    first = bus.publish("a", 0)
    assert gate.entered.wait(WAIT)
    rest = [bus.publish("a", i) for i in range(1, 5)]
    gate.release.set()
    errors = rec.wait_errors(1)
    assert errors[0][0] == rest and isinstance(errors[0][1], RuntimeError)
    assert gate.wait_for(5) == [first, *rest]
    assert_accounting(wait_stats(sub, delivered=5, handler_errors=1))
    assert excepthook.calls == []


def test_on_error_that_raises_is_logged_and_not_fatal(
        bus: EventBus, excepthook: ExcepthookRecorder, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="hlcbus")
    rec = Recorder()

    def handler(event: Event) -> None:
        if event.data == 0:
            raise ValueError("first")
        rec(event)

    def on_error(payload: Any, exc: BaseException) -> None:
        raise RuntimeError("on_error broke too")

    sub = bus.subscribe("*", handler, on_error=on_error)
    bus.publish("a", 0)
    second = bus.publish("a", 1)
    assert rec.wait_for(1) == [second]
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
    assert_accounting(wait_stats(sub, delivered=2, handler_errors=1))
    assert excepthook.calls == []


# --- a worker that dies -------------------------------------------------------------------------


def test_dead_worker_is_restarted(
        bus: EventBus, excepthook: ExcepthookRecorder, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hlcbus")
    rec = Recorder()

    def handler(event: Event) -> None:
        if event.data == 1:
            raise WorkerKiller()
        rec(event)

    sub = bus.subscribe("*", handler, on_error=rec.on_error)
    sent = [bus.publish("a", i) for i in range(5)]
    assert rec.wait_for(4) == [e for e in sent if e.data != 1]
    assert rec.errors == []  # a BaseException is not a handler error
    stats = wait_stats(sub, delivered=5, restarts=1, pending=0)
    assert not stats.failed and stats.handler_errors == 0
    assert_accounting(stats)
    assert any("restart" in r.getMessage() for r in caplog.records)
    assert excepthook.calls == []
    later = bus.publish("a", 9)  # the restarted worker keeps delivering
    assert rec.wait_for(5)[-1] == later


@pytest.mark.parametrize("ordered", [False, True])
def test_worker_dying_too_often_marks_the_subscription_failed(
        bus: EventBus, excepthook: ExcepthookRecorder, failed_signal: LogSignal,
        ordered: bool) -> None:
    gate = Gate()

    def handler(event: Event) -> None:
        gate(event)
        raise WorkerKiller()

    other = Recorder()
    sub = bus.subscribe("*", handler, ordered=ordered, window_ms=0, name="dies")
    s_other = bus.subscribe("*", other)
    sent = [bus.publish("a", 0)]
    assert gate.entered.wait(WAIT)
    sent += [bus.publish("a", i) for i in range(1, 7)]
    gate.release.set()
    assert failed_signal.seen.wait(WAIT)
    # Three restarts are allowed within RESTART_PERIOD; the fourth death is final.
    assert gate.wait_for(delivery.RESTART_LIMIT + 1) == sent[:delivery.RESTART_LIMIT + 1]
    stats = wait_stats(sub, failed=True, pending=0)  # failed is set before pending is dropped
    assert stats.restarts == delivery.RESTART_LIMIT
    assert stats.delivered == delivery.RESTART_LIMIT + 1
    assert stats.dropped == len(sent) - stats.delivered  # pending counted dropped
    assert stats.pending == 0
    assert_accounting(stats)
    assert sub not in bus.subscriptions
    # The bus and its other subscribers carry on.
    last = bus.publish("a", "after")
    assert other.wait_for(len(sent) + 1) == [*sent, last]
    assert_accounting(wait_stats(s_other, delivered=len(sent) + 1))
    assert wait_stats(sub).received == len(sent)  # no longer routed
    assert excepthook.calls == []
    report = bus.close()
    assert report.stopped.get("dies", True) is True


def test_restart_budget_renews_after_the_period(
        monkeypatch: pytest.MonkeyPatch, bus: EventBus, excepthook: ExcepthookRecorder) -> None:
    # The limit is "3 in RESTART_PERIOD": with a zero-length period, old restarts
    # never count against new ones, so a worker killed 5 times keeps going.
    monkeypatch.setattr(delivery, "RESTART_PERIOD", 0.0)
    rec = Recorder()

    def handler(event: Event) -> None:
        if event.data < 5:
            raise WorkerKiller()
        rec(event)

    sub = bus.subscribe("*", handler)
    for i in range(6):
        bus.publish("a", i)
    rec.wait_for(1)
    stats = wait_stats(sub, delivered=6)
    assert stats.restarts == 5 and not stats.failed
    assert_accounting(stats)
    assert excepthook.calls == []


# --- a handler that hangs -----------------------------------------------------------------------


def test_close_with_timeout_leaves_a_hanging_handler_behind(excepthook: ExcepthookRecorder) -> None:
    bus = EventBus()
    hang, quick = Gate(), Recorder()
    s_hang = bus.subscribe("*", hang, name="hang")
    bus.subscribe("*", quick, name="quick")
    try:
        sent = [bus.publish("a", i) for i in range(3)]
        assert hang.entered.wait(WAIT)
        report = bus.close(timeout=0.2)
        assert report.stopped == {"hang": False, "quick": True}
        assert not report.all_stopped
        assert quick.events == sent
        assert [t.name for t in bus_threads()] == ["hlcbus-hang"]
    finally:
        hang.release.set()
    assert s_hang.close(timeout=WAIT) is True  # joins the worker
    assert hang.events == sent  # drained once the handler came back
    assert bus_threads() == []
    assert_accounting(wait_stats(s_hang, delivered=3, pending=0))
    assert excepthook.calls == []


# --- bad input ------------------------------------------------------------------------------------


BAD_SUBSCRIBE = [
    pytest.param(("a", 42), {}, TypeError, id="handler-not-callable"),
    pytest.param(("a", None), {"on_late": 1}, TypeError, id="on_late-not-callable"),
    pytest.param(("a", None), {"on_error": "x"}, TypeError, id="on_error-not-callable"),
    pytest.param(("a", None), {"ordered": True, "window_ms": -1}, ValueError, id="window-negative"),
    pytest.param(("a", None), {"ordered": True, "window_ms": 1.5}, TypeError, id="window-float"),
    pytest.param(("a", None), {"ordered": True, "window_ms": "5"}, TypeError, id="window-str"),
    pytest.param(("a", None), {"maxsize": 0}, ValueError, id="maxsize-0"),
    pytest.param(("a", None), {"maxsize": -5}, ValueError, id="maxsize-negative"),
    pytest.param(("a", None), {"maxsize": 2.0}, TypeError, id="maxsize-float"),
    pytest.param(("a", None), {"overflow": "drop"}, ValueError, id="overflow-unknown"),
    pytest.param(("a", None), {"overflow": None}, ValueError, id="overflow-none"),
    pytest.param(("a", None), {"batch_size": 0}, ValueError, id="batch-0"),
    pytest.param(("a", None), {"batch_size": 2.5}, TypeError, id="batch-float"),
    pytest.param(("a*b", None), {}, ValueError, id="pattern-inner-star"),
    pytest.param(("vsm*", None), {}, ValueError, id="pattern-star-without-dot"),
    pytest.param(("*.a", None), {}, ValueError, id="pattern-leading-star"),
    pytest.param(("", None), {}, ValueError, id="pattern-empty"),
    pytest.param((3, None), {}, TypeError, id="pattern-int"),
    pytest.param((None, None), {}, TypeError, id="pattern-none"),
]


@pytest.mark.parametrize(("args", "kwargs", "error"), BAD_SUBSCRIBE)
def test_bad_subscribe_arguments_change_nothing(args: tuple, kwargs: dict, error: type) -> None:
    bus, _ = manual_bus()
    try:
        rec = Recorder()
        sub = bus.subscribe("*", rec, ordered=True, window_ms=0)
        threads = set(threading.enumerate())
        before = bus.subscriptions
        with pytest.raises(error):
            bus.subscribe(*args, **kwargs)
        assert bus.subscriptions == before
        assert set(threading.enumerate()) == threads  # no worker was started
        event = bus.publish("a")
        assert rec.wait_for(1) == [event]  # the existing worker keeps delivering
        assert_accounting(wait_stats(sub, delivered=1))
    finally:
        bus.close()


@pytest.mark.parametrize(
    ("type_", "error"),
    [("", ValueError), (3, TypeError), (None, TypeError), (b"a", TypeError), (["a"], TypeError)],
)
def test_bad_publish_type_changes_nothing(type_: Any, error: type) -> None:
    bus, _ = manual_bus()
    try:
        rec = Recorder()
        sub = bus.subscribe("*", rec)
        last = bus.clock.last
        with pytest.raises(error):
            bus.publish(type_)
        assert bus.clock.last == last  # nothing was stamped
        event = bus.publish("ok")
        assert rec.wait_for(1) == [event]
        assert_accounting(wait_stats(sub, received=1, delivered=1))
    finally:
        bus.close()


@pytest.mark.parametrize("value", [None, "event", Timestamp(START_MS), ("r", None, Timestamp(1))])
def test_bad_receive_changes_nothing(value: Any) -> None:
    bus, _ = manual_bus()
    try:
        rec = Recorder()
        sub = bus.subscribe("*", rec, ordered=True, window_ms=0)
        last, stats = bus.clock.last, bus.stats
        with pytest.raises(TypeError):
            bus.receive(value)
        assert bus.clock.last == last and bus.stats == stats
        good = remote(START_MS - 1)
        assert bus.receive(good)
        assert rec.wait_for(1) == [good]
        assert_accounting(wait_stats(sub, received=1, delivered=1))
    finally:
        bus.close()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"clock": "x"}, TypeError), ({"publish_timeout": 0}, ValueError),
     ({"publish_timeout": -1.0}, ValueError), ({"dedupe_ms": -1}, ValueError),
     ({"dedupe_ms": 1.5}, TypeError)],
)
def test_bad_bus_arguments(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        EventBus(**kwargs)


def test_get_on_a_handler_subscription_is_refused(bus: EventBus) -> None:
    sub = bus.subscribe("a", Recorder())
    with pytest.raises(TypeError):
        sub.get(timeout=0)


def test_publisher_blocked_on_a_subscription_that_fails_is_released_and_counted(
        bus: EventBus, monkeypatch: pytest.MonkeyPatch, failed_signal: LogSignal) -> None:
    # The worker dies for good while a publisher waits for room under "block":
    # the publisher must go on at once, not wait out the timeout.
    monkeypatch.setattr(delivery, "RESTART_LIMIT", 0)
    gate = Gate()

    def handler(event: Event) -> None:
        gate(event)
        raise WorkerKiller()

    sub = bus.subscribe("*", handler, maxsize=1, overflow="block", name="dies")
    bus.publish("a", 0)
    assert gate.entered.wait(WAIT)  # the worker holds event 0 in the handler
    bus.publish("a", 1)  # fills the inbox
    bus.publish("a", 2)  # in flight when it meets the full inbox: goes in, one over
    blocked = threading.Thread(target=bus.publish, args=("a", 3))  # waits before stamping
    blocked.start()
    deadline = time.monotonic() + WAIT
    while sub._space_waiters == 0 and time.monotonic() < deadline:  # nothing notifies this
        time.sleep(POLL)
    assert sub._space_waiters == 1
    started = time.monotonic()
    gate.release.set()
    blocked.join(WAIT)
    assert not blocked.is_alive()
    assert time.monotonic() - started < bus.publish_timeout
    assert failed_signal.seen.wait(WAIT)
    stats = wait_stats(sub, failed=True, pending=0)
    # Event 3 was stamped after the subscription left the routes: never offered to it.
    assert (stats.received, stats.delivered, stats.dropped) == (3, 1, 2)
    assert_accounting(stats)
