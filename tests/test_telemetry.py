"""Telemetry: attach/detach, the events the bus emits, broken handlers, rate-limited logs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from bus_helpers import WAIT, Recorder, remote

from hlcbus import HLC, ClockDriftError, Event, EventBus, ManualClock, telemetry


class Sink:
    """A telemetry handler that records calls and lets a test wait for them."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
        self._cond = threading.Condition()  # guards calls

    def __call__(self, name: tuple[str, ...], measurements: Any, metadata: Any) -> None:
        with self._cond:
            self.calls.append((name, dict(measurements), dict(metadata)))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Any]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.calls) >= count, timeout), self.calls
            return list(self.calls)

    def wait_until(self, match: Any, timeout: float = WAIT) -> Any:
        """Wait for a call for which ``match(name, measurements, metadata)``; return it."""
        def found() -> Any:
            return next((call for call in self.calls if match(*call)), None)
        with self._cond:
            assert self._cond.wait_for(found, timeout), self.calls
            return found()


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink()
    yield sink
    telemetry.detach("test")


def test_attach_execute_detach(sink: Sink) -> None:
    telemetry.attach("test", ("app", "thing"), sink)
    assert telemetry.attached(("app", "thing"))
    assert ("test", ("app", "thing")) in telemetry.list_handlers(("app",))
    telemetry.execute(("app", "thing"), {"n": 1}, {"who": "me"})
    telemetry.execute(("app", "other"), {"n": 2})  # nobody listens: nothing happens
    assert sink.calls == [(("app", "thing"), {"n": 1}, {"who": "me"})]
    assert telemetry.detach("test") is True
    assert telemetry.detach("test") is False
    telemetry.execute(("app", "thing"), {"n": 3})
    assert len(sink.calls) == 1


