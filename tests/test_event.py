"""Event and stamp() in both cores."""

from __future__ import annotations

import pickle
from types import ModuleType

import pytest


def test_fields_and_identity(core: ModuleType) -> None:
    ts = core.Timestamp(10, 2, 7)
    event = core.Event("vsm.a", {"x": 1}, ts)
    assert (event.type, event.data, event.timestamp) == ("vsm.a", {"x": 1}, ts)
    # An event's identity is its timestamp.
    assert event == core.Event("other", None, core.Timestamp(10, 2, 7))
    assert event != core.Event("vsm.a", {"x": 1}, core.Timestamp(10, 2, 8))
    assert hash(event) == hash(ts)
    assert event != "vsm.a"
    with pytest.raises(TypeError):
        event < event  # noqa: B015 - events are not ordered; their timestamps are


def test_immutable_and_picklable(core: ModuleType) -> None:
    event = core.Event("a", [1, 2], core.Timestamp(1))
    with pytest.raises(AttributeError):
        event.data = 3  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(event))
    assert copy == event and copy.data == [1, 2] and copy.type == "a"
    assert repr(event) == "Event('a', [1, 2], Timestamp(physical=1, logical=0, node=0))"


@pytest.mark.parametrize("bad, error, message", [
    (None, TypeError, "type must be a str, not NoneType"),
    (3, TypeError, "type must be a str, not int"),
    ("", ValueError, "type must be a non-empty str"),
])
def test_bad_type(core: ModuleType, bad: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        core.Event(bad, None, core.Timestamp(1))
    clock = core.HLC(1, wall=core.ManualClock(5))
    with pytest.raises(error, match=message):
        core.stamp(clock, bad, None)
    assert clock.last == core.Timestamp(0, 0, 1)  # a refused stamp does not tick


def test_bad_timestamp(core: ModuleType) -> None:
    with pytest.raises(TypeError, match="timestamp must be a Timestamp, not tuple"):
        core.Event("a", None, (1, 0, 0))


def test_stamp_ticks_the_clock(core: ModuleType) -> None:
    clock = core.HLC(9, wall=core.ManualClock(100))
    first, second = core.stamp(clock, "a", 1), core.stamp(clock, "a", 2)
    assert first.timestamp == core.Timestamp(100, 0, 9) < second.timestamp
    assert second.timestamp == clock.last and second.data == 2
