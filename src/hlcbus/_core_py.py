"""The pure-Python core: Timestamp, HLC, ManualClock and PriorityBuffer.

This module is the reference implementation.  ``_core.pyx`` is its compiled
twin: the same names, signatures, results and exceptions (PEP 399), and the
same test suite runs against both.  When the two disagree, this one is right.

Layout of a timestamp:

    packed = physical_ms << 16 | logical     (the 64-bit time word)
    node   = 64-bit id of the clock that issued it

Order is (physical, logical, node), which is (packed, node).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, Tuple

from hlcbus.errors import ClockDriftError, ClockOverflowError

if TYPE_CHECKING:  # numpy is optional: now_many imports it when called
    import numpy
    from numpy.typing import NDArray

PHYSICAL_LIMIT = 1 << 48  # exclusive bound of physical milliseconds
LOGICAL_LIMIT = 1 << 16  # exclusive bound of the logical counter
NODE_LIMIT = 1 << 64  # exclusive bound of node ids
PACKED_LIMIT = 1 << 64  # exclusive bound of the time word
LOGICAL_MASK = LOGICAL_LIMIT - 1
# The text form has a four-digit year: 9999-12-31T23:59:59.999Z is its last instant.
TEXT_PHYSICAL_LIMIT = 253_402_300_800_000
TEXT_LENGTH = 46
# A wall reading this far ahead of the monotonic clock's progress is a forward jump.
FORWARD_JUMP_MS = 1_000

_HASH_MULTIPLIER = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: spreads packed words
_MASK64 = (1 << 64) - 1
_OVERFLOW_POLICIES = ("carry", "raise")
_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


# --- argument checks -------------------------------------------------------------


def _index(name: str, value: Any, limit: int) -> int:
    """Return ``value`` as an int in [0, limit) or raise naming ``name``."""
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        value = operator.index(value)
    index: int = value
    if not 0 <= index < limit:
        raise ValueError(f"{name} must be in [0, {_bound_text(limit)}), got {index}")
    return index


def _count(name: str, value: Any) -> int:
    """Return ``value`` as an int >= 0 or raise naming ``name``."""
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        value = operator.index(value)
    count: int = value
    if count < 0:
        raise ValueError(f"{name} must be >= 0, got {count}")
    return count


def _bound_text(limit: int) -> str:
    return f"2**{limit.bit_length() - 1}"


def _check_timestamp(name: str, value: Any) -> Timestamp:
    if type(value) is not Timestamp:
        raise TypeError(f"{name} must be a Timestamp, not {type(value).__name__}")
    return value


# --- calendar arithmetic, integers only so round trips are exact -----------------


def _civil_from_days(days: int) -> Tuple[int, int, int]:
    """Return (year, month, day) of ``days`` since 1970-01-01 (proleptic Gregorian)."""
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Return the days since 1970-01-01 of a valid date with year >= 1970."""
    prior = year - 1
    days = prior * 365 + prior // 4 - prior // 100 + prior // 400 - 719_162
    days += _DAYS_BEFORE_MONTH[month - 1] + (month > 2 and _is_leap(year))
    return days + day - 1


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if _is_leap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _format_text(packed: int, node: int) -> str:
    physical = packed >> 16
    if physical >= TEXT_PHYSICAL_LIMIT:
        raise ValueError(
            f"physical {physical} is after 9999-12-31T23:59:59.999Z and has no text form"
        )
    days, ms = divmod(physical, 86_400_000)
    year, month, day = _civil_from_days(days)
    seconds, milli = divmod(ms, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return (
        f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}."
        f"{milli:03d}Z-{packed & LOGICAL_MASK:04X}-{node:016X}"
    )


def _to_datetime(physical: int) -> datetime:
    if physical >= TEXT_PHYSICAL_LIMIT:  # also datetime.MAXYEAR's end
        raise ValueError(f"physical {physical} is after year 9999, beyond datetime's range")
    days, ms = divmod(physical, 86_400_000)
    year, month, day = _civil_from_days(days)
    seconds, milli = divmod(ms, 1000)
    return datetime(year, month, day, seconds // 3600, seconds // 60 % 60, seconds % 60,
                    milli * 1000, tzinfo=timezone.utc)


