"""RedisBridge: share a bus's events with other processes through a Redis stream.

Outgoing, the bridge is a batch subscription on the local bus whose handler
(``_redis_send.Sender``) appends the events this node published to the stream
with pipelined XADDs.  Incoming, a reader thread (``_redis_read.Reader``)
reads the stream through a consumer group of this node's own (so every node
sees every entry), verifies and decodes each entry and hands it to
``bus.receive``, which merges the clock, drops duplicates and feeds the
ordered buffers.  An entry is acknowledged only once the bus has taken it (or
rejected it for good), and a starting reader first re-reads the entries it
read but never acknowledged.

Needs redis-py (``pip install "hlcbus[redis]"``) and Redis 6.2 or later; the
wire format is in ``_wire.py``.  See README "Across processes and machines".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry

from hlcbus import _wire, telemetry
from hlcbus._redis_link import (
    DISCONNECTED,
    RECONNECTED,
    REJECTED,
    SEND_FAILED,
    STATS,
    Link,
    log,
)
from hlcbus._redis_read import REJECT_REASONS, Reader
from hlcbus._redis_send import Sender
from hlcbus.bus import EventBus, _check_int, _check_pattern
from hlcbus.errors import HLCBusError

__all__ = ["DISCONNECTED", "DOWN_POLICIES", "RECONNECTED", "REJECTED", "REJECT_REASONS",
           "SEND_FAILED", "STATS", "EntryRejected", "RedisBridge", "RedisBridgeStats"]

EntryRejected = _wire.EntryRejected

DOWN_POLICIES = ("buffer", "raise")
DEFAULT_PENDING = {"buffer": 100_000, "raise": 1_000}
DEFAULT_TTL_MS = 60_000  # stream retention when the bus keeps no store
# The client a URL makes: the bridge retries on its own, with back-off, so one
# quick retry (a pooled connection that Redis closed) is all redis-py should do.
URL_CLIENT_OPTIONS = {"socket_connect_timeout": 2.0, "socket_timeout": 10.0}


@dataclass(frozen=True)
class RedisBridgeStats:
    """Counters of one bridge; see README "Across processes and machines".

    Outgoing: every event of this node's the bridge took ends ``sent``,
    ``encode_errors`` or ``unsent`` (given up at close), or is still
    ``pending_out``; ``refused`` counts events its full buffer refused (or a
    close without drain dropped).  Incoming: every entry ``read`` is
    ``delivered``, a ``duplicates``, one of this node's ``own``, or
    ``rejected`` (by reason); ``acked`` counts acknowledgements Redis
    confirmed.  ``errors`` counts reader failures other than the connection.
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
    dead_letter_failures: int
    acked: int
    errors: int
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
    Bad arguments raise TypeError/ValueError here and change nothing.
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
        for name, value in (("stream", stream), ("dead_letter", dead_letter), ("group", group)):
            if value is not None and (type(value) is not str or not value):
                raise TypeError(f"{name} must be a non-empty str")
        _check_pattern(pattern)
        self._codec = _wire.codec_named(codec)
        self._key = _wire.secret_key(secret)
        if on_down not in DOWN_POLICIES:
            raise ValueError(f"on_down must be one of {', '.join(DOWN_POLICIES)}; got {on_down!r}")
        if max_pending is not None:
            _check_int("max_pending", max_pending, 1)
        _check_int("batch_size", batch_size, 1)
        if ttl_ms is not None:
            _check_int("ttl_ms", ttl_ms, 0)
        # The client's socket timeout (10 s for one made from a URL) must outlast a read.
        _check_int("block_ms", block_ms, 1)
        if block_ms > 5_000:
            raise ValueError(f"block_ms must be at most 5000, got {block_ms}")
        if type(consume) is not bool:
            raise TypeError(f"consume must be a bool, not {type(consume).__name__}")
        self._client, self._owns_client = _client(redis)  # last: nothing to undo after it
        # JSON is always safe to read; any other codec only when this bridge uses it.
        self._codecs = {_wire.JSON_TYPE: _wire.JsonCodec(),
                        self._codec.content_type: self._codec}
        self.bus = bus
        self.stream = stream
        self.pattern = pattern
        self.on_down = on_down
        self.consume = consume
        self.max_pending = max_pending or DEFAULT_PENDING[on_down]
        # The batch being sent has left the subscription's count, so it is
        # capped: at most max_pending wait, plus at most as many in hand.
        self.batch_size = min(batch_size, self.max_pending)
        store = bus._store
        self.ttl_ms = ttl_ms if ttl_ms is not None else (
            store.ttl_ms if store is not None else DEFAULT_TTL_MS)
        self.dead_letter = dead_letter or f"{stream}:dead"
        self.node = bus.clock.node
        self.group = group or f"hlcbus:{self.node:016X}"
        self.consumer = self.group  # one consumer per group: its pending list is ours
        self.block_ms = block_ms
        self._link = Link(stream)
        self._sender = Sender(self)
        self._reader = Reader(self)
        # Guards _started and _closed, and _stats_due between the two threads.
        self._lock = threading.Lock()
        self._started = self._closed = False
        self._stats_due = time.monotonic() + telemetry.STATS_INTERVAL

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> RedisBridge:
        """Create this node's consumer group if needed, then start sending and reading.

        Raises a redis.RedisError (ConnectionError, ...) if Redis refuses now
        (nothing is started then), and HLCBusError if the bridge was started
        or closed already.
        """
        with self._lock:
            if self._started or self._closed:
                raise HLCBusError("a RedisBridge starts once")
            self._started = True
        try:
            if self.consume:
                self._reader.create_group()
            sub = self.bus.subscribe(
                self.pattern, self._sender, batch_size=self.batch_size,
                maxsize=self.max_pending,
                overflow="block" if self.on_down == "raise" else "error",
                name=f"redis:{self.stream}")
        except BaseException:
            with self._lock:
                self._started = False  # nothing started: the caller may try again
            raise
        self._sender.sub = sub
        self.bus._keep_local(sub)  # what others sent is theirs to send
        if self.consume:
            self._reader.start()
        return self

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is pending (for up to ``timeout`` s), stop reading; True if all was sent.

        Events still unsent at the deadline are counted in ``stats.unsent``
        and logged.  Entries read but not yet taken by the bus stay pending
        in Redis, for the next start with this node id.  Safe to call again.
        """
        if type(timeout) not in (int, float) or not timeout >= 0:
            raise ValueError(f"timeout must be a number >= 0, got {timeout!r}")
        with self._lock:
            if self._closed:
                return self._sender.unsent == 0
            self._closed = True
        deadline = time.monotonic() + timeout
        sender_stopped = self._sender.close(deadline)
        reader_stopped = self._reader.stop(deadline)
        if self._owns_client:
            self._client.close()
        if not (sender_stopped and reader_stopped):
            log.error("hlcbus RedisBridge %r: a thread is still blocked in Redis after close",
                      self.stream)
        if self._sender.unsent:
            log.error("hlcbus RedisBridge %r: %d events not sent before close", self.stream,
                      self._sender.unsent)
        return self._sender.unsent == 0

    def __enter__(self) -> RedisBridge:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- stats ----------------------------------------------------------------------

    def _tick(self) -> None:
        """Emit the stats telemetry event when due; called by both halves."""
        if not telemetry.attached(STATS) or time.monotonic() < self._stats_due:
            return
        with self._lock:
            if time.monotonic() < self._stats_due:
                return  # the other half emitted it
            self._stats_due = time.monotonic() + telemetry.STATS_INTERVAL
        stats = self.stats
        measurements = {name: value for name, value in vars(stats).items()
                        if type(value) is int}
        measurements["rejected"] = sum(stats.rejected.values())
        telemetry.execute(STATS, measurements, {"stream": self.stream, "node": self.node})

    @property
    def stats(self) -> RedisBridgeStats:
        """A snapshot of the counters (consistent when the bridge is quiescent)."""
        sender, reader = self._sender, self._reader
        sub_stats = sender.sub.stats if sender.sub is not None else None
        return RedisBridgeStats(
            sent=sender.sent, encode_errors=sender.encode_errors, unsent=sender.unsent,
            pending_out=(sub_stats.pending if sub_stats else 0) + sender.in_hand,
            refused=sub_stats.dropped if sub_stats else 0,
            send_failures=sender.failures, read=reader.read, delivered=reader.delivered,
            duplicates=reader.duplicates, own=reader.own, rejected=dict(reader.rejected),
            dead_lettered=reader.dead_lettered,
            dead_letter_failures=reader.dead_letter_failures, acked=reader.acked,
            errors=reader.errors, reconnects=self._link.reconnects,
            connected=self._link.connected)


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