def test_attach_validates(sink: Sink) -> None:
    with pytest.raises(TypeError, match="event_name"):
        telemetry.attach("test", "app.thing", sink)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="function must be callable"):
        telemetry.attach("test", ("app",), 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler_id"):
        telemetry.attach("", ("app",), sink)
    telemetry.attach("test", ("app",), sink)
    with pytest.raises(ValueError, match="attached already"):
        telemetry.attach("test", ("app", "b"), sink)
    assert telemetry.list_handlers(("app",)) == [("test", ("app",))]


def test_a_raising_handler_is_detached_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(name: Any, measurements: Any, metadata: Any) -> None:
        raise RuntimeError("boom")

    telemetry.attach("broken", ("app", "x"), broken)
    with caplog.at_level(logging.ERROR, logger="hlcbus"):
        telemetry.execute(("app", "x"), {})
    assert not telemetry.attached(("app", "x"))
    assert any("detaching" in r.getMessage() for r in caplog.records)


def test_late_event_is_emitted_with_its_lateness(sink: Sink) -> None:
    telemetry.attach("test", telemetry.LATE, sink)
    wall = ManualClock(1_000_000)
    with EventBus(HLC(1, wall=wall)) as bus:
        rec = Recorder()
        sub = bus.subscribe("*", rec, ordered=True, window_ms=10)
        assert bus.receive(remote(999_990, node=5))
        wall.advance(20)
        rec.wait_for(1)
        assert bus.receive(remote(999_970, node=6))  # below what was released
        (name, measurements, metadata), = sink.wait_for(1)
        assert name == telemetry.LATE and measurements == {"lateness_ms": 20}
        assert metadata["subscription"] == sub.name and metadata["event"].timestamp.node == 6


def test_drift_rejection_is_emitted(sink: Sink) -> None:
    telemetry.attach("test", telemetry.DRIFT_REJECTED, sink)
    wall = ManualClock(1_000_000)
    with EventBus(HLC(1, wall=wall, max_drift_ms=100)) as bus:
        with pytest.raises(ClockDriftError):
            bus.receive(remote(1_000_500, node=5))
    (_, measurements, metadata), = sink.calls
    assert measurements == {"ahead_ms": 500}
    assert metadata["local"] == 1_000_000 and metadata["limit"] == 100
    assert metadata["remote"].physical == 1_000_500


def test_handler_error_is_emitted(sink: Sink, caplog: pytest.LogCaptureFixture) -> None:
    telemetry.attach("test", telemetry.HANDLER_ERROR, sink)

    def handler(event: Event) -> None:
        raise ValueError("bad")

    with EventBus() as bus:
        bus.subscribe("*", handler, name="failing")
        event = bus.publish("a")
        (_, measurements, metadata), = sink.wait_for(1)
    assert measurements == {"count": 1}
    assert metadata["subscription"] == "failing" and metadata["event"] == event
    assert isinstance(metadata["exception"], ValueError)


def test_periodic_stats_and_clock_jumps(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "STATS_INTERVAL", 0.01)
    telemetry.attach_many("test", [telemetry.SUBSCRIPTION_STATS, telemetry.CLOCK_JUMPS], sink)
    wall = ManualClock(1_000_000)
    with EventBus(HLC(1, wall=wall)) as bus:
        bus.subscribe("*", Recorder(), ordered=True, window_ms=50, name="o")
        bus.publish("a")
        wall.advance(-5)  # a backward jump, reported at a later tick
        bus.publish("b")
        # The manual wall never passes the window: both events stay buffered,
        # and the idle worker still wakes for each tick.
        stats = sink.wait_until(lambda name, m, meta: name == telemetry.SUBSCRIPTION_STATS
                                and m["size"] == 2)
        jumps = sink.wait_until(lambda name, m, meta: name == telemetry.CLOCK_JUMPS)
    assert stats[2] == {"subscription": "o", "pattern": "*", "ordered": True}
    assert {"received", "delivered", "reordered", "late", "duplicates", "dropped", "pending",
            "size", "watermark_lag_ms"} == set(stats[1])
    assert stats[1]["pending"] == 2 and stats[1]["received"] == 2
    assert jumps[1] == {"backward": 1, "forward": 0}


def test_per_event_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "LOG_BURST", 3)
    limited = telemetry.RateLimitedLog("source")
    with caplog.at_level(logging.WARNING, logger="hlcbus"):
        for n in range(10):
            limited(logging.WARNING, "warning %d", n)
    assert [r.getMessage() for r in caplog.records] == ["warning 0", "warning 1", "warning 2"]
    monkeypatch.setattr(telemetry, "LOG_PERIOD", 0.0)
    with caplog.at_level(logging.WARNING, logger="hlcbus"):
        limited(logging.WARNING, "again")
    assert "7 more like this" in caplog.records[-2].getMessage()
    assert caplog.records[-1].getMessage() == "again"


class Killer(BaseException):
    """Not an Exception: raised by a handler, it kills its worker thread."""


def test_restart_and_failure_are_emitted(sink: Sink, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    from hlcbus import delivery

    monkeypatch.setattr(delivery, "RESTART_LIMIT", 1)
    telemetry.attach_many("test", [telemetry.RESTART, telemetry.FAILED], sink)

    def handler(event: Event) -> None:
        raise Killer()

    with EventBus() as bus:
        bus.subscribe("*", handler, name="dies")
        bus.publish("a")
        bus.publish("b")
        restart, failed = sink.wait_for(2)
    assert restart[0] == telemetry.RESTART and restart[1] == {"restarts": 1}
    assert failed[0] == telemetry.FAILED and failed[2]["subscription"] == "dies"
    assert isinstance(failed[2]["exception"], Killer)


def test_nothing_attached_means_nothing_executed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cost of unattached telemetry is measured in bench/; here, that the
    # delivery paths do not even call execute() when nobody listens.
    calls = []
    real = telemetry.execute
    monkeypatch.setattr(telemetry, "execute",
                        lambda *args: calls.append(args[0]) or real(*args))
    with EventBus() as bus:
        rec = Recorder()
        sub = bus.subscribe("*", rec, ordered=True, window_ms=0)
        for n in range(1_000):
            bus.publish("a", n)
        rec.wait_for(1_000)
        assert sub.stats.delivered == 1_000
    assert calls == []
