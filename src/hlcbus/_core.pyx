# cython: language_level=3, freethreading_compatible=True
# cython: boundscheck=False, wraparound=False, cdivision=True
"""The compiled core: Timestamp, HLC, ManualClock and PriorityBuffer.

Twin of ``_core_py`` (the reference): same names, signatures, results and
exceptions.  Hot paths (ticking, comparing, encoding, the heap) run in C;
cold paths that only build an error message or a datetime call the twin's
helpers, so both cores say exactly the same thing.

Thread safety: every method that reads and writes state does so inside
``cython.critical_section(self)``.  On a GIL build that costs nothing, since
these sections call no Python code that could release the GIL between the
read and the write; on a free-threaded build it is a per-object lock.  The
one exception is an HLC whose wall is a Python callable: its ticks also hold
a threading.Lock (see HLC.__init__).
"""

cimport cython
from libc.stdint cimport int64_t, uint64_t
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memmove

import operator
import secrets
import threading

from hlcbus import _core_py as _py
from hlcbus.errors import ClockDriftError, ClockOverflowError

cdef extern from *:
    """
    #include <time.h>
    #if defined(_WIN32)
    #include <windows.h>
    #endif

    /* Milliseconds since the Unix epoch, floored like time.time_ns() // 10**6. */
    static inline int64_t hlcbus_realtime_ms(void) {
        struct timespec ts;
    #if defined(_WIN32)
        timespec_get(&ts, TIME_UTC);
    #else
        clock_gettime(CLOCK_REALTIME, &ts);
    #endif
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }

    /* A monotonic reading in ms; coarse is enough to tell a jump of a second. */
    static inline int64_t hlcbus_monotonic_ms(void) {
    #if defined(_WIN32)
        return (int64_t)GetTickCount64();
    #else
        struct timespec ts;
    #if defined(CLOCK_MONOTONIC_COARSE)
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    #else
        clock_gettime(CLOCK_MONOTONIC, &ts);
    #endif
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    #endif
    }
    """
    int64_t hlcbus_realtime_ms() nogil
    int64_t hlcbus_monotonic_ms() nogil

cdef extern from "Python.h":
    object PyUnicode_FromStringAndSize(const char *u, Py_ssize_t size)
    object PyBytes_FromStringAndSize(const char *v, Py_ssize_t size)
    const char* PyUnicode_AsUTF8AndSize(object u, Py_ssize_t *size) except NULL
    bint PyUnicode_IS_ASCII(object u)

cdef uint64_t PHYSICAL_MAX = (<uint64_t>1 << 48) - 1
cdef uint64_t LOGICAL_MASK = 0xFFFF
cdef uint64_t WORD_MAX = 0xFFFFFFFFFFFFFFFF
cdef uint64_t HASH_MULTIPLIER = 0x9E3779B97F4A7C15
cdef int64_t TEXT_PHYSICAL_LIMIT = _py.TEXT_PHYSICAL_LIMIT
cdef int64_t FORWARD_JUMP_MS = _py.FORWARD_JUMP_MS
cdef const char* HEX = b"0123456789ABCDEF"


# --- argument checks: the fast path here, the error from the twin -----------------


cdef inline uint64_t _field(str name, object value, uint64_t maximum) except? 0xFFFFFFFFFFFFFFFF:
    """Return ``value`` if it is an int in [0, maximum]; else raise as the twin does."""
    cdef uint64_t result
    if type(value) is int and value >= 0:
        try:
            result = value
        except OverflowError:
            pass
        else:
            if result <= maximum:
                return result
    return _py._index(name, value, maximum + 1 if maximum != WORD_MAX else _py.NODE_LIMIT)


cdef inline Timestamp _check_timestamp(str name, object value):
    if type(value) is not Timestamp:
        raise TypeError(f"{name} must be a Timestamp, not {type(value).__name__}")
    return <Timestamp>value


# --- calendar arithmetic (mirrors _core_py._civil_from_days) ----------------------


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef void _civil_from_days(int64_t days, int64_t* year, int* month, int* day) noexcept nogil:
    days += 719468
    cdef int64_t era = _floordiv(days, 146097)
    cdef int64_t doe = days - era * 146097
    cdef int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    cdef int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    cdef int64_t mp = (5 * doy + 2) / 153
    day[0] = <int>(doy - (153 * mp + 2) / 5 + 1)
    month[0] = <int>(mp + 3 if mp < 10 else mp - 9)
    year[0] = yoe + era * 400 + (1 if month[0] <= 2 else 0)


cdef inline void _put_decimal(char* out, int64_t value, int width) noexcept nogil:
    cdef int i
    for i in range(width - 1, -1, -1):
        out[i] = <char>(48 + value % 10)
        value //= 10


