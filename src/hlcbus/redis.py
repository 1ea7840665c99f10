"""RedisBridge: share a bus's events with other processes through a Redis stream.

Outgoing, the bridge is a batch subscription on the local bus: its worker
appends the events this node published to the stream with pipelined XADDs.
Incoming, a reader thread reads the stream through a consumer group of its
own (one group per node, so every node sees every entry), verifies and
decodes each entry and hands it to ``bus.receive``, which merges the clock,
drops duplicates and feeds the ordered buffers.  An entry is acknowledged
only once the bus has taken it (or rejected it for good), and a starting
reader first re-reads the entries it read but never acknowledged.

Needs redis-py (``pip install "hlcbus[redis]"``); the wire format is in
``_wire.py``.  See README "Across processes and machines".
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry

from hlcbus import _wire, telemetry
from hlcbus.bus import EventBus, _check_int, _check_pattern
from hlcbus.delivery import Subscription
from hlcbus.errors import BufferFull, BusClosed, ClockDriftError, HLCBusError

__all__ = ["DOWN_POLICIES", "EntryRejected", "RedisBridge", "RedisBridgeStats"]

EntryRejected = _wire.EntryRejected
log = logging.getLogger("hlcbus.redis")

DOWN_POLICIES = ("buffer", "raise")
DEFAULT_PENDING = {"buffer": 100_000, "raise": 1_000}
DEFAULT_TTL_MS = 60_000  # stream retention when the bus keeps no store
RETRY_MIN = 0.05  # seconds: first back-off after a failed command; it doubles ...
RETRY_MAX = 2.0  # ... up to this
DEAD_LETTER_MAXLEN = 10_000  # approximate cap of the dead-letter stream
# Why entries were not delivered.  "trimmed": a pending entry the stream had
# already trimmed when it was re-read (nothing is left to deliver or keep).
REJECT_REASONS = ("malformed", "content_type", "unsigned", "bad_signature", "drift", "trimmed")
# _take's answers besides a rejection reason.  KEEP: leave the entry
# unacknowledged, for a later read.
DELIVERED, DUPLICATE, OWN, KEEP = "delivered", "duplicate", "own", "keep"
# The client a URL makes: the bridge retries on its own, with back-off, so one
# quick retry (a pooled connection that Redis closed) is all redis-py should do.
URL_CLIENT_OPTIONS = {"socket_connect_timeout": 2.0, "socket_timeout": 10.0}
CONNECTION_ERRORS = (redis_py.ConnectionError, redis_py.TimeoutError)

# Telemetry events of the bridge, beside the bus's (see hlcbus.telemetry).
STATS = ("hlcbus", "redis", "stats")
REJECTED = ("hlcbus", "redis", "rejected")
DISCONNECTED = ("hlcbus", "redis", "disconnected")
RECONNECTED = ("hlcbus", "redis", "reconnected")
SEND_FAILED = ("hlcbus", "redis", "send_failed")


@dataclass(frozen=True)
class RedisBridgeStats:
    """Counters of one bridge; see README "Across processes and machines".

    Outgoing: every event the bridge's subscription took is ``sent``,
    ``encode_errors``, ``unsent`` (given up at close) or still ``pending_out``;
    ``refused`` publishes never reached the bridge (its buffer was full).
    Incoming: every entry ``read`` is ``delivered``, a ``duplicate``, one of
    this node's own (``own``), ``rejected`` (by reason, each dead-lettered) or
    still being handled.
    """

    sent: int
    encode_errors: int
    unsent: int
    pending_out: int
    refused: int
    send_failures: int
    read: int
    delivered: int
    duplicates: int
    own: int
    rejected: dict[str, int]
    dead_lettered: int
    acked: int
    reconnects: int
    connected: bool


class RedisBridge:
    """Bridge ``bus`` to the Redis stream ``stream``; see the module docstring.

    ``redis`` is a ``redis.Redis`` client (``decode_responses`` off) or a URL.
    ``pattern`` selects the local event types sent out.  ``codec`` is
    ``"json"`` (the default), ``"pickle"`` (only between trusted writers:
    unpickling runs code) or an object with ``content_type``, ``encode`` and
    ``decode``.  With ``secret`` every entry is signed and unsigned or
    tampered entries are rejected.  ``on_down`` is what publishing does while
    Redis is unreachable: ``"buffer"`` keeps up to ``max_pending`` events and
    retries (publish raises BufferFull once they are all taken), ``"raise"``
    keeps fewer and then makes publishers wait up to the bus's
    ``publish_timeout`` before raising BufferFull.  Entries older than
    ``ttl_ms`` (default: the bus store's TTL) are trimmed from the stream.
    ``consume=False`` makes a send-only bridge: no consumer group, no reader.
    Bad arguments raise TypeError/ValueError here.
    """

    def __init__(self, bus: EventBus, redis: Union[redis_py.Redis, str], *,
                 stream: str = "hlcbus", pattern: str = "*", codec: Any = "json",
                 secret: Union[str, bytes, None] = None, on_down: str = "buffer",
                 max_pending: Optional[int] = None, batch_size: int = 256,
                 ttl_ms: Optional[int] = None, dead_letter: Optional[str] = None,
                 group: Optional[str] = None, block_ms: int = 100,
                 consume: bool = True) -> None:
        if not isinstance(bus, EventBus):
            raise TypeError(f"bus must be an hlcbus.EventBus, not {type(bus).__name__}")
        self._client, self._owns_client = _client(redis)
        for name, value in (("stream", stream), ("dead_letter", dead_letter), ("group", group)):
            if value is not None and (type(value) is not str or not value):
                raise TypeError(f"{name} must be a non-empty str")
        _check_pattern(pattern)
        self._codec = _wire.codec_named(codec)
        # JSON is always safe to read; any other codec only when this bridge uses it.
        self._codecs = {_wire.JSON_TYPE: _wire.JsonCodec(),
                        self._codec.content_type: self._codec}
        self._key = _wire.secret_key(secret)
        if on_down not in DOWN_POLICIES:
            raise ValueError(f"on_down must be one of {', '.join(DOWN_POLICIES)}; got {on_down!r}")
        if max_pending is not None:
            _check_int("max_pending", max_pending, 1)
        _check_int("batch_size", batch_size, 1)
        if ttl_ms is not None:
            _check_int("ttl_ms", ttl_ms, 0)
        _check_int("block_ms", block_ms, 1)
        if type(consume) is not bool:
            raise TypeError(f"consume must be a bool, not {type(consume).__name__}")
        self.consume = consume
        self.bus = bus
        self.stream = stream
        self.pattern = pattern
        self.on_down = on_down
        self.max_pending = max_pending or DEFAULT_PENDING[on_down]
        # The batch being sent has left the subscription's count: cap it, so that
        # at most twice max_pending events wait while Redis is down.
        self.batch_size = min(batch_size, self.max_pending)
        store = bus._store
        self.ttl_ms = ttl_ms if ttl_ms is not None else (
            store.ttl_ms if store is not None else DEFAULT_TTL_MS)
        self.dead_letter = dead_letter or f"{stream}:dead"
        self.node = bus.clock.node
        self.group = group or f"hlcbus:{self.node:016X}"
        self.consumer = self.group  # one consumer per group: its pending list is ours
        self._block_ms = block_ms
        self._sub: Optional[Subscription] = None
        self._reader: Optional[threading.Thread] = None
        self._stop = threading.Event()  # set by close(): the reader and retries end
        self._give_up_at: Optional[float] = None  # close's deadline for unsent events
        # Redis's clock (ms, from our last entry id) and time.monotonic() then; worker-owned.
        self._redis_time: Optional[tuple[int, float]] = None
        # Guards the counters that both threads change and _started/_closed.
        self._lock = threading.Lock()
        self._started = self._closed = False
        self._sent = self._encode_errors = self._unsent = self._send_failures = 0
        self._read = self._delivered = self._duplicates = self._own = 0
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)
        self._dead_lettered = self._acked = self._reconnects = 0
        self._connected = True
        self._stats_due = time.monotonic() + telemetry.STATS_INTERVAL
        self._reject_log = telemetry.RateLimitedLog(f"hlcbus RedisBridge {stream!r}: rejections")

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> RedisBridge:
        """Create this node's consumer group if needed, then start sending and reading.

        Raises redis.ConnectionError if Redis cannot be reached now, and
        HLCBusError if the bridge was started or closed already.
        """
        with self._lock:
            if self._started or self._closed:
                raise HLCBusError("a RedisBridge starts once")
            self._started = True
        try:
            if self.consume:
                self._create_group()
            self._sub = self.bus.subscribe(
                self.pattern, self._send_batch, batch_size=self.batch_size,
                maxsize=self.max_pending,
                overflow="block" if self.on_down == "raise" else "error",
                name=f"redis:{self.stream}")
        except BaseException:
            with self._lock:
                self._started = False  # nothing started: the caller may try again
            raise
        if self.consume:
            self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                            name=f"hlcbus-redis-reader-{self.stream}")
            self._reader.start()
        return self

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is pending (for up to ``timeout`` s), stop reading; True if all was sent.

        Events still unsent at the deadline are counted in ``stats.unsent``
        and logged.  Entries read but not yet taken by the bus stay pending
        in Redis, for the next start with this node id.  Safe to call again.
        """
        with self._lock:
            if self._closed:
                return self._unsent == 0
            self._closed = True
        self._give_up_at = time.monotonic() + timeout
        if self._sub is not None:
            self._sub.close(drain=True)
        self._stop.set()
        if self._reader is not None:
            self._reader.join()
        if self._owns_client:
            self._client.close()
        if self._unsent:
            log.error("hlcbus RedisBridge %r: %d events not sent before close", self.stream,
                      self._unsent)
        return self._unsent == 0

    def __enter__(self) -> RedisBridge:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- outgoing: the subscription's batch handler --------------------------------

    def _send_batch(self, events: list[Any]) -> None:
        """XADD this node's events of ``events`` in one pipeline, retrying while Redis is down.

        Runs on the bridge subscription's worker.  Never raises: a failure is
        retried with back-off until it succeeds or close's deadline passes.
        """
        entries = self._encode(events)
        if not entries:
            return
        delay = RETRY_MIN
        while True:
            try:
                self._xadd(entries)
            except CONNECTION_ERRORS as exc:
                self._count_send_failure(len(entries), exc)
            else:
                with self._lock:
                    self._sent += len(entries)
                self._mark_connected()
                return
            if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                with self._lock:
                    self._unsent += len(entries)
                return
            # While closing, retry up to the deadline; otherwise until Redis returns.
            wait = delay if self._give_up_at is None else min(
                delay, max(0.0, self._give_up_at - time.monotonic()))
            time.sleep(wait)
            delay = min(delay * 2, RETRY_MAX)

    def _encode(self, events: list[Any]) -> list[dict[bytes, bytes]]:
        node, codec, key = self.node, self._codec, self._key
        entries = []
        for event in events:
            if event.timestamp.node != node:
                continue  # received from elsewhere: its own node sent it
            try:
                entries.append(_wire.encode_entry(event, codec, key))
            except Exception as exc:  # noqa: BLE001 - the codec's error: counted, logged
                with self._lock:
                    self._encode_errors += 1
                log.error("hlcbus RedisBridge %r: cannot encode %r: %r", self.stream, event, exc)
        return entries

    def _xadd(self, entries: list[dict[bytes, bytes]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        last, minid = len(entries) - 1, self._trim_below()
        for i, fields in enumerate(entries):
            # Trimming once per batch is enough; "~" lets Redis drop whole nodes only.
            pipe.xadd(self.stream, fields, minid=minid if i == last else None,  # type: ignore[arg-type]
                      approximate=True)
        ids = pipe.execute()
        self._redis_time = (int(ids[-1].split(b"-")[0]), time.monotonic())

    def _trim_below(self) -> Optional[str]:
        """The MINID that drops entries older than the TTL, in Redis's clock, or None.

        Entry ids are Redis's clock in ms.  This node's wall clock may be
        skewed against it (by up to max drift, and a minute is a TTL), so the
        cutoff is Redis's time at our last XADD plus the monotonic time since.
        """
        if not self.ttl_ms or self._redis_time is None:
            return None
        redis_ms, at = self._redis_time
        now_ms = redis_ms + int((time.monotonic() - at) * 1000)
        return f"{max(0, now_ms - self.ttl_ms)}-0"

    def _count_send_failure(self, count: int, exc: BaseException) -> None:
        with self._lock:
            self._send_failures += 1
        telemetry.execute(SEND_FAILED, {"events": count},
                          {"stream": self.stream, "exception": exc})
        self._mark_disconnected(exc)

    # --- incoming: the reader thread --------------------------------------------------

    def _read_loop(self) -> None:
        delay, backlog = RETRY_MIN, True
        while not self._stop.is_set():
            try:
                if backlog:  # our pending entries first: read before, never acknowledged
                    self._read_backlog()
                    backlog = False
                self._read_new()
            except CONNECTION_ERRORS as exc:
                self._mark_disconnected(exc)
                backlog = True
            except redis_py.ResponseError as exc:
                backlog = True
                if "NOGROUP" in str(exc):
                    # The stream or group is gone (deleted, or Redis restarted without
                    # persistence): what was in it is gone too; start again from now.
                    log.warning("hlcbus RedisBridge %r: consumer group lost; recreating it",
                                self.stream)
                    self._create_group_quietly()
                else:
                    log.error("hlcbus RedisBridge %r: %r; retrying", self.stream, exc)
            else:
                delay = RETRY_MIN
                self._emit_stats_if_due()
                continue
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _read_backlog(self) -> None:
        while not self._stop.is_set():
            reply = self._client.xreadgroup(self.group, self.consumer, {self.stream: "0"},
                                            count=self.batch_size)
            entries = _entries_of(reply)
            if not entries:
                return
            self._handle(entries)

    def _read_new(self) -> None:
        reply = self._client.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                        count=self.batch_size, block=self._block_ms)
        self._mark_connected()
        entries = _entries_of(reply)
        if entries:
            self._handle(entries)

    def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Hand each entry to the bus, then acknowledge (and dead-letter) them in one step."""
        acks: list[bytes] = []
        dead: list[dict[bytes, bytes]] = []
        delivered = duplicates = own = 0  # counted per batch: one lock, not one per entry
        for entry_id, fields in entries:
            outcome = self._take(fields) if not self._stop.is_set() else KEEP
            if outcome is DELIVERED:
                delivered += 1
            elif outcome is OWN:
                own += 1
            elif outcome is DUPLICATE:
                duplicates += 1
            elif outcome is KEEP:
                break  # unacknowledged: re-read on the next start
            elif fields:  # rejected (and counted): kept in the dead-letter stream
                dead.append(_dead_entry(entry_id, fields, outcome, self.group))
            acks.append(entry_id)
        with self._lock:  # only those with an outcome: the rest is read again later
            self._read += len(acks)
            self._delivered += delivered
            self._duplicates += duplicates
            self._own += own
        self._acknowledge(acks, dead)

    def _take(self, fields: Optional[dict[bytes, bytes]]) -> str:
        """Deliver one entry to the bus; return DELIVERED, DUPLICATE, OWN, KEEP or a reason."""
        if not fields:  # a pending entry trimmed from the stream before we re-read it
            return self._reject("trimmed", "a pending entry was trimmed before delivery")
        try:
            _wire.verify(fields, self._key)
            ts = _wire.timestamp_of(fields)
            if ts.node == self.node:
                return OWN
            event = _wire.decode_event(fields, ts, self._codecs)
        except EntryRejected as exc:
            return self._reject(exc.reason, str(exc))
        return self._receive(event)

    def _receive(self, event: Any) -> str:
        while True:
            try:
                taken = self.bus.receive(event)
            except ClockDriftError as exc:
                return self._reject("drift", str(exc))
            except BusClosed:
                self._stop.set()  # the bus is gone: nothing more can be received
                return KEEP
            except BufferFull as exc:
                if exc.event is None:  # a full "block" subscription refused it unstamped
                    if self._stop.is_set():
                        return KEEP
                    continue  # wait again: back-pressure reaches the stream
                taken = True  # held by every subscription with room; the full ones counted it
            return DELIVERED if taken else DUPLICATE

    def _reject(self, reason: str, detail: str) -> str:
        with self._lock:
            self._rejected[reason] += 1
        telemetry.execute(REJECTED, {"count": 1},
                          {"stream": self.stream, "reason": reason, "detail": detail})
        self._reject_log(logging.WARNING, "hlcbus RedisBridge %r: entry rejected (%s)",
                         self.stream, detail)
        return reason

    def _acknowledge(self, acks: list[bytes], dead: list[dict[bytes, bytes]]) -> None:
        if not acks:
            return
        if dead:
            # One transaction: an entry is dead-lettered exactly when it is acknowledged.
            pipe = self._client.pipeline(transaction=True)
            for fields in dead:
                pipe.xadd(self.dead_letter, fields,  # type: ignore[arg-type]
                          maxlen=DEAD_LETTER_MAXLEN, approximate=True)
            pipe.xack(self.stream, self.group, *acks)
            pipe.execute()
        else:  # one XACK is atomic on its own: MULTI/EXEC would only add work (~8%)
            self._client.xack(self.stream, self.group, *acks)
        with self._lock:
            self._acked += len(acks)
            self._dead_lettered += len(dead)

    # --- groups, connection state, stats ------------------------------------------------

    def _create_group(self) -> None:
        try:
            self._client.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except redis_py.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise  # the group exists already: this node restarts

    def _create_group_quietly(self) -> None:
        try:
            self._create_group()
        except CONNECTION_ERRORS as exc:
            self._mark_disconnected(exc)

    def _mark_disconnected(self, exc: BaseException) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was:
            log.warning("hlcbus RedisBridge %r: Redis unreachable (%r); retrying", self.stream,
                        exc)
            telemetry.execute(DISCONNECTED, {}, {"stream": self.stream, "exception": exc})

    def _mark_connected(self) -> None:
        if self._connected:
            return
        with self._lock:
            was, self._connected = self._connected, True
            if not was:
                self._reconnects += 1
        if not was:
            log.warning("hlcbus RedisBridge %r: Redis reachable again", self.stream)
            telemetry.execute(RECONNECTED, {"reconnects": self._reconnects},
                              {"stream": self.stream})

    def _emit_stats_if_due(self) -> None:
        if not telemetry.attached(STATS) or time.monotonic() < self._stats_due:
            return
        self._stats_due = time.monotonic() + telemetry.STATS_INTERVAL
        stats = self.stats
        measurements = {name: value for name, value in vars(stats).items()
                        if type(value) is int}
        measurements["rejected"] = sum(stats.rejected.values())
        telemetry.execute(STATS, measurements, {"stream": self.stream, "node": self.node})

    @property
    def stats(self) -> RedisBridgeStats:
        """A snapshot of the counters."""
        sub_stats = self._sub.stats if self._sub is not None else None
        with self._lock:
            return RedisBridgeStats(
                sent=self._sent, encode_errors=self._encode_errors, unsent=self._unsent,
                pending_out=sub_stats.pending if sub_stats else 0,
                refused=sub_stats.dropped if sub_stats else 0,
                send_failures=self._send_failures, read=self._read,
                delivered=self._delivered, duplicates=self._duplicates, own=self._own,
                rejected=dict(self._rejected), dead_lettered=self._dead_lettered,
                acked=self._acked, reconnects=self._reconnects, connected=self._connected)


def _client(redis: Any) -> tuple[redis_py.Redis, bool]:
    """The client to use and whether the bridge made it (and so closes it)."""
    if isinstance(redis, str):
        try:
            client = redis_py.Redis.from_url(
                redis, retry=Retry(NoBackoff(), 1), **URL_CLIENT_OPTIONS)
            return client, True
        except ValueError as exc:
            raise ValueError(f"redis: {exc}") from None
    if not isinstance(redis, redis_py.Redis):
        raise TypeError(f"redis must be a redis.Redis client or a URL, not "
                        f"{type(redis).__name__}")
    if redis.connection_pool.connection_kwargs.get("decode_responses"):
        raise ValueError("redis must not decode responses: entries carry binary fields")
    return redis, False


def _entries_of(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply for one stream (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return [tuple(e) for e in streams[0][0]] if streams else []
    return list(reply[0][1])


def _dead_entry(entry_id: bytes, fields: dict[bytes, bytes], reason: str,
                group: str) -> dict[bytes, bytes]:
    """The entry as read, and why and by whom it was rejected: every node keeps its own."""
    dead = dict(fields)
    dead[b"dead:reason"] = reason.encode()
    dead[b"dead:id"] = entry_id
    dead[b"dead:group"] = group.encode()
    return dead