# (start, end, name, upper bound or None) of each numeric field of the text form
_TEXT_FIELDS = (
    (0, 4, "year", None),
    (5, 7, "month", 12),
    (8, 10, "day", None),
    (11, 13, "hour", 23),
    (14, 16, "minute", 59),
    (17, 19, "second", 59),
    (20, 23, "millisecond", 999),
)
_TEXT_SEPARATORS = ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z"),
                    (24, "-"), (29, "-"))
_DIGITS = frozenset("0123456789")
_HEX_DIGITS = frozenset("0123456789ABCDEF")


def _malformed(text: str, why: str) -> NoReturn:
    raise ValueError(f"malformed timestamp text {text!r}: {why}")


def _parse_text(text: Any) -> Timestamp:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    if len(text) != TEXT_LENGTH:
        _malformed(text, f"expected {TEXT_LENGTH} characters, got {len(text)}")
    for position, separator in _TEXT_SEPARATORS:
        if text[position] != separator:
            _malformed(text, f"expected {separator!r} at position {position}")
    values = {}
    for start, end, name, upper in _TEXT_FIELDS:
        digits = text[start:end]
        if not _DIGITS.issuperset(digits):
            _malformed(text, f"{name} {digits!r} is not decimal digits")
        values[name] = int(digits)
        if upper is not None and values[name] > upper:
            _malformed(text, f"{name} {values[name]} is out of range")
    year, month, day = values["year"], values["month"], values["day"]
    if year < 1970:
        _malformed(text, f"year {year} is before 1970")
    if month == 0:
        _malformed(text, "month 0 is out of range")
    if not 1 <= day <= _days_in_month(year, month):
        _malformed(text, f"day {day} is out of range for {year:04d}-{month:02d}")
    counter, node = text[25:29], text[30:46]
    if not _HEX_DIGITS.issuperset(counter):
        _malformed(text, f"counter {counter!r} is not 4 upper-case hex digits")
    if not _HEX_DIGITS.issuperset(node):
        _malformed(text, f"node {node!r} is not 16 upper-case hex digits")
    seconds = values["hour"] * 3600 + values["minute"] * 60 + values["second"]
    physical = (_days_from_civil(year, month, day) * 86_400 + seconds) * 1000
    physical += values["millisecond"]
    return Timestamp._make(physical << 16 | int(counter, 16), int(node, 16))


# --- Timestamp -------------------------------------------------------------------


