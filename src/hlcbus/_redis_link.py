"""What the Redis bridge's sender and reader share: connection state and back-off.

Both halves talk to the same Redis through one redis-py client (thread-safe:
each command takes a connection from its pool).  Either may be first to see
Redis go away or come back; ``Link`` turns those sightings into one story,
logged once per outage and counted.
"""

from __future__ import annotations

import logging
import threading

import redis as redis_py

from hlcbus import telemetry

log = logging.getLogger("hlcbus.redis")

RETRY_MIN = 0.05  # seconds: first back-off after a failed command; it doubles ...
RETRY_MAX = 2.0  # ... up to this
CONNECTION_ERRORS = (redis_py.ConnectionError, redis_py.TimeoutError)

# Telemetry events of the bridge, beside the bus's (see hlcbus.telemetry).
STATS = ("hlcbus", "redis", "stats")
REJECTED = ("hlcbus", "redis", "rejected")
DISCONNECTED = ("hlcbus", "redis", "disconnected")
RECONNECTED = ("hlcbus", "redis", "reconnected")
SEND_FAILED = ("hlcbus", "redis", "send_failed")


def backoff(delay: float) -> float:
    """The wait after ``delay`` when the next try fails too."""
    return min(delay * 2, RETRY_MAX)


class Link:
    """Whether Redis answers, as the sender and the reader last saw it."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        # Guards connected and reconnects: both halves report, each on its thread.
        self._lock = threading.Lock()
        self.connected = True
        self.reconnects = 0

    def down(self, exc: BaseException) -> None:
        with self._lock:
            was, self.connected = self.connected, False
        if was:
            log.warning("hlcbus RedisBridge %r: Redis unreachable (%r); retrying", self.stream,
                        exc)
            telemetry.execute(DISCONNECTED, {}, {"stream": self.stream, "exception": exc})

    def up(self) -> None:
        if self.connected:  # the common case, without the lock
            return
        with self._lock:
            was, self.connected = self.connected, True
            if not was:
                self.reconnects += 1
        if not was:
            log.warning("hlcbus RedisBridge %r: Redis reachable again", self.stream)
            telemetry.execute(RECONNECTED, {"reconnects": self.reconnects},
                              {"stream": self.stream})