cdef str _format_text(uint64_t packed, uint64_t node):
    cdef int64_t physical = <int64_t>(packed >> 16)
    if physical >= TEXT_PHYSICAL_LIMIT:
        return _py._format_text(packed, node)  # raises, with the twin's message
    cdef char buf[46]
    cdef int64_t year, ms = physical % 86400000
    cdef int month, day, i
    _civil_from_days(physical // 86400000, &year, &month, &day)
    _put_decimal(buf, year, 4)
    buf[4] = b'-'
    _put_decimal(buf + 5, month, 2)
    buf[7] = b'-'
    _put_decimal(buf + 8, day, 2)
    buf[10] = b'T'
    _put_decimal(buf + 11, ms // 3600000, 2)
    buf[13] = b':'
    _put_decimal(buf + 14, ms // 60000 % 60, 2)
    buf[16] = b':'
    _put_decimal(buf + 17, ms // 1000 % 60, 2)
    buf[19] = b'.'
    _put_decimal(buf + 20, ms % 1000, 3)
    buf[23] = b'Z'
    buf[24] = b'-'
    for i in range(4):
        buf[25 + i] = HEX[(packed >> (12 - 4 * i)) & 0xF]
    buf[29] = b'-'
    for i in range(16):
        buf[30 + i] = HEX[(node >> (60 - 4 * i)) & 0xF]
    return PyUnicode_FromStringAndSize(buf, 46)


cdef inline int _digits(const char* s, int width) noexcept nogil:
    """Return the decimal value of ``width`` digits at ``s``, or -1 if any is not a digit."""
    cdef int value = 0, i
    for i in range(width):
        if s[i] < b'0' or s[i] > b'9':
            return -1
        value = value * 10 + (s[i] - 48)
    return value


cdef inline int _hex_digit(char c) noexcept nogil:
    if b'0' <= c <= b'9':
        return c - 48
    if b'A' <= c <= b'F':
        return c - 55
    return -1


cdef inline bint _is_leap(int64_t year) noexcept nogil:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


cdef int _DAYS_BEFORE_MONTH[12]
_DAYS_BEFORE_MONTH[:] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
cdef int _DAYS_IN_MONTH[12]
_DAYS_IN_MONTH[:] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


cdef bint _parse_fast(const char* s, uint64_t* packed, uint64_t* node) noexcept nogil:
    """Parse a 46-byte text form; False on anything malformed (the twin then says what)."""
    if (s[4] != b'-' or s[7] != b'-' or s[10] != b'T' or s[13] != b':' or s[16] != b':'
            or s[19] != b'.' or s[23] != b'Z' or s[24] != b'-' or s[29] != b'-'):
        return False
    cdef int year = _digits(s, 4), month = _digits(s + 5, 2), day = _digits(s + 8, 2)
    cdef int hour = _digits(s + 11, 2), minute = _digits(s + 14, 2)
    cdef int second = _digits(s + 17, 2), milli = _digits(s + 20, 3)
    if year < 1970 or not 1 <= month <= 12 or day < 1:
        return False
    if day > _DAYS_IN_MONTH[month - 1] + (1 if month == 2 and _is_leap(year) else 0):
        return False
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59 and milli >= 0):
        return False
    cdef uint64_t counter = 0, node_id = 0
    cdef int i, digit
    for i in range(4):
        digit = _hex_digit(s[25 + i])
        if digit < 0:
            return False
        counter = counter << 4 | <uint64_t>digit
    for i in range(16):
        digit = _hex_digit(s[30 + i])
        if digit < 0:
            return False
        node_id = node_id << 4 | <uint64_t>digit
    cdef int64_t prior = year - 1
    cdef int64_t days = prior * 365 + prior // 4 - prior // 100 + prior // 400 - 719162
    days += _DAYS_BEFORE_MONTH[month - 1] + (1 if month > 2 and _is_leap(year) else 0) + day - 1
    cdef int64_t physical = (days * 86400 + hour * 3600 + minute * 60 + second) * 1000 + milli
    packed[0] = <uint64_t>physical << 16 | counter
    node[0] = node_id
    return True


# --- Timestamp -------------------------------------------------------------------


@cython.final
@cython.freelist(256)
cdef class Timestamp:
    """An HLC timestamp: (physical ms, logical counter, node id); immutable.

    Totally ordered by (physical, logical, node); hashable; picklable.
    ``Timestamp(physical, logical=0, node=0)`` raises TypeError for a
    non-integer field and ValueError for one out of range.
    """

    # Invariant: _packed >> 16 < 2**48 by construction; _node is any 64-bit id.
    cdef uint64_t _packed
    cdef uint64_t _node

    def __init__(self, physical, logical=0, node=0):
        cdef uint64_t p = _field("physical", physical, PHYSICAL_MAX)
        cdef uint64_t c = _field("logical", logical, LOGICAL_MASK)
        self._node = _field("node", node, WORD_MAX)
        self._packed = p << 16 | c

    @property
    def physical(self):
        """Milliseconds since the Unix epoch (48 bits)."""
        return self._packed >> 16

    @property
    def logical(self):
        """The logical counter (16 bits)."""
        return self._packed & LOGICAL_MASK

    @property
    def node(self):
        """The id of the clock that issued this timestamp (64 bits)."""
        return self._node

    @property
    def packed(self):
        """The 64-bit time word ``physical << 16 | logical``."""
        return self._packed

    @classmethod
    def from_packed(cls, packed, node=0):
        """Build from a time word and a node id."""
        cdef uint64_t word = _field("packed", packed, WORD_MAX)
        return _make(word, _field("node", node, WORD_MAX))

    def to_bytes(self):
        """Return the 16-byte big-endian encoding; byte order is timestamp order."""
        cdef unsigned char buf[16]
        cdef int i
        for i in range(8):
            buf[i] = <unsigned char>(self._packed >> (56 - 8 * i))
            buf[8 + i] = <unsigned char>(self._node >> (56 - 8 * i))
        return PyBytes_FromStringAndSize(<char*>buf, 16)

    @classmethod
    def from_bytes(cls, data):
        """Decode the 16-byte encoding (bytes, bytearray or memoryview)."""
        cdef const unsigned char* s
        cdef uint64_t packed = 0, node = 0
        cdef int i
        if type(data) is not bytes or len(<bytes>data) != 16:
            return _from_twin(_py.Timestamp.from_bytes(data))
        s = <const unsigned char*><const char*>(<bytes>data)
        for i in range(8):
            packed = packed << 8 | s[i]
            node = node << 8 | s[8 + i]
        return _make(packed, node)

    def __str__(self):
        return _format_text(self._packed, self._node)

    @classmethod
    def parse(cls, text):
        """Parse the 46-character text form.

        For example ``2026-12-03T12:00:00.000Z-0001-00000000000000FF``.

        Raises ValueError saying what is malformed, TypeError for a non-str.
        """
        cdef Py_ssize_t size
        cdef const char* s
        cdef uint64_t packed, node
        if type(text) is str and PyUnicode_IS_ASCII(text):
            s = PyUnicode_AsUTF8AndSize(text, &size)
            if size == 46 and _parse_fast(s, &packed, &node):
                return _make(packed, node)
        return _from_twin(_py._parse_text(text))

    def to_datetime(self):
        """Return the physical part as an aware UTC datetime (counter and node dropped)."""
        return _py._to_datetime(self._packed >> 16)

    def __repr__(self):
        return (f"Timestamp(physical={self._packed >> 16}, "
                f"logical={self._packed & LOGICAL_MASK}, node={self._node})")

    def __hash__(self):
        cdef uint64_t mixed = (self._packed * HASH_MULTIPLIER) ^ self._node
        cdef Py_hash_t value = <Py_hash_t>mixed
        return -2 if value == -1 else value

    def __reduce__(self):
        return (Timestamp, (self._packed >> 16, self._packed & LOGICAL_MASK, self._node))

    def __richcmp__(self, other, int op):
        if type(other) is not Timestamp:
            return NotImplemented
        cdef Timestamp that = <Timestamp>other
        cdef int sign
        if self._packed != that._packed:
            sign = -1 if self._packed < that._packed else 1
        elif self._node != that._node:
            sign = -1 if self._node < that._node else 1
        else:
            sign = 0
        if op == 0:
            return sign < 0
        if op == 1:
            return sign <= 0
        if op == 2:
            return sign == 0
        if op == 3:
            return sign != 0
        if op == 4:
            return sign > 0
        return sign >= 0


cdef inline Timestamp _make(uint64_t packed, uint64_t node):
    cdef Timestamp ts = Timestamp.__new__(Timestamp)
    ts._packed = packed
    ts._node = node
    return ts


cdef Timestamp _from_twin(object twin):
    return _make(twin._packed, twin._node)


# --- Event ---------------------------------------------------------------------


cdef inline str _check_type(object event_type):
    if type(event_type) is not str:
        raise TypeError(f"type must be a str, not {type(event_type).__name__}")
    if not event_type:
        raise ValueError("type must be a non-empty str")
    return <str>event_type


@cython.final
@cython.freelist(256)
@cython.no_gc
cdef class Event:
    """An event: ``type`` (non-empty str), ``data`` (any object), ``timestamp``; immutable.

    An event's identity is its timestamp (a clock issues each timestamp
    once), so events compare and hash by timestamp alone.
    """

    # Not tracked by the cyclic GC: an ordered subscription holds a window's
    # worth of events (100,000 at 1M events/s and 100 ms), and tracking them
    # made every full collection walk them all (publish measured 918 ns with
    # the GC on, 560 ns with it off, one subscriber).  The cost: an event whose
    # data refers back to the event itself is never freed.

    cdef str _type
    cdef object _data
    cdef Timestamp _timestamp

    def __init__(self, type, data, timestamp):
        self._type = _check_type(type)
        self._timestamp = _check_timestamp("timestamp", timestamp)
        self._data = data

    @property
    def type(self):
        """The event type, e.g. ``"vsm.s1.update"``."""
        return self._type

    @property
    def data(self):
        """The payload."""
        return self._data

    @property
    def timestamp(self):
        """The HLC timestamp: the event's identity and its place in the order."""
        return self._timestamp

    def __richcmp__(self, other, int op):
        if type(other) is not Event or op not in (2, 3):
            return NotImplemented
        equal = self._timestamp == (<Event>other)._timestamp
        return equal if op == 2 else not equal

    def __hash__(self):
        return hash(self._timestamp)

    def __reduce__(self):
        return (Event, (self._type, self._data, self._timestamp))

    def __repr__(self):
        return f"Event({self._type!r}, {self._data!r}, {self._timestamp!r})"


def stamp(HLC clock not None, type, data):
    """Return ``Event(type, data, clock.now())``; the bus's publish path."""
    cdef Event event = Event.__new__(Event)
    event._type = _check_type(type)
    event._data = data
    event._timestamp = clock.now()
    return event


# --- ManualClock ----------------------------------------------------------------


@cython.final
@cython.auto_pickle(False)
cdef class ManualClock:
    """A wall clock for tests and simulations: ``clock()`` returns its milliseconds.

    ``set(ms)`` moves it anywhere in [0, 2**48); ``advance(delta_ms)`` moves it
    by a signed delta (negative: a backward jump).  Bad values raise and leave
    it unchanged.  Thread-safe.  An HLC reads it in C, without a Python call.
    """

    cdef int64_t _ms

    def __init__(self, start_ms=0):
        self._ms = <int64_t>_field("start_ms", start_ms, PHYSICAL_MAX)

    def __call__(self):
        return self._ms

    def set(self, ms):
        """Move the clock to ``ms``."""
        self._ms = <int64_t>_field("ms", ms, PHYSICAL_MAX)

    def advance(self, delta_ms):
        """Move the clock by ``delta_ms`` (may be negative) and return the new reading."""
        if type(delta_ms) is not int:
            if isinstance(delta_ms, bool) or not hasattr(type(delta_ms), "__index__"):
                raise TypeError(f"delta_ms must be an int, not {type(delta_ms).__name__}")
            delta_ms = operator.index(delta_ms)
        with cython.critical_section(self):
            target = self._ms + delta_ms
            if not 0 <= target <= PHYSICAL_MAX:
                raise ValueError(
                    f"delta_ms {delta_ms} moves the clock to {target}, outside [0, 2**48)"
                )
            self._ms = target
        return target

    def __repr__(self):
        return f"ManualClock({self._ms})"


# --- HLC -------------------------------------------------------------------------


@cython.final
@cython.auto_pickle(False)
cdef class HLC:
    """A hybrid logical clock (Kulkarni et al. 2014) over one packed 64-bit word.

    ``now()`` issues a timestamp for a local or send event,
    ``update(remote)`` for a receive event; each result is strictly greater
    than every timestamp this clock issued before.  Thread-safe.

    Guarantees:
    - The word never decreases, whatever the wall clock does; wall jumps are
      only counted (``backward_jumps``, ``forward_jumps``).
    - A failed call (drift, overflow, a bad wall reading) changes nothing.
    """

    # Guarded by critical_section(self): _word, _last_wall, _last_mono and the
    # jump counters; a tick reads the wall and then reads and writes them all.
    cdef uint64_t _word
    cdef uint64_t _node
    cdef object _wall  # None (system clock), or the user's callable
    cdef ManualClock _manual  # the wall when it is a ManualClock: read in C
    cdef object _wall_lock  # a threading.Lock when the wall is Python code, else None
    cdef int64_t _max_drift_ms  # -1: no limit
    cdef bint _raise_on_overflow
    cdef int64_t _last_wall  # -1: no reading yet, so no jump to count
    cdef int64_t _last_mono
    cdef uint64_t _backward_jumps
    cdef uint64_t _forward_jumps

    def __init__(self, node=None, *, wall=None, max_drift_ms=60_000, overflow="carry"):
        self._node = secrets.randbits(64) if node is None else _field("node", node, WORD_MAX)
        if wall is not None and not callable(wall):
            raise TypeError(f"wall must be a callable or None, not {type(wall).__name__}")
        self._max_drift_ms = -1
        if max_drift_ms is not None:
            self._max_drift_ms = <int64_t>_field("max_drift_ms", max_drift_ms, PHYSICAL_MAX)
        if overflow not in ("carry", "raise"):
            raise ValueError(f"overflow must be 'carry' or 'raise', got {overflow!r}")
        self._wall = wall
        self._manual = wall if type(wall) is ManualClock else None
        # A Python wall lets other threads run in the middle of a tick (between
        # its bytecodes on a GIL build, where critical_section is a no-op; while
        # it blocks on a free-threaded one, which suspends the section), so the
        # ticks that call it also hold a real lock.  Readings are then committed
        # in the order they were taken, as in _core_py, and no jump is miscounted.
        self._wall_lock = (threading.Lock() if wall is not None and self._manual is None
                           else None)
        self._raise_on_overflow = overflow == "raise"
        self._word = 0
        self._last_wall = -1
        self._last_mono = 0

    @property
    def node(self):
        """This clock's 64-bit node id."""
        return self._node

    @property
    def max_drift_ms(self):
        """How far ahead of the wall clock a remote timestamp may be; None: no limit."""
        return None if self._max_drift_ms < 0 else self._max_drift_ms

    @property
    def overflow(self):
        """The counter overflow policy: 'carry' or 'raise'."""
        return "raise" if self._raise_on_overflow else "carry"

    @property
    def last(self):
        """The last timestamp issued (physical 0 before the first), without ticking."""
        return _make(self._word, self._node)

    @property
    def backward_jumps(self):
        """How many wall readings were below the previous reading."""
        return self._backward_jumps

    @property
    def forward_jumps(self):
        """How many wall readings ran ahead of the monotonic clock by over FORWARD_JUMP_MS."""
        return self._forward_jumps

    def wall_ms(self):
        """Read the wall clock (validated) without ticking."""
        return self._read_wall()

    def now(self):
        """Issue a timestamp for a local or send event: ``T = max(T + 1, pt << 16)``.

        Raises ClockOverflowError (clock unchanged) when the counter is full
        under ``overflow="raise"`` or the 48-bit range is exhausted.
        """
        cdef uint64_t word
        if self._wall_lock is None:
            word = self._tick()
        else:
            with self._wall_lock:
                word = self._tick()
        return _make(word, self._node)

    def now_many(self, n):
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
        cdef uint64_t first
        n = _py._count("n", n)
        import numpy

        # Allocated before the lock: a failed allocation leaves the clock alone.
        # Once it succeeds, n is far below 2**63, so the conversion below is exact.
        words = numpy.arange(n, dtype=numpy.uint64)
        if n:
            if self._wall_lock is None:
                first = self._reserve(<uint64_t>n)
            else:
                with self._wall_lock:
                    first = self._reserve(<uint64_t>n)
            words += numpy.uint64(first)
        return words

    def update(self, remote, /):
        """Merge a received timestamp: ``T = max(T + 1, remote.T + 1, pt << 16)``.

        The result is greater than ``remote`` and than every timestamp issued
        before.  Raises ClockDriftError when ``remote.physical`` is more than
        ``max_drift_ms`` ahead of the wall clock, TypeError for a
        non-Timestamp; the clock is unchanged in either case.
        """
        cdef Timestamp other = _check_timestamp("remote", remote)
        cdef uint64_t word
        if self._wall_lock is None:
            word = self._merge(other)
        else:
            with self._wall_lock:
                word = self._merge(other)
        return _make(word, self._node)

    cdef uint64_t _tick(self) except 0:
        """Commit a local tick and return the new word."""
        with cython.critical_section(self):
            return self._advance(self._read_wall(), self._word)

    cdef uint64_t _merge(self, Timestamp other) except 0:
        """Check ``other`` for drift, commit a receive tick and return the new word."""
        cdef int64_t pt
        with cython.critical_section(self):
            pt = self._read_wall()
            if (self._max_drift_ms >= 0
                    and <int64_t>(other._packed >> 16) - pt > self._max_drift_ms):
                raise ClockDriftError(other, pt, self._max_drift_ms)
            return self._advance(pt, self._word if self._word > other._packed else other._packed)

    cdef int64_t _read_wall(self) except -1:
        if self._manual is not None:
            return self._manual._ms
        if self._wall is None:
            return hlcbus_realtime_ms()
        return self._read_callable()

    cdef int64_t _read_callable(self) except -1:
        reading = self._wall()
        if type(reading) is not int:
            if isinstance(reading, bool) or not hasattr(type(reading), "__index__"):
                raise TypeError(f"wall() must return an int, not {type(reading).__name__}")
            reading = operator.index(reading)
        if not 0 <= reading <= PHYSICAL_MAX:
            raise ValueError(f"wall() returned {reading}, outside [0, 2**48)")
        return <int64_t>reading

    cdef uint64_t _advance(self, int64_t pt, uint64_t base) except 0:
        """Commit ``max(base + 1, pt << 16)``; the caller holds the critical section."""
        if base == WORD_MAX:
            raise ClockOverflowError("the clock has reached the end of its 48-bit range")
        cdef uint64_t floor = <uint64_t>pt << 16
        cdef uint64_t word = base + 1 if base + 1 > floor else floor
        if word != floor and (word & LOGICAL_MASK) == 0 and self._raise_on_overflow:
            raise ClockOverflowError(
                f"the logical counter is full at physical {(word >> 16) - 1} ms "
                "and overflow='raise'"
            )
        self._count_jump(pt)
        self._word = word
        return word

    cdef uint64_t _reserve(self, uint64_t n) except 0:
        """Commit ``n`` (>= 1) words from ``max(T + 1, pt << 16)``; return the first."""
        cdef int64_t pt
        cdef uint64_t floor, first, last, full
        cdef bint is_full
        with cython.critical_section(self):
            pt = self._read_wall()
            if self._word == WORD_MAX:
                raise ClockOverflowError("the clock has reached the end of its 48-bit range")
            floor = <uint64_t>pt << 16
            first = self._word + 1 if self._word + 1 > floor else floor
            if n - 1 > WORD_MAX - first:
                raise ClockOverflowError("the clock has reached the end of its 48-bit range")
            last = first + (n - 1)
            if self._raise_on_overflow:
                is_full = True
                if first != floor and (first & LOGICAL_MASK) == 0:
                    full = (first >> 16) - 1
                elif (last >> 16) != (first >> 16):
                    full = first >> 16
                else:
                    is_full = False
                if is_full:
                    raise ClockOverflowError(
                        f"the logical counter is full at physical {full} ms "
                        "and overflow='raise'"
                    )
            self._count_jump(pt)
            self._word = last
            return first

    cdef inline void _count_jump(self, int64_t pt) noexcept:
        cdef int64_t mono = hlcbus_monotonic_ms()
        if self._last_wall >= 0:
            if pt < self._last_wall:
                self._backward_jumps += 1
            elif (pt - self._last_wall) - (mono - self._last_mono) > FORWARD_JUMP_MS:
                self._forward_jumps += 1
        self._last_wall = pt
        self._last_mono = mono

    def __repr__(self):
        return f"HLC(node={self._node:#018x}, last={self.last!r})"


# --- PriorityBuffer -------------------------------------------------------------


ctypedef struct Entry:
    uint64_t packed
    uint64_t node
    uint64_t seq  # insertion order: ties pop first-in first-out
    Py_ssize_t slot  # where the entry's (ts, item) pair is in _pairs


cdef inline bint _less(const Entry* a, const Entry* b) noexcept nogil:
    if a.packed != b.packed:
        return a.packed < b.packed
    if a.node != b.node:
        return a.node < b.node
    return a.seq < b.seq


@cython.final
@cython.auto_pickle(False)
@cython.no_gc_clear  # the collector clears _pairs itself (a list) to break cycles
@cython.boundscheck(True)  # on _pairs only: a list the collector cleared raises, never crashes
cdef class PriorityBuffer:
    """A min-heap of (Timestamp, item) entries keyed by (physical, logical, node).

    Equal keys pop in insertion order.  push and pop cost O(log n);
    ``pop_until`` costs O(k log n) for k entries popped.  Each call is atomic
    with respect to other threads.
    """

    # Invariant: _heap[0:_size] is a binary min-heap under _less; entry e's
    # (ts, item) pair is _pairs[e.slot] (inside a ReorderBuffer: the event, which
    # carries ts); every other slot of _pairs holds None
    # and its index is on the stack _free[0:_nfree]; _size <= _capacity and
    # len(_pairs) <= _capacity.
    # The pairs live in a Python list rather than as PyObject* in the C array
    # so that the garbage collector sees them: a cycle through an item
    # (item -> ... -> this buffer) is then collected, as with _core_py's list.
    cdef Entry* _heap
    cdef Py_ssize_t* _free
    cdef Py_ssize_t _size
    cdef Py_ssize_t _nfree
    cdef Py_ssize_t _capacity
    cdef uint64_t _seq
    cdef list _pairs

    def __cinit__(self):
        self._pairs = []

    def __dealloc__(self):
        PyMem_Free(self._heap)
        PyMem_Free(self._free)

    cdef int _grow(self) except -1:
        cdef Py_ssize_t capacity = self._capacity * 2 if self._capacity else 16
        cdef Entry* heap = <Entry*>PyMem_Realloc(self._heap, capacity * sizeof(Entry))
        if heap is NULL:
            raise MemoryError("PriorityBuffer cannot grow")
        self._heap = heap
        cdef Py_ssize_t* free_slots = <Py_ssize_t*>PyMem_Realloc(
            self._free, capacity * sizeof(Py_ssize_t))
        if free_slots is NULL:
            raise MemoryError("PriorityBuffer cannot grow")
        self._free = free_slots
        self._capacity = capacity
        return 0

    # The two sift routines are those of CPython's heapq: _sift_up walks the
    # hole at ``pos`` down to a leaf along smaller children, then _sift_down
    # bubbles the moved entry back up; fewer comparisons than a classic sift.
    cdef void _sift_down(self, Py_ssize_t start, Py_ssize_t pos) noexcept nogil:
        cdef Entry moving = self._heap[pos]
        cdef Py_ssize_t parent
        while pos > start:
            parent = (pos - 1) >> 1
            if not _less(&moving, &self._heap[parent]):
                break
            self._heap[pos] = self._heap[parent]
            pos = parent
        self._heap[pos] = moving

    cdef void _sift_up(self, Py_ssize_t pos) noexcept nogil:
        cdef Py_ssize_t end = self._size, start = pos, child = 2 * pos + 1
        cdef Entry moving = self._heap[pos]
        while child < end:
            if child + 1 < end and not _less(&self._heap[child], &self._heap[child + 1]):
                child += 1
            self._heap[pos] = self._heap[child]
            pos = child
            child = 2 * pos + 1
        self._heap[pos] = moving
        self._sift_down(start, pos)

    cdef object _take_min(self):
        """Remove the root and return its slot's object; the caller holds the critical section."""
        cdef Entry top = self._heap[0]
        cdef object pair = self._pairs[top.slot]
        # The caller's reference keeps the pair alive: no finalizer runs here.
        self._pairs[top.slot] = None
        self._free[self._nfree] = top.slot
        self._nfree += 1
        self._size -= 1
        if self._size:
            self._heap[0] = self._heap[self._size]
            self._sift_up(0)
        return pair

    cdef int _push(self, Timestamp key, object pair) except -1:
        """Add an entry under ``key`` whose slot holds ``pair``.

        PriorityBuffer's own slots hold (key, item) tuples; a ReorderBuffer's
        hold the event alone, which carries its key.  The caller holds the
        critical section.
        """
        cdef Py_ssize_t slot
        cdef Entry* entry
        if self._size == self._capacity:
            self._grow()
        if self._nfree:
            slot = self._free[self._nfree - 1]
            self._pairs[slot] = pair
            self._nfree -= 1
        else:  # every slot is in use, so len(_pairs) == _size < _capacity
            slot = len(self._pairs)
            self._pairs.append(pair)
        entry = &self._heap[self._size]
        entry.packed = key._packed
        entry.node = key._node
        entry.seq = self._seq
        entry.slot = slot
        self._seq += 1
        self._size += 1
        self._sift_down(0, self._size - 1)
        return 0

    def push(self, ts, item, /):
        """Add ``item`` under key ``ts``."""
        cdef Timestamp key = _check_timestamp("ts", ts)
        # Built before the section: an allocation may run the collector, and so finalizers.
        cdef tuple pair = (key, item)
        with cython.critical_section(self):
            self._push(key, pair)

    def pop(self):
        """Remove and return the entry with the smallest key; IndexError when empty."""
        with cython.critical_section(self):
            if not self._size:
                raise IndexError("pop from an empty PriorityBuffer")
            return self._take_min()

    def peek(self):
        """Return the entry with the smallest key without removing it; IndexError when empty."""
        with cython.critical_section(self):
            if not self._size:
                raise IndexError("peek at an empty PriorityBuffer")
            return self._pairs[self._heap[0].slot]

    def pop_until(self, ts, /):
        """Remove and return, in key order, every entry whose key is <= ``ts``."""
        cdef Timestamp bound = _check_timestamp("ts", ts)
        cdef list released = []
        with cython.critical_section(self):
            while self._size and (
                    self._heap[0].packed < bound._packed
                    or (self._heap[0].packed == bound._packed
                        and self._heap[0].node <= bound._node)):
                released.append(self._take_min())
        return released

    def clear(self):
        """Remove every entry."""
        cdef list fresh = [], dropped
        with cython.critical_section(self):
            dropped, self._pairs = self._pairs, fresh
            PyMem_Free(self._heap)
            PyMem_Free(self._free)
            self._heap, self._free = NULL, NULL
            self._size = self._nfree = self._capacity = 0
        # Dropped outside the section: a finalizer run by the release may use this buffer.
        del dropped

    def __len__(self):
        return self._size

    def __bool__(self):
        return self._size != 0

    def __repr__(self):
        return f"<PriorityBuffer of {self._size} entries>"


# --- ReorderBuffer ----------------------------------------------------------------


ctypedef struct Key:
    uint64_t packed
    uint64_t node


cdef inline bint _key_le(uint64_t packed, uint64_t node, uint64_t bound_packed,
                         uint64_t bound_node) noexcept nogil:
    return packed < bound_packed or (packed == bound_packed and node <= bound_node)


@cython.final
@cython.auto_pickle(False)
cdef class ReorderBuffer:
    """Put events back in timestamp order and release each once, in increasing order.

    The ordered-delivery state of one subscription: a PriorityBuffer of
    events, the last key released, and a log of released keys for telling a
    duplicate from a late event.  Not thread-safe beyond each call being
    atomic: one worker owns it.  ``absorb`` costs O(log n) per event,
    ``release`` O(log n) per event released.
    """

    # Invariants: every buffered key is above _last (when _has_last);
    # _log[_head:_log_size] holds released keys in increasing order.
    cdef PriorityBuffer _heap
    cdef Key _last
    cdef bint _has_last
    cdef Key _high
    cdef bint _has_high
    cdef Key* _log
    cdef Py_ssize_t _head
    cdef Py_ssize_t _log_size
    cdef Py_ssize_t _log_capacity
    cdef uint64_t _reordered
    cdef uint64_t _duplicates

    def __cinit__(self):
        self._heap = PriorityBuffer()

    def __dealloc__(self):
        PyMem_Free(self._log)

    @property
    def reordered(self):
        """Events absorbed behind a higher key (put back in order)."""
        return self._reordered

    @property
    def duplicates(self):
        """Events dropped because their key was buffered or released already."""
        return self._duplicates

    @property
    def last_released(self):
        """The key of the last event released, or None."""
        return _make(self._last.packed, self._last.node) if self._has_last else None

    def peek(self):
        """The smallest buffered key, or None when empty."""
        with cython.critical_section(self):
            if not self._heap._size:
                return None
            return _make(self._heap._heap[0].packed, self._heap._heap[0].node)

    def absorb(self, inbox, Py_ssize_t count, /):
        """Take ``count`` events from ``inbox.popleft()``; return the late ones.

        An event at or below the last released key is a duplicate (its key
        is in the release log: counted and dropped) or late (returned, never
        buffered).  Any other event is buffered.
        """
        popleft = inbox.popleft
        cdef list late = []
        cdef Event event
        cdef Timestamp ts
        cdef Py_ssize_t _
        with cython.critical_section(self):
            for _ in range(count):
                item = popleft()
                if type(item) is not Event:
                    raise TypeError(f"absorb takes Events, not {type(item).__name__}")
                event = <Event>item
                ts = event._timestamp
                if self._has_last and _key_le(ts._packed, ts._node,
                                              self._last.packed, self._last.node):
                    if self._logged(ts._packed, ts._node):
                        self._duplicates += 1
                    else:
                        late.append(event)
                    continue
                if not self._has_high or not _key_le(ts._packed, ts._node,
                                                     self._high.packed, self._high.node):
                    self._high.packed, self._high.node = ts._packed, ts._node
                    self._has_high = True
                elif ts._packed != self._high.packed or ts._node != self._high.node:
                    self._reordered += 1
                self._heap._push(ts, event)
        return late

    cdef bint _logged(self, uint64_t packed, uint64_t node) noexcept nogil:
        cdef Py_ssize_t low = self._head, high = self._log_size, mid
        while low < high:  # bisect_left over the live part of the log
            mid = (low + high) >> 1
            if _key_le(packed, node, self._log[mid].packed, self._log[mid].node):
                high = mid
            else:
                low = mid + 1
        return (low < self._log_size and self._log[low].packed == packed
                and self._log[low].node == node)

    cdef int _log_key(self, uint64_t packed, uint64_t node) except -1:
        cdef Py_ssize_t capacity
        cdef Key* grown
        if self._log_size == self._log_capacity:
            if self._head and self._head * 2 >= self._log_size:  # compact rather than grow
                memmove(self._log, self._log + self._head,
                        (self._log_size - self._head) * sizeof(Key))
                self._log_size -= self._head
                self._head = 0
            else:
                capacity = self._log_capacity * 2 if self._log_capacity else 1024
                grown = <Key*>PyMem_Realloc(self._log, capacity * sizeof(Key))
                if grown is NULL:
                    raise MemoryError("ReorderBuffer cannot grow its release log")
                self._log, self._log_capacity = grown, capacity
        self._log[self._log_size].packed = packed
        self._log[self._log_size].node = node
        self._log_size += 1
        return 0

    def release(self, bound, /):
        """Remove and return, in order, the events with key <= ``bound``.

        A second event with the key just released is a duplicate: counted, dropped.
        """
        cdef Timestamp limit = _check_timestamp("bound", bound)
        cdef list released = []
        cdef PriorityBuffer heap = self._heap
        cdef Entry* top
        with cython.critical_section(self):
            while heap._size and _key_le(heap._heap[0].packed, heap._heap[0].node,
                                         limit._packed, limit._node):
                top = &heap._heap[0]
                if (self._has_last and top.packed == self._last.packed
                        and top.node == self._last.node):
                    heap._take_min()
                    self._duplicates += 1
                    continue
                self._log_key(top.packed, top.node)
                self._last.packed, self._last.node = top.packed, top.node
                self._has_last = True
                released.append(heap._take_min())
        return released

    def release_all(self):
        """Release every buffered event, in order."""
        return self.release(_make(WORD_MAX, WORD_MAX))

    def expire(self, before_physical):
        """Forget released keys with physical below ``before_physical``."""
        if before_physical <= 0:
            return
        if before_physical > PHYSICAL_MAX:  # the shift below would overflow: forget all
            with cython.critical_section(self):
                self._head = self._log_size
            return
        cdef uint64_t bound = <uint64_t>before_physical << 16
        with cython.critical_section(self):
            while self._head < self._log_size and self._log[self._head].packed < bound:
                self._head += 1

    def evict(self, Py_ssize_t count):
        """Drop up to ``count`` of the smallest buffered events; return how many."""
        cdef Py_ssize_t dropped = 0
        with cython.critical_section(self):
            while dropped < count and self._heap._size:
                self._heap._take_min()
                dropped += 1
        return dropped

    def clear(self):
        """Drop every buffered event; return how many."""
        cdef Py_ssize_t count = self._heap._size
        self._heap.clear()
        return count

    def __len__(self):
        return self._heap._size

    def __bool__(self):
        return self._heap._size != 0

    def __repr__(self):
        return f"<ReorderBuffer of {self._heap._size} events>"