class Timestamp:
    """An HLC timestamp: (physical ms, logical counter, node id); immutable.

    Totally ordered by (physical, logical, node); hashable; picklable.
    ``Timestamp(physical, logical=0, node=0)`` raises TypeError for a
    non-integer field and ValueError for one out of range.
    """

    __slots__ = ("_packed", "_node")
    _packed: int
    _node: int

    def __init__(self, physical: int, logical: int = 0, node: int = 0) -> None:
        physical = _index("physical", physical, PHYSICAL_LIMIT)
        logical = _index("logical", logical, LOGICAL_LIMIT)
        node = _index("node", node, NODE_LIMIT)
        object.__setattr__(self, "_packed", physical << 16 | logical)
        object.__setattr__(self, "_node", node)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("type 'Timestamp' is not an acceptable base type")

    @classmethod
    def _make(cls, packed: int, node: int) -> Timestamp:
        """Build from already-validated fields, skipping the checks."""
        ts = object.__new__(cls)
        object.__setattr__(ts, "_packed", packed)
        object.__setattr__(ts, "_node", node)
        return ts

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Timestamp is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Timestamp is immutable")

    @property
    def physical(self) -> int:
        """Milliseconds since the Unix epoch (48 bits)."""
        return self._packed >> 16

    @property
    def logical(self) -> int:
        """The logical counter (16 bits)."""
        return self._packed & LOGICAL_MASK

    @property
    def node(self) -> int:
        """The id of the clock that issued this timestamp (64 bits)."""
        return self._node

    @property
    def packed(self) -> int:
        """The 64-bit time word ``physical << 16 | logical``."""
        return self._packed

    @classmethod
    def from_packed(cls, packed: int, node: int = 0) -> Timestamp:
        """Build from a time word and a node id."""
        packed = _index("packed", packed, PACKED_LIMIT)
        return cls._make(packed, _index("node", node, NODE_LIMIT))

    def to_bytes(self) -> bytes:
        """Return the 16-byte big-endian encoding; byte order is timestamp order."""
        return (self._packed << 64 | self._node).to_bytes(16, "big")

    @classmethod
    def from_bytes(cls, data: Any) -> Timestamp:
        """Decode the 16-byte encoding (bytes, bytearray or memoryview)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        data = bytes(data)
        if len(data) != 16:
            raise ValueError(f"data must be 16 bytes, got {len(data)}")
        word = int.from_bytes(data, "big")
        return cls._make(word >> 64, word & _MASK64)

    def __str__(self) -> str:
        return _format_text(self._packed, self._node)

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse the 46-character text form.

        For example ``2026-12-03T12:00:00.000Z-0001-00000000000000FF``.

        Raises ValueError saying what is malformed, TypeError for a non-str.
        """
        return _parse_text(text)

    def to_datetime(self) -> datetime:
        """Return the physical part as an aware UTC datetime (counter and node dropped)."""
        return _to_datetime(self._packed >> 16)

    def __repr__(self) -> str:
        return (f"Timestamp(physical={self._packed >> 16}, "
                f"logical={self._packed & LOGICAL_MASK}, node={self._node})")

    def __hash__(self) -> int:
        value = ((self._packed * _HASH_MULTIPLIER) ^ self._node) & _MASK64
        if value >= 1 << 63:
            value -= 1 << 64
        return -2 if value == -1 else value

    def __reduce__(self) -> Tuple[Any, ...]:
        return (Timestamp, (self._packed >> 16, self._packed & LOGICAL_MASK, self._node))

    def __eq__(self, other: object) -> bool:
        if type(other) is not Timestamp:
            return NotImplemented
        return self._packed == other._packed and self._node == other._node

    def __ne__(self, other: object) -> bool:
        if type(other) is not Timestamp:
            return NotImplemented
        return self._packed != other._packed or self._node != other._node

    def __lt__(self, other: Timestamp) -> bool:
        if type(other) is not Timestamp:
            return NotImplemented
        return (self._packed, self._node) < (other._packed, other._node)

    def __le__(self, other: Timestamp) -> bool:
        if type(other) is not Timestamp:
            return NotImplemented
        return (self._packed, self._node) <= (other._packed, other._node)

    def __gt__(self, other: Timestamp) -> bool:
        if type(other) is not Timestamp:
            return NotImplemented
        return (self._packed, self._node) > (other._packed, other._node)

    def __ge__(self, other: Timestamp) -> bool:
        if type(other) is not Timestamp:
            return NotImplemented
        return (self._packed, self._node) >= (other._packed, other._node)


# --- Event ---------------------------------------------------------------------


def _check_type(event_type: Any) -> str:
    if type(event_type) is not str:
        raise TypeError(f"type must be a str, not {type(event_type).__name__}")
    if not event_type:
        raise ValueError("type must be a non-empty str")
    return event_type


class Event:
    """An event: ``type`` (non-empty str), ``data`` (any object), ``timestamp``; immutable.

    An event's identity is its timestamp (a clock issues each timestamp
    once), so events compare and hash by timestamp alone.
    """

    __slots__ = ("_type", "_data", "_timestamp")
    _type: str
    _data: Any
    _timestamp: Timestamp

    def __init__(self, type: str, data: Any, timestamp: Timestamp) -> None:
        object.__setattr__(self, "_type", _check_type(type))
        object.__setattr__(self, "_timestamp", _check_timestamp("timestamp", timestamp))
        object.__setattr__(self, "_data", data)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("type 'Event' is not an acceptable base type")

    @classmethod
    def _make(cls, event_type: str, data: Any, timestamp: Timestamp) -> Event:
        event = object.__new__(cls)
        object.__setattr__(event, "_type", event_type)
        object.__setattr__(event, "_data", data)
        object.__setattr__(event, "_timestamp", timestamp)
        return event

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Event is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Event is immutable")

    @property
    def type(self) -> str:
        """The event type, e.g. ``"vsm.s1.update"``."""
        return self._type

    @property
    def data(self) -> Any:
        """The payload."""
        return self._data

    @property
    def timestamp(self) -> Timestamp:
        """The HLC timestamp: the event's identity and its place in the order."""
        return self._timestamp

    def __eq__(self, other: object) -> bool:
        if type(other) is not Event:
            return NotImplemented
        return self._timestamp == other._timestamp

    def __ne__(self, other: object) -> bool:
        if type(other) is not Event:
            return NotImplemented
        return self._timestamp != other._timestamp

    def __hash__(self) -> int:
        return hash(self._timestamp)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (Event, (self._type, self._data, self._timestamp))

    def __repr__(self) -> str:
        return f"Event({self._type!r}, {self._data!r}, {self._timestamp!r})"


