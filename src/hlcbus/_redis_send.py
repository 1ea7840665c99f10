"""The Redis bridge's outbound half: local publishes appended to the stream.

``Sender`` is the batch handler of the bridge's subscription on the local
bus, so it runs on that subscription's worker thread, which alone writes its
counters.  The subscription's bound and overflow policy are the bridge's
``max_pending`` and ``on_down``: while Redis is down the batch in hand is
retried and the inbox fills up behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

import redis as redis_py

from hlcbus import _wire, telemetry
from hlcbus._redis_link import CONNECTION_ERRORS, RETRY_MIN, SEND_FAILED, backoff, log

if TYPE_CHECKING:
    from hlcbus.delivery import Subscription
    from hlcbus.redis import RedisBridge

CLOSE_DEFAULT = 5.0  # seconds to send what is pending when the bus closes the subscription
CLOSE_GRACE = 5.0  # seconds past the deadline for a worker stuck in one Redis call


class Sender:
    """Encodes this node's events and XADDs them in pipelined batches, retrying."""

    def __init__(self, bridge: RedisBridge) -> None:
        self._bridge = bridge
        self.sub: Optional[Subscription] = None
        # Worker-owned counters: one writer, read by stats.
        self.sent = self.encode_errors = self.unsent = self.failures = 0
        self.in_hand = 0  # events of the batch being sent (out of the subscription's count)
        # Redis's clock (ms, from our last entry id) and time.monotonic() then.
        self._redis_time: Optional[tuple[int, float]] = None
        self._give_up_at: Optional[float] = None  # set by close: after it, count as unsent
        self._closing = threading.Event()  # set by close: cuts a retry wait short
        self._error_log = telemetry.RateLimitedLog(
            f"hlcbus RedisBridge {bridge.stream!r}: send errors")

    def __call__(self, events: list[Any]) -> None:
        """Send the batch; never raises (every event ends sent, unsent or an encode error)."""
        entries = self._encode(events)
        if entries:
            self.in_hand = len(entries)
            try:
                self._send(entries)
            finally:
                self.in_hand = 0
        self._bridge._tick()

    def close(self, deadline: float) -> bool:
        """Drain the subscription, sending until ``deadline``; False if its worker is stuck."""
        self._give_up_at = deadline
        self._closing.set()
        if self.sub is None:
            return True
        return self.sub.close(drain=True,
                              timeout=max(0.0, deadline - time.monotonic()) + CLOSE_GRACE)

    def _encode(self, events: list[Any]) -> list[dict[bytes, bytes]]:
        bridge = self._bridge
        node, codec, key, stream = bridge.node, bridge._codec, bridge._key, bridge.stream
        entries = []
        for event in events:
            if event.timestamp.node != node:
                continue  # received (before _keep_local took effect): its node sent it
            try:
                entries.append(_wire.encode_entry(event, codec, key, stream))
            except Exception as exc:  # noqa: BLE001 - the codec's error: counted, logged
                self.encode_errors += 1
                log.error("hlcbus RedisBridge %r: cannot encode %r: %r", stream, event, exc)
        return entries

    def _send(self, entries: list[dict[bytes, bytes]]) -> None:
        delay = RETRY_MIN
        while not self._past_deadline():
            try:
                self._xadd(entries)
            except redis_py.RedisError as exc:
                self._failed(len(entries), exc)
            else:
                self.sent += len(entries)
                self._bridge._link.up()
                return
            self._wait(delay)
            delay = backoff(delay)
        self.unsent += len(entries)

    def _past_deadline(self) -> bool:
        if self._give_up_at is None and self.sub is not None and self.sub._stopping:
            # The bus closes the subscription without bridge.close(): allow the default.
            self._give_up_at = time.monotonic() + CLOSE_DEFAULT
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _wait(self, delay: float) -> None:
        give_up_at = self._give_up_at
        if give_up_at is None:
            self._closing.wait(delay)  # close() ends it early, and sets the deadline
        else:
            time.sleep(min(delay, max(0.0, give_up_at - time.monotonic())))

    def _failed(self, count: int, exc: BaseException) -> None:
        self.failures += 1
        telemetry.execute(SEND_FAILED, {"events": count},
                          {"stream": self._bridge.stream, "exception": exc})
        if isinstance(exc, CONNECTION_ERRORS):
            self._bridge._link.down(exc)
        else:  # Redis answered but refused (OOM, READONLY, NOPERM...): retried all the same
            self._error_log(logging.ERROR, "hlcbus RedisBridge %r: XADD refused (%r); retrying",
                            self._bridge.stream, exc)

    def _xadd(self, entries: list[dict[bytes, bytes]]) -> None:
        stream = self._bridge.stream
        pipe = self._bridge._client.pipeline(transaction=False)
        last, minid = len(entries) - 1, self._trim_below()
        for i, fields in enumerate(entries):
            # Trimming once per batch is enough; "~" lets Redis drop whole nodes only.
            pipe.xadd(stream, fields, minid=minid if i == last else None,  # type: ignore[arg-type]
                      approximate=True)
        ids = pipe.execute()
        self._redis_time = (int(ids[-1].split(b"-")[0]), time.monotonic())

    def _trim_below(self) -> Optional[str]:
        """The MINID that drops entries older than the TTL, in Redis's clock, or None.

        Entry ids are Redis's clock in ms.  This node's wall clock may be
        skewed against it (by up to max drift, and a minute is a TTL), so the
        cutoff is Redis's time at our last XADD plus the monotonic time since.
        """
        ttl_ms = self._bridge.ttl_ms
        if not ttl_ms or self._redis_time is None:
            return None
        redis_ms, at = self._redis_time
        now_ms = redis_ms + int((time.monotonic() - at) * 1000)
        return f"{max(0, now_ms - ttl_ms)}-0"
