"""The Redis bridge's inbound half: stream entries handed to ``bus.receive``.

``Reader`` runs one thread, which alone writes its counters.  It reads
through this node's consumer group, first the entries it read before and
never acknowledged (its pending list), then new ones.  Each entry gets one
outcome (delivered, duplicate, own, or rejected with a reason) and is then
acknowledged, with the rejected ones dead-lettered in the same transaction.
If the acknowledgement fails, the entries are remembered as handled, so that
reading them again acknowledges them without handing them to the bus twice.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

import redis as redis_py

from hlcbus import _wire, telemetry
from hlcbus._redis_link import CONNECTION_ERRORS, REJECTED, RETRY_MIN, backoff, log
from hlcbus.errors import BufferFull, BusClosed, ClockDriftError

if TYPE_CHECKING:
    from hlcbus.redis import RedisBridge

DEAD_LETTER_MAXLEN = 10_000  # approximate cap of the dead-letter stream
JOIN_GRACE = 1.0  # seconds past close's deadline for a read blocked in Redis
# Why entries were not delivered.  "trimmed": a pending entry the stream had
# already trimmed when it was re-read.  "error": handing it to the bus raised
# something unexpected (logged with its traceback).
REJECT_REASONS = ("malformed", "content_type", "unsigned", "bad_signature", "drift", "trimmed",
                  "error")
# _take's answers besides a rejection reason.  KEEP: leave the entry
# unacknowledged, for a later read.
DELIVERED, DUPLICATE, OWN, KEEP = "delivered", "duplicate", "own", "keep"

Entry = tuple[bytes, Optional[dict[bytes, bytes]]]


class Reader:
    """Reads the stream through the bridge's consumer group and feeds the bus."""

    def __init__(self, bridge: RedisBridge) -> None:
        self._bridge = bridge
        self._stop = threading.Event()  # set by stop() or when the bus has closed
        self._thread: Optional[threading.Thread] = None
        # Reader-owned counters: one writer, read by stats.
        self.read = self.delivered = self.duplicates = self.own = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.dead_lettered = self.dead_letter_failures = self.acked = self.errors = 0
        # Entry id -> its dead letter (or None): handled, but the ack failed.
        self._handed: dict[bytes, Optional[dict[bytes, bytes]]] = {}
        self._last_id: Optional[bytes] = None  # the newest entry read: where to resume
        self._log = telemetry.RateLimitedLog(f"hlcbus RedisBridge {bridge.stream!r}: reader")

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"hlcbus-redis-reader-{self._bridge.stream}")
        self._thread.start()

    def stop(self, deadline: float) -> bool:
        """Stop after the batch in hand; False if the thread is still blocked in Redis."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(max(0.0, deadline - time.monotonic()) + JOIN_GRACE
                    + self._bridge.block_ms / 1000)
        return not thread.is_alive()

    def create_group(self, start: str = "$") -> None:
        """Create the consumer group at ``start`` unless it exists (a node restarting)."""
        bridge = self._bridge
        try:
            bridge._client.xgroup_create(bridge.stream, bridge.group, id=start, mkstream=True)
        except redis_py.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        delay, backlog = RETRY_MIN, True
        while not self._stop.is_set():
            try:
                if backlog:  # our pending entries first: read before, never acknowledged
                    self._read_backlog()
                    backlog = False
                self._read_new()
            except CONNECTION_ERRORS as exc:
                self._bridge._link.down(exc)
            except redis_py.ResponseError as exc:
                self._response_error(exc)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any one failure
                self.errors += 1
                self._log(logging.ERROR, "hlcbus RedisBridge %r: reader failed; retrying",
                          self._bridge.stream, exc_info=exc)
            else:
                delay = RETRY_MIN
                self._bridge._tick()
                continue
            backlog = True
            self._bridge._tick()
            self._stop.wait(delay)
            delay = backoff(delay)

    def _response_error(self, exc: redis_py.ResponseError) -> None:
        if "NOGROUP" not in str(exc):
            self.errors += 1
            self._log(logging.ERROR, "hlcbus RedisBridge %r: %r; retrying",
                      self._bridge.stream, exc)
            return
        # The stream or group is gone (deleted, or Redis restarted without
        # persistence).  Resume after the newest entry this reader saw.
        log.warning("hlcbus RedisBridge %r: consumer group lost; recreating it",
                    self._bridge.stream)
        try:
            self.create_group(self._last_id.decode() if self._last_id else "$")
        except redis_py.RedisError as failure:
            self._log(logging.ERROR, "hlcbus RedisBridge %r: cannot recreate the group: %r",
                      self._bridge.stream, failure)

    def _read_backlog(self) -> None:
        bridge = self._bridge
        while not self._stop.is_set():
            reply = bridge._client.xreadgroup(bridge.group, bridge.consumer, {bridge.stream: "0"},
                                              count=bridge.batch_size)
            entries = entries_of(reply)
            if not entries:
                return
            self._handle(entries)

    def _read_new(self) -> None:
        bridge = self._bridge
        reply = bridge._client.xreadgroup(bridge.group, bridge.consumer, {bridge.stream: ">"},
                                          count=bridge.batch_size, block=bridge.block_ms)
        bridge._link.up()
        entries = entries_of(reply)
        if entries:
            self._last_id = entries[-1][0]
            self._handle(entries)

    # --- one batch ----------------------------------------------------------------------

    def _handle(self, entries: list[Entry]) -> None:
        """Hand each entry to the bus, then acknowledge (and dead-letter) them in one step."""
        acks: list[bytes] = []
        dead: dict[bytes, dict[bytes, bytes]] = {}
        delivered = duplicates = own = again = 0
        for entry_id, fields in entries:
            if entry_id in self._handed:  # handled before its ack failed: only ack it now
                letter = self._handed[entry_id]
                if letter is not None:
                    dead[entry_id] = letter
                acks.append(entry_id)
                again += 1
                continue
            outcome = self._take(fields) if not self._stop.is_set() else KEEP
            if outcome is DELIVERED:
                delivered += 1
            elif outcome is OWN:
                own += 1
            elif outcome is DUPLICATE:
                duplicates += 1
            elif outcome is KEEP:
                break  # unacknowledged: read again on the next start
            elif fields:  # rejected (and counted): kept in the dead-letter stream
                dead[entry_id] = _dead_letter(entry_id, fields, outcome, self._bridge.group)
            acks.append(entry_id)
        # Counted once per batch, and only the entries handled now (not _handed).
        self.read += len(acks) - again
        self.delivered += delivered
        self.duplicates += duplicates
        self.own += own
        try:
            self._acknowledge(acks, dead)
        except BaseException:
            for entry_id in acks:
                self._handed[entry_id] = dead.get(entry_id)
            raise
        for entry_id in acks:
            self._handed.pop(entry_id, None)

    def _take(self, fields: Optional[dict[bytes, bytes]]) -> str:
        """Deliver one entry to the bus; return DELIVERED, DUPLICATE, OWN, KEEP or a reason."""
        if not fields:  # a pending entry trimmed from the stream before we re-read it
            return self._reject("trimmed", "a pending entry was trimmed before delivery")
        bridge = self._bridge
        try:
            _wire.verify(fields, bridge._key, bridge.stream)
            ts = _wire.timestamp_of(fields)
            if ts.node == bridge.node:
                return OWN
            event = _wire.decode_event(fields, ts, bridge._codecs)
        except _wire.EntryRejected as exc:
            return self._reject(exc.reason, str(exc))
        try:
            return self._receive(event)
        except Exception as exc:  # noqa: BLE001 - e.g. a clock with overflow="raise" refusing
            self._log(logging.ERROR, "hlcbus RedisBridge %r: receive raised on %r",
                      bridge.stream, event, exc_info=exc)
            return self._reject("error", f"receive raised {exc!r}")

    def _receive(self, event: Any) -> str:
        while True:
            try:
                taken = self._bridge.bus.receive(event)
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
        self.rejected[reason] += 1
        stream = self._bridge.stream
        telemetry.execute(REJECTED, {"count": 1},
                          {"stream": stream, "reason": reason, "detail": detail})
        self._log(logging.WARNING, "hlcbus RedisBridge %r: entry rejected (%s)", stream, detail)
        return reason

    def _acknowledge(self, acks: list[bytes], dead: dict[bytes, dict[bytes, bytes]]) -> None:
        if not acks:
            return
        bridge = self._bridge
        client, stream, group = bridge._client, bridge.stream, bridge.group
        if not dead:  # one XACK is atomic on its own: MULTI/EXEC would only add work (~8%)
            self.acked += int(client.xack(stream, group, *acks))
            return
        # One transaction, so that an entry is dead-lettered when it is acknowledged.
        pipe = client.pipeline(transaction=True)
        for letter in dead.values():
            pipe.xadd(bridge.dead_letter, letter,  # type: ignore[arg-type]
                      maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        pipe.xack(stream, group, *acks)
        try:
            *added, acked = pipe.execute(raise_on_error=False)
        except redis_py.ResponseError as exc:  # refused as a whole (EXECABORT): nothing ran
            added, acked = [exc] * len(dead), client.xack(stream, group, *acks)
        if isinstance(acked, Exception):
            raise acked
        failed = [result for result in added if isinstance(result, Exception)]
        if failed:  # never hold the stream up for its dead letters: count and log them
            self._log(logging.ERROR, "hlcbus RedisBridge %r: %d dead letters not kept: %r",
                      stream, len(failed), failed[0])
        self.acked += int(acked)
        self.dead_lettered += len(dead) - len(failed)
        self.dead_letter_failures += len(failed)


def entries_of(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply for one stream.

    RESP2 gives ``[[stream, entries]]``; RESP3 ``{stream: [entries]}`` or, in
    redis-py's newer unified form, ``{stream: entries}``.
    """
    if not reply:
        return []
    if isinstance(reply, dict):
        value: Any = next(iter(reply.values()), [])
        first = value[0] if value else None
        if isinstance(first, list) and (not first or not isinstance(first[0], (bytes, str))):
            value = first  # wrapped once more (an entry would start with its id)
        return [(entry[0], entry[1]) for entry in value]
    return list(reply[0][1])


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes], reason: str,
                 group: str) -> dict[bytes, bytes]:
    """The entry as read, and why and by whom it was rejected: every node keeps its own."""
    letter = dict(fields)
    letter[b"dead:reason"] = reason.encode()
    letter[b"dead:id"] = entry_id
    letter[b"dead:group"] = group.encode()
    return letter