def stamp(clock: HLC, type: str, data: Any) -> Event:
    """Return ``Event(type, data, clock.now())``; the bus's publish path."""
    return Event._make(_check_type(type), data, clock.now())


# --- ManualClock ----------------------------------------------------------------


class ManualClock:
    """A wall clock for tests and simulations: ``clock()`` returns its milliseconds.

    ``set(ms)`` moves it anywhere in [0, 2**48); ``advance(delta_ms)`` moves it
    by a signed delta (negative: a backward jump).  Bad values raise and leave
    it unchanged.  Thread-safe.
    """

    __slots__ = ("_ms", "_lock")

    def __init__(self, start_ms: int = 0) -> None:
        self._ms = _index("start_ms", start_ms, PHYSICAL_LIMIT)
        self._lock = threading.Lock()  # guards _ms across advance()'s read-modify-write

    def __call__(self) -> int:
        return self._ms

    def set(self, ms: int) -> None:
        """Move the clock to ``ms``."""
        self._ms = _index("ms", ms, PHYSICAL_LIMIT)

    def advance(self, delta_ms: int) -> int:
        """Move the clock by ``delta_ms`` (may be negative) and return the new reading."""
        if type(delta_ms) is not int:
            if isinstance(delta_ms, bool) or not hasattr(type(delta_ms), "__index__"):
                raise TypeError(f"delta_ms must be an int, not {type(delta_ms).__name__}")
            delta_ms = operator.index(delta_ms)
        with self._lock:
            target = self._ms + delta_ms
            if not 0 <= target < PHYSICAL_LIMIT:
                raise ValueError(
                    f"delta_ms {delta_ms} moves the clock to {target}, outside [0, 2**48)"
                )
            self._ms = target
        return target

    def __repr__(self) -> str:
        return f"ManualClock({self._ms})"


# --- HLC -------------------------------------------------------------------------


