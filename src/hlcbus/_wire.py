"""The wire format of the Redis bridge: one event as one stream entry, and back.

An entry is a flat map of byte strings:

    v     format version, b"1"
    ts    Timestamp.to_bytes(): 16 bytes that carry the publishing node's id
    type  the event type, UTF-8
    ct    the content type of ``data``
    data  the payload, encoded by the codec named by ``ct``
    sig   (with a secret) HMAC-SHA256 over every field above

The signature covers the stream's name, then each field, each as a 4-byte
big-endian length and its bytes, in the order above: no two different
entries sign the same message, and an entry copied into another stream that
shares the secret does not verify there.  This
module needs no Redis: it is pure functions over dicts, tested on their own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any, Mapping, Optional, Protocol

from hlcbus._compat import core
from hlcbus.errors import HLCBusError

Event = core.Event
Timestamp = core.Timestamp

VERSION = b"1"
SIGNED_FIELDS = (b"v", b"ts", b"type", b"ct", b"data")
SIGNATURE = b"sig"
JSON_TYPE = b"application/json"
PICKLE_TYPE = b"application/x-python-pickle"


class EntryRejected(HLCBusError, ValueError):
    """A stream entry the bridge will not deliver; ``reason`` says why.

    Reasons: ``"malformed"`` (a field missing or undecodable, an unknown
    version), ``"content_type"`` (a codec this bridge does not accept),
    ``"unsigned"`` and ``"bad_signature"`` (only with a secret).
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


class Codec(Protocol):
    """How payloads become bytes: a content type and a pair of functions."""

    content_type: bytes

    def encode(self, data: Any) -> bytes: ...

    def decode(self, payload: bytes) -> Any: ...


class JsonCodec:
    """The default: compact JSON, UTF-8.  Tuples come back as lists."""

    content_type = JSON_TYPE
    # json.dumps builds a new JSONEncoder on every call that passes an option
    # (a microsecond per event); this one is built once and keeps no state.
    _encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

    def encode(self, data: Any) -> bytes:
        return self._encoder.encode(data).encode()

    def decode(self, payload: bytes) -> Any:
        return json.loads(payload)


class PickleCodec:
    """Any picklable object.  Unpickling runs code: only with writers you trust."""

    content_type = PICKLE_TYPE

    def encode(self, data: Any) -> bytes:
        return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, payload: bytes) -> Any:
        return pickle.loads(payload)  # noqa: S301 - asked for by name; see README


def codec_named(codec: Any) -> Codec:
    """Return the codec for ``"json"``, ``"pickle"`` or a Codec object; else raise."""
    if codec == "json":
        return JsonCodec()
    if codec == "pickle":
        return PickleCodec()
    if isinstance(codec, str):
        raise ValueError(f"codec must be 'json', 'pickle' or a codec object, got {codec!r}")
    missing = [name for name in ("content_type", "encode", "decode") if not hasattr(codec, name)]
    if missing or type(codec.content_type) is not bytes or not codec.content_type:
        raise TypeError("codec must be 'json', 'pickle' or an object with content_type "
                        f"(non-empty bytes), encode and decode; got {codec!r}")
    return codec  # type: ignore[no-any-return]


def secret_key(secret: Any) -> Optional[bytes]:
    """Check ``secret`` (None, str or bytes, at least 16 bytes) and return it as bytes."""
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError(f"secret must be str or bytes, not {type(secret).__name__}")
    if len(secret) < 16:
        raise ValueError(f"secret must be at least 16 bytes, got {len(secret)}")
    return bytes(secret)


def signature(key: bytes, fields: Mapping[bytes, bytes], stream: str) -> bytes:
    """HMAC-SHA256 of the stream name and the signed fields, each length-prefixed; hex."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for value in (stream.encode(), *(fields[name] for name in SIGNED_FIELDS)):
        mac.update(len(value).to_bytes(4, "big"))
        mac.update(value)
    return mac.hexdigest().encode()


def encode_entry(event: Any, codec: Codec, key: Optional[bytes],
                 stream: str) -> dict[bytes, bytes]:
    """Return the fields of ``event``'s stream entry; the codec's errors propagate."""
    fields = {
        b"v": VERSION,
        b"ts": event.timestamp.to_bytes(),
        b"type": event.type.encode(),
        b"ct": codec.content_type,
        b"data": codec.encode(event.data),
    }
    if key is not None:
        fields[SIGNATURE] = signature(key, fields, stream)
    return fields


def verify(fields: Mapping[bytes, bytes], key: Optional[bytes], stream: str) -> None:
    """Raise EntryRejected unless ``fields`` is a well-formed (and, with a key, signed) entry."""
    missing = [name.decode() for name in SIGNED_FIELDS if name not in fields]
    if missing:
        raise EntryRejected("malformed", f"missing field(s) {', '.join(missing)}")
    if fields[b"v"] != VERSION:
        raise EntryRejected("malformed", f"unknown format version {fields[b'v']!r}")
    if key is None:
        return
    sent = fields.get(SIGNATURE)
    if sent is None:
        raise EntryRejected("unsigned", "this bridge has a secret and the entry has no sig")
    if not hmac.compare_digest(sent, signature(key, fields, stream)):
        raise EntryRejected("bad_signature", "the HMAC does not match the fields")


def timestamp_of(fields: Mapping[bytes, bytes]) -> Timestamp:
    """The entry's timestamp; call after verify()."""
    try:
        return Timestamp.from_bytes(fields[b"ts"])
    except (TypeError, ValueError) as exc:
        raise EntryRejected("malformed", f"ts: {exc}") from None


def decode_event(fields: Mapping[bytes, bytes], ts: Timestamp,
                 codecs: Mapping[bytes, Codec]) -> Any:
    """Build the Event of a verified entry whose timestamp is ``ts``."""
    codec = codecs.get(fields[b"ct"])
    if codec is None:
        raise EntryRejected("content_type", f"this bridge does not decode {fields[b'ct']!r}")
    try:
        event_type = fields[b"type"].decode()
    except UnicodeDecodeError:
        raise EntryRejected("malformed", "type is not UTF-8") from None
    if not event_type:
        raise EntryRejected("malformed", "type is empty")
    try:
        data = codec.decode(fields[b"data"])
    except Exception as exc:  # noqa: BLE001 - any codec failure is the entry's fault
        raise EntryRejected("malformed", f"data: {exc!r}") from None
    return Event(event_type, data, ts)
