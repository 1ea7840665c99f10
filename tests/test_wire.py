"""The Redis bridge's wire format (hlcbus._wire): needs no server and no redis-py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hlcbus import Event, Timestamp, _wire

SECRET = b"0123456789abcdef-shared-secret"
STREAM = "orders"
JSON = {_wire.JSON_TYPE: _wire.JsonCodec()}


def event(type: str = "t.x", data: Any = None, node: int = 0xF1) -> Event:
    return Event(type, data, Timestamp(time.time_ns() // 1_000_000, 7, node=node))


def entry(key: Any = None, **changes: bytes) -> dict[bytes, bytes]:
    fields = _wire.encode_entry(event(data={"a": [1, "é"]}), _wire.JsonCodec(), key, STREAM)
    fields.update({name.encode(): value for name, value in changes.items()})
    return fields


def decode(fields: dict[bytes, bytes], key: Any = None) -> Event:
    _wire.verify(fields, key, STREAM)
    return _wire.decode_event(fields, _wire.timestamp_of(fields), JSON)  # type: ignore[no-any-return]


@pytest.mark.parametrize("key", [None, SECRET])
def test_an_event_round_trips(key: Any) -> None:
    original = event(data={"a": [1, "é"], "n": None})
    back = decode(_wire.encode_entry(original, _wire.JsonCodec(), key, STREAM), key)
    assert (back.type, back.data, back.timestamp) == (original.type, original.data,
                                                       original.timestamp)


def test_the_fields_are_the_documented_ones() -> None:
    original = event()
    fields = _wire.encode_entry(original, _wire.JsonCodec(), SECRET, STREAM)
    assert set(fields) == {b"v", b"ts", b"type", b"ct", b"data", b"sig"}
    assert fields[b"v"] == b"1" and fields[b"ts"] == original.timestamp.to_bytes()
    assert fields[b"ct"] == b"application/json" and len(fields[b"sig"]) == 64  # hex SHA-256


@pytest.mark.parametrize("name", [b"v", b"ts", b"type", b"ct", b"data"])
def test_the_signature_covers_every_field(name: bytes) -> None:
    fields = entry(SECRET)
    fields[name] += b"x"
    assert _wire.signature(SECRET, fields, STREAM) != fields[b"sig"]
    if name != b"v":  # a changed version is refused before the signature is checked
        with pytest.raises(_wire.EntryRejected, match="bad_signature") as caught:
            _wire.verify(fields, SECRET, STREAM)
        assert caught.value.reason == "bad_signature"


def test_the_signature_separates_fields() -> None:
    """Moving bytes across a field boundary changes the message signed."""
    base = {b"v": b"1", b"ts": b"t" * 16, b"type": b"ab", b"ct": b"c", b"data": b"d"}
    moved = dict(base)
    moved[b"type"], moved[b"ct"] = b"a", b"bc"
    assert _wire.signature(SECRET, base, STREAM) != _wire.signature(SECRET, moved, STREAM)


def test_unsigned_and_wrongly_signed_entries_are_rejected_with_a_secret() -> None:
    with pytest.raises(_wire.EntryRejected, match="unsigned"):
        _wire.verify(entry(), SECRET, STREAM)
    with pytest.raises(_wire.EntryRejected, match="bad_signature"):
        _wire.verify(entry(b"another secret, 16+ bytes"), SECRET, STREAM)
    _wire.verify(entry(SECRET), None, STREAM)  # without a secret a signature is not checked


def test_a_signed_entry_does_not_verify_in_another_stream() -> None:
    with pytest.raises(_wire.EntryRejected, match="bad_signature"):
        _wire.verify(entry(SECRET), SECRET, "another-stream")


@pytest.mark.parametrize(("changes", "reason"), [
    ({"v": b"2"}, "malformed"),
    ({"ts": b"short"}, "malformed"),
    ({"type": b""}, "malformed"),
    ({"type": b"\xff"}, "malformed"),
    ({"data": b"{"}, "malformed"),
    ({"ct": b"application/x-python-pickle"}, "content_type"),
])
def test_bad_entries_are_rejected_with_a_reason(changes: dict[str, bytes], reason: str) -> None:
    with pytest.raises(_wire.EntryRejected) as caught:
        decode(entry(**changes))
    assert caught.value.reason == reason and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("name", [b"v", b"ts", b"type", b"ct", b"data"])
def test_a_missing_field_is_malformed(name: bytes) -> None:
    fields = entry()
    del fields[name]
    with pytest.raises(_wire.EntryRejected, match=f"malformed: missing field.*{name.decode()}"):
        _wire.verify(fields, None, STREAM)


def test_codecs_by_name() -> None:
    assert isinstance(_wire.codec_named("json"), _wire.JsonCodec)
    pickled = _wire.codec_named("pickle")
    assert pickled.decode(pickled.encode((1, {2}))) == (1, {2})

    class Raw:
        content_type = b"application/octet-stream"

        def encode(self, data: Any) -> bytes:
            return bytes(data)

        def decode(self, payload: bytes) -> Any:
            return payload

    raw = Raw()
    assert _wire.codec_named(raw) is raw
    with pytest.raises(ValueError, match="codec"):
        _wire.codec_named("yaml")
    with pytest.raises(TypeError, match="codec"):
        _wire.codec_named(object())
    raw.content_type = b""
    with pytest.raises(TypeError, match="codec"):
        _wire.codec_named(raw)


def test_secrets() -> None:
    assert _wire.secret_key(None) is None
    assert _wire.secret_key("s" * 16) == b"s" * 16
    with pytest.raises(ValueError, match="secret must be at least 16 bytes"):
        _wire.secret_key(b"short")
    with pytest.raises(TypeError, match="secret"):
        _wire.secret_key(1234)