def _system_wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class HLC:
    """A hybrid logical clock (Kulkarni et al. 2014) over one packed 64-bit word.

    ``now()`` issues a timestamp for a local or send event,
    ``update(remote)`` for a receive event; each result is strictly greater
    than every timestamp this clock issued before.  Thread-safe.

    Guarantees:
    - The word never decreases, whatever the wall clock does; wall jumps are
      only counted (``backward_jumps``, ``forward_jumps``).
    - A failed call (drift, overflow, a bad wall reading) changes nothing.
    """

    __slots__ = ("_node", "_wall", "_max_drift_ms", "_raise_on_overflow", "_word",
                 "_last_wall", "_last_mono", "_backward_jumps", "_forward_jumps", "_lock")

    def __init__(
        self,
        node: Optional[int] = None,
        *,
        wall: Optional[Callable[[], int]] = None,
        max_drift_ms: Optional[int] = 60_000,
        overflow: str = "carry",
    ) -> None:
        self._node = secrets.randbits(64) if node is None else _index("node", node, NODE_LIMIT)
        if wall is not None and not callable(wall):
            raise TypeError(f"wall must be a callable or None, not {type(wall).__name__}")
        if max_drift_ms is not None:
            max_drift_ms = _index("max_drift_ms", max_drift_ms, PHYSICAL_LIMIT)
        if overflow not in _OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be 'carry' or 'raise', got {overflow!r}")
        self._wall = wall
        self._max_drift_ms = max_drift_ms
        self._raise_on_overflow = overflow == "raise"
        self._word = 0
        self._last_wall = -1  # -1: no reading yet, so no jump to count
        self._last_mono = 0
        self._backward_jumps = 0
        self._forward_jumps = 0
        # Guards _word, _last_wall, _last_mono and the jump counters: a tick is a
        # read-compute-write of all of them, and the wall is read inside it so
        # that readings are seen in the order they were taken.
        self._lock = threading.Lock()

    @property
    def node(self) -> int:
        """This clock's 64-bit node id."""
        return self._node

    @property
    def max_drift_ms(self) -> Optional[int]:
        """How far ahead of the wall clock a remote timestamp may be; None: no limit."""
        return self._max_drift_ms

    @property
    def overflow(self) -> str:
        """The counter overflow policy: 'carry' or 'raise'."""
        return "raise" if self._raise_on_overflow else "carry"

    @property
    def last(self) -> Timestamp:
        """The last timestamp issued (physical 0 before the first), without ticking."""
        return Timestamp._make(self._word, self._node)

    @property
    def backward_jumps(self) -> int:
        """How many wall readings were below the previous reading."""
        return self._backward_jumps

    @property
    def forward_jumps(self) -> int:
        """How many wall readings ran ahead of the monotonic clock by over FORWARD_JUMP_MS."""
        return self._forward_jumps

    def wall_ms(self) -> int:
        """Read the wall clock (validated) without ticking."""
        return self._read_wall()

    def now(self) -> Timestamp:
        """Issue a timestamp for a local or send event: ``T = max(T + 1, pt << 16)``.

        Raises ClockOverflowError (clock unchanged) when the counter is full
        under ``overflow="raise"`` or the 48-bit range is exhausted.
        """
        with self._lock:
            pt = self._read_wall()
            word = self._advance(pt, self._word + 1)
        return Timestamp._make(word, self._node)

    def now_many(self, n: int) -> NDArray[numpy.uint64]:
        """Reserve ``n`` timestamps in one step; return their packed words, increasing.

        The clock advances as if ``now()`` were called ``n`` times with one
        wall reading: the words are ``first, first + 1, ... first + n - 1``
        with ``first = max(T + 1, pt << 16)``, the counter carrying into the
        physical part as it fills.  The node is this clock's ``node``.
        ``n == 0`` returns an empty array and leaves the clock alone.

        Raises TypeError or ValueError for an ``n`` that is not an int >= 0,
        ClockOverflowError (clock unchanged) when the range would cross a
        full counter under ``overflow="raise"`` or pass the end of the 48-bit
        range.  Needs numpy (imported here).  Costs O(n) in numpy, O(1) under
        the lock.
        """
        n = _count("n", n)
        import numpy

        # Allocated before the lock: a failed allocation leaves the clock alone.
        words = numpy.arange(n, dtype=numpy.uint64)
        if n:
            with self._lock:
                pt = self._read_wall()
                first = self._reserve(pt, self._word + 1, n)
            words += numpy.uint64(first)
        return words

    def update(self, remote: Timestamp, /) -> Timestamp:
        """Merge a received timestamp: ``T = max(T + 1, remote.T + 1, pt << 16)``.

        The result is greater than ``remote`` and than every timestamp issued
        before.  Raises ClockDriftError when ``remote.physical`` is more than
        ``max_drift_ms`` ahead of the wall clock, TypeError for a
        non-Timestamp; the clock is unchanged in either case.
        """
        remote = _check_timestamp("remote", remote)
        with self._lock:
            pt = self._read_wall()
            limit = self._max_drift_ms
            if limit is not None and (remote._packed >> 16) - pt > limit:
                raise ClockDriftError(remote, pt, limit)
            word = self._advance(pt, max(self._word, remote._packed) + 1)
        return Timestamp._make(word, self._node)

    def _read_wall(self) -> int:
        if self._wall is None:
            return _system_wall_ms()
        reading = self._wall()
        if type(reading) is not int:
            if isinstance(reading, bool) or not hasattr(type(reading), "__index__"):
                raise TypeError(f"wall() must return an int, not {type(reading).__name__}")
            reading = operator.index(reading)
        if not 0 <= reading < PHYSICAL_LIMIT:
            raise ValueError(f"wall() returned {reading}, outside [0, 2**48)")
        return reading

    def _advance(self, pt: int, candidate: int) -> int:
        """Commit ``max(candidate, pt << 16)``; the caller holds the lock."""
        floor = pt << 16
        word = candidate if candidate > floor else floor
        if word >= PACKED_LIMIT:
            raise ClockOverflowError("the clock has reached the end of its 48-bit range")
        if word != floor and word & LOGICAL_MASK == 0 and self._raise_on_overflow:
            raise ClockOverflowError(
                f"the logical counter is full at physical {(word >> 16) - 1} ms "
                "and overflow='raise'"
            )
        self._count_jump(pt)
        self._word = word
        return word

    def _reserve(self, pt: int, candidate: int, n: int) -> int:
        """Commit ``n`` words from ``max(candidate, pt << 16)``; return the first.

        ``_advance`` for a batch (n >= 1); the caller holds the lock.
        """
        floor = pt << 16
        first = candidate if candidate > floor else floor
        last = first + n - 1
        if last >= PACKED_LIMIT:
            raise ClockOverflowError("the clock has reached the end of its 48-bit range")
        if self._raise_on_overflow:
            if first != floor and first & LOGICAL_MASK == 0:
                full = (first >> 16) - 1
            elif last >> 16 != first >> 16:
                full = first >> 16
            else:
                full = -1
            if full >= 0:
                raise ClockOverflowError(
                    f"the logical counter is full at physical {full} ms and overflow='raise'"
                )
        self._count_jump(pt)
        self._word = last
        return first

    def _count_jump(self, pt: int) -> None:
        mono = _monotonic_ms()
        if self._last_wall >= 0:
            if pt < self._last_wall:
                self._backward_jumps += 1
            elif (pt - self._last_wall) - (mono - self._last_mono) > FORWARD_JUMP_MS:
                self._forward_jumps += 1
        self._last_wall = pt
        self._last_mono = mono

    def __repr__(self) -> str:
        return f"HLC(node={self._node:#018x}, last={self.last!r})"


# --- PriorityBuffer -------------------------------------------------------------


class PriorityBuffer:
    """A min-heap of (Timestamp, item) entries keyed by (physical, logical, node).

    Equal keys pop in insertion order.  push and pop cost O(log n);
    ``pop_until`` costs O(k log n) for k entries popped.  Each call is atomic
    with respect to other threads.
    """

    __slots__ = ("_heap", "_seq", "_lock")

    def __init__(self) -> None:
        # Entries are (packed, node, seq, ts, item): seq is unique, so tuple
        # comparison never reaches ts or item, and ties pop first-in first-out.
        self._heap: list[Tuple[int, int, int, Timestamp, Any]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()  # guards _heap: pop_until is several heap steps

    def push(self, ts: Timestamp, item: Any, /) -> None:
        """Add ``item`` under key ``ts``."""
        ts = _check_timestamp("ts", ts)
        with self._lock:
            heapq.heappush(self._heap, (ts._packed, ts._node, next(self._seq), ts, item))

    def pop(self) -> Tuple[Timestamp, Any]:
        """Remove and return the entry with the smallest key; IndexError when empty."""
        with self._lock:
            if not self._heap:
                raise IndexError("pop from an empty PriorityBuffer")
            entry = heapq.heappop(self._heap)
        return entry[3], entry[4]

    def peek(self) -> Tuple[Timestamp, Any]:
        """Return the entry with the smallest key without removing it; IndexError when empty."""
        with self._lock:
            if not self._heap:
                raise IndexError("peek at an empty PriorityBuffer")
            entry = self._heap[0]
        return entry[3], entry[4]

    def pop_until(self, ts: Timestamp, /) -> list[Tuple[Timestamp, Any]]:
        """Remove and return, in key order, every entry whose key is <= ``ts``."""
        ts = _check_timestamp("ts", ts)
        bound = (ts._packed, ts._node)
        released = []
        with self._lock:
            heap = self._heap
            while heap and (heap[0][0], heap[0][1]) <= bound:
                entry = heapq.heappop(heap)
                released.append((entry[3], entry[4]))
        return released

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            dropped, self._heap = self._heap, []
        # Dropped outside the lock: a finalizer run by the release may use this buffer.
        del dropped

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __repr__(self) -> str:
        return f"<PriorityBuffer of {len(self._heap)} entries>"


# --- ReorderBuffer ----------------------------------------------------------------


class ReorderBuffer:
    """Put events back in timestamp order and release each once, in increasing order.

    The ordered-delivery state of one subscription: a PriorityBuffer of
    events, the last key released, and a log of released keys for telling a
    duplicate from a late event.  Not thread-safe beyond each call being
    atomic: one worker owns it.  ``absorb`` costs O(log n) per event,
    ``release`` O(log n) per event released.
    """

    __slots__ = ("_heap", "_last", "_high", "_log", "_head", "_reordered", "_duplicates")

    def __init__(self) -> None:
        self._heap = PriorityBuffer()
        self._last: Optional[Tuple[int, int]] = None  # key of the last event released
        self._high: Optional[Tuple[int, int]] = None  # highest key absorbed
        self._log: list[Tuple[int, int]] = []  # released keys, increasing; [_head:] live
        self._head = 0
        self._reordered = 0
        self._duplicates = 0

    @property
    def reordered(self) -> int:
        """Events absorbed behind a higher key (put back in order)."""
        return self._reordered

    @property
    def duplicates(self) -> int:
        """Events dropped because their key was buffered or released already."""
        return self._duplicates

    @property
    def last_released(self) -> Optional[Timestamp]:
        """The key of the last event released, or None."""
        return None if self._last is None else Timestamp._make(*self._last)

    def peek(self) -> Optional[Timestamp]:
        """The smallest buffered key, or None when empty."""
        return self._heap.peek()[0] if self._heap else None

    def absorb(self, inbox: Any, count: int, /) -> list[Event]:
        """Take ``count`` events from ``inbox.popleft()``; return the late ones.

        An event at or below the last released key is a duplicate (its key
        is in the release log: counted and dropped) or late (returned, never
        buffered).  Any other event is buffered.
        """
        popleft, late = inbox.popleft, []
        for _ in range(count):
            event = popleft()
            if type(event) is not Event:
                raise TypeError(f"absorb takes Events, not {type(event).__name__}")
            key = (event._timestamp._packed, event._timestamp._node)
            if self._last is not None and key <= self._last:
                if self._logged(key):
                    self._duplicates += 1
                else:
                    late.append(event)
                continue
            if self._high is None or key > self._high:
                self._high = key
            elif key < self._high:
                self._reordered += 1
            self._heap.push(event._timestamp, event)
        return late

    def _logged(self, key: Tuple[int, int]) -> bool:
        i = bisect.bisect_left(self._log, key, self._head)
        return i < len(self._log) and self._log[i] == key

    def release(self, bound: Timestamp, /) -> list[Event]:
        """Remove and return, in order, the events with key <= ``bound``.

        A second event with the key just released is a duplicate: counted, dropped.
        """
        bound = _check_timestamp("bound", bound)
        released, log, last = [], self._log, self._last
        for ts, event in self._heap.pop_until(bound):
            key = (ts._packed, ts._node)
            if key == last:
                self._duplicates += 1
                continue
            released.append(event)
            log.append(key)
            last = key
        self._last = last
        return released

    def release_all(self) -> list[Event]:
        """Release every buffered event, in order."""
        return self.release(Timestamp._make(PACKED_LIMIT - 1, NODE_LIMIT - 1))

    def expire(self, before_physical: int) -> None:
        """Forget released keys with physical below ``before_physical``."""
        log, head = self._log, self._head
        bound = before_physical << 16
        while head < len(log) and log[head][0] < bound:
            head += 1
        if head > 1024 and head * 2 > len(log):
            del log[:head]
            head = 0
        self._head = head

    def evict(self, count: int) -> int:
        """Drop up to ``count`` of the smallest buffered events; return how many."""
        dropped = 0
        while dropped < count and self._heap:
            self._heap.pop()
            dropped += 1
        return dropped

    def clear(self) -> int:
        """Drop every buffered event; return how many."""
        count = len(self._heap)
        self._heap.clear()
        return count

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __repr__(self) -> str:
        return f"<ReorderBuffer of {len(self._heap)} events>"
