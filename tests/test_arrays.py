"""hlcbus.arrays: differential tests against the scalar Timestamp API of both cores."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

np = pytest.importorskip("numpy", reason="numpy is not installed (it is in the test extra)")

from hlcbus import arrays  # noqa: E402  (after the numpy check)

MAX_PHYSICAL = 2**48 - 1
MAX_WORD = 2**64 - 1
TEXT_LIMIT = 253_402_300_800_000  # first physical without a text form (year 10000)

physicals = st.one_of(st.sampled_from([0, 1, TEXT_LIMIT - 1, TEXT_LIMIT, MAX_PHYSICAL]),
                      st.integers(0, MAX_PHYSICAL))
logicals = st.one_of(st.sampled_from([0, 1, 0xFFFE, 0xFFFF]), st.integers(0, 0xFFFF))
words = st.one_of(st.sampled_from([0, 1, 0xFFFF, 0x10000, MAX_WORD - 1, MAX_WORD]),
                  st.integers(0, MAX_WORD))
text_words = st.one_of(st.sampled_from([0, 0xFFFF, (TEXT_LIMIT << 16) - 1]),
                       st.integers(0, (TEXT_LIMIT << 16) - 1))
rows = st.lists(st.tuples(words, words), max_size=30)
text_rows = st.lists(st.tuples(text_words, words), max_size=30)


def _columns(pairs: list[tuple[int, int]]) -> tuple[Any, Any]:
    return (np.array([p for p, _ in pairs], dtype=np.uint64),
            np.array([n for _, n in pairs], dtype=np.uint64))


# --- pack / unpack -------------------------------------------------------------------


@given(st.lists(st.tuples(physicals, logicals), max_size=30))
def test_pack_unpack_match_scalar(core: ModuleType, fields: list[tuple[int, int]]) -> None:
    physical = np.array([p for p, _ in fields], dtype=np.uint64)
    logical = np.array([c for _, c in fields], dtype=np.uint16)
    packed = arrays.pack(physical, logical)
    assert packed.dtype == np.uint64
    assert packed.tolist() == [core.Timestamp(p, c).packed for p, c in fields]
    high, low = arrays.unpack(packed)
    assert list(zip(high.tolist(), low.tolist())) == fields


def test_pack_broadcasts_and_keeps_shape() -> None:
    assert arrays.pack([[1, 2]], 3).tolist() == [[1 << 16 | 3, 2 << 16 | 3]]
    assert arrays.pack([5]).tolist() == [5 << 16]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: arrays.pack([0, 2**48, 2**48]), r"physical\[1\] = 281474976710656: out of range"),
    (lambda: arrays.pack([0, 1], [0, 2**16]), r"logical\[1\] = 65536: out of range \[0, 2\*\*16\)"),
    (lambda: arrays.pack([[0, 1], [-1, 2]]), r"physical\[1, 0\] = -1: must be >= 0"),
    (lambda: arrays.pack([1.0]), r"physical must have an integer dtype, not float64"),
    (lambda: arrays.pack(np.array([True])), r"physical must have an integer dtype, not bool"),
    (lambda: arrays.pack([1, 2**64]), r"physical\[1\] = 18446744073709551616: out of range"),
    (lambda: arrays.pack(np.array([1, "x"], dtype=object)), r"physical\[1\] = 'x': must be an int"),
    (lambda: arrays.unpack([3, -2]), r"packed\[1\] = -2: must be >= 0"),
])
def test_bad_fields_name_the_first_bad_index(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --- datetime64 -------------------------------------------------------------------------


@given(st.lists(st.tuples(physicals, logicals), max_size=30))
def test_to_datetime64_matches_scalar(core: ModuleType, fields: list[tuple[int, int]]) -> None:
    packed = np.array([core.Timestamp(p, c).packed for p, c in fields], dtype=np.uint64)
    bad = [i for i, (p, _) in enumerate(fields) if p >= TEXT_LIMIT]
    if bad:
        with pytest.raises(ValueError, match=rf"packed\[{bad[0]}\] = \d+: physical is after"):
            arrays.to_datetime64(packed)
        with pytest.raises(ValueError):
            core.Timestamp(*fields[bad[0]]).to_datetime()
        return
    values = arrays.to_datetime64(packed)
    assert values.dtype == np.dtype("datetime64[ms]")
    expected = [core.Timestamp(p, c).to_datetime().replace(tzinfo=None) for p, c in fields]
    assert values.astype(datetime).tolist() == expected
    assert arrays.from_datetime64(values).tolist() == [p << 16 for p, _ in fields]


@pytest.mark.parametrize(("text", "unit", "ms"), [
    ("2026-12-03T12:00:00.123456789", "ns", 1_796_299_200_123),
    ("2026-12-03T12:00:00.999999", "us", 1_796_299_200_999),
    ("2026-12-03T12:00:01", "s", 1_796_299_201_000),
    ("2026-12-03", "D", 1_796_256_000_000),
    ("1970-01-01", "Y", 0),
])
def test_from_datetime64_floors_to_the_millisecond(text: str, unit: str, ms: int) -> None:
    values = np.array([text], dtype=f"datetime64[{unit}]")
    assert arrays.from_datetime64(values).tolist() == [ms << 16]


@pytest.mark.parametrize(("values", "message"), [
    (np.array(["2026-01-01", "NaT", "NaT"], "datetime64[ms]"), r"values\[1\] = NaT: is NaT"),
    (np.array([0, -1], "datetime64[us]"), r"values\[1\] = .*: is before 1970"),
    (np.array([0, 2**48], "datetime64[ms]"), r"values\[1\] = .*: is at or after 2\*\*48 ms"),
    (np.array([0, 10**13], "datetime64[Y]"), r"values\[1\] = .*: is at or after 2\*\*48 ms"),
    (np.array([1, 2]), r"values must have a datetime64 dtype, not int64"),
])
def test_bad_datetimes_name_the_first_bad_index(values: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arrays.from_datetime64(values)


# --- the 16-byte encoding ---------------------------------------------------------------


@given(rows)
def test_encode_decode_match_scalar(core: ModuleType, pairs: list[tuple[int, int]]) -> None:
    packed, node = _columns(pairs)
    encoded = arrays.encode(packed, node)
    assert encoded.dtype == np.uint8 and encoded.shape == (len(pairs), 16)
    expected = b"".join(core.Timestamp.from_packed(p, n).to_bytes() for p, n in pairs)
    assert encoded.tobytes() == expected
    for data in (encoded, expected, bytearray(expected), memoryview(expected)):
        got = arrays.decode(data)
        assert list(zip(got[0].tolist(), got[1].tolist())) == pairs


def test_encode_takes_one_node_for_every_row() -> None:
    assert arrays.encode([1, 2], 7).tobytes() == arrays.encode([1, 2], [7, 7]).tobytes()


@pytest.mark.parametrize(("data", "message"), [
    (b"\0" * 17, "multiple of 16 bytes, got 17"),
    (np.zeros((2, 15), np.uint8), r"\(n, 16\) uint8 array, got uint8 \(2, 15\)"),
    (np.zeros((2, 16), np.int8), r"\(n, 16\) uint8 array, got int8"),
    (np.zeros(16, np.uint8), r"\(n, 16\) uint8 array, got uint8 \(16,\)"),
])
def test_decode_rejects_bad_shapes(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arrays.decode(data)


def test_pair_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match=r"node has shape \(3,\), packed has \(2,\)"):
        arrays.encode([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="packed must be one-dimensional"):
        arrays.encode([[1, 2]], 0)
    with pytest.raises(ValueError, match=r"node\[2\] = -1: must be >= 0"):
        arrays.sort([1, 2, 3], [0, 0, -1])


# --- text ---------------------------------------------------------------------------------


@given(text_rows)
def test_format_parse_match_scalar(core: ModuleType, pairs: list[tuple[int, int]]) -> None:
    packed, node = _columns(pairs)
    texts = arrays.format(packed, node)
    assert texts.tolist() == [str(core.Timestamp.from_packed(p, n)) for p, n in pairs]
    got = arrays.parse(texts)
    assert list(zip(got[0].tolist(), got[1].tolist())) == pairs
    assert arrays.parse(texts.tolist())[0].tolist() == got[0].tolist()


def test_format_names_the_first_row_without_text() -> None:
    with pytest.raises(ValueError, match=r"packed\[1\] = \d+: physical is after 9999"):
        arrays.format(arrays.pack([0, TEXT_LIMIT, TEXT_LIMIT]), 0)


def test_parse_names_the_first_bad_item_with_the_scalar_reason(core: ModuleType) -> None:
    good = str(core.Timestamp(1, 2, 3))
    bad = good.replace("-0002-", "-00g2-")
    with pytest.raises(ValueError) as scalar:
        core.Timestamp.parse(bad)
    with pytest.raises(ValueError, match=r"^texts\[1\]: ") as vector:
        arrays.parse([good, bad, 5])
    assert str(vector.value) == f"texts[1]: {scalar.value}"
    with pytest.raises(ValueError, match=r"texts\[0\]: text must be a str, not int"):
        arrays.parse([5])


# --- order --------------------------------------------------------------------------------


@given(rows, rows)
def test_order_matches_scalar(core: ModuleType, a: list[tuple[int, int]],
                              b: list[tuple[int, int]]) -> None:
    def key(pair: tuple[int, int]) -> Any:
        return core.Timestamp.from_packed(*pair)

    packed, node = _columns(a)
    order = arrays.argsort(packed, node)
    assert [a[i] for i in order.tolist()] == sorted(a, key=key)
    sorted_a = arrays.sort(packed, node)
    assert list(zip(*(c.tolist() for c in sorted_a))) == sorted(a, key=key)
    sorted_b = arrays.sort(*_columns(b))
    merged = arrays.merge(sorted_a, sorted_b)
    assert list(zip(*(c.tolist() for c in merged))) == sorted(a + b, key=key)


@given(st.lists(st.integers(0, 2**64 - 1), unique=True, max_size=60), st.data())
def test_merge_and_sort_of_distinct_words(words: list[int], data: st.DataObject) -> None:
    """Distinct words take the fast paths (no lexsort, a binary-search merge)."""
    nodes = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=len(words),
                               max_size=len(words)))
    pairs = list(zip(words, nodes))
    cut = data.draw(st.integers(0, len(pairs)))
    a, b = sorted(pairs[:cut]), sorted(pairs[cut:])
    merged = arrays.merge(_columns(a), _columns(b))
    assert list(zip(*(c.tolist() for c in merged))) == sorted(pairs)
    assert list(zip(*(c.tolist() for c in arrays.sort(*_columns(pairs))))) == sorted(pairs)


def test_merge_keeps_a_before_b_on_ties_and_sorts_unsorted_input() -> None:
    a = ([5, 5, 9], [1, 2, 0])
    b = ([5, 7], [1, 0])
    words, nodes = arrays.merge(a, b)
    assert list(zip(words.tolist(), nodes.tolist())) == [(5, 1), (5, 1), (5, 2), (7, 0), (9, 0)]
    words, nodes = arrays.merge(([9, 1], [0, 0]), ([4], [0]))  # a is not sorted
    assert words.tolist() == [1, 4, 9]


def test_merge_interleaves_columns() -> None:
    even = np.arange(0, 2_000, 2, dtype=np.uint64)
    odd = np.arange(1, 2_000, 2, dtype=np.uint64)
    words, nodes = arrays.merge((even, 1), (odd, 2))
    assert words.tolist() == list(range(2_000))
    assert nodes.tolist() == [1, 2] * 1_000


def test_now_many_column_is_sorted_and_formats() -> None:
    from hlcbus import HLC, ManualClock

    clock = HLC(9, wall=ManualClock(1_796_299_200_000))
    packed = clock.now_many(1000)
    assert (arrays.argsort(packed, 9) == np.arange(1000)).all()
    assert arrays.parse(arrays.format(packed[-1:], 9))[0].tolist() == [clock.last.packed]


# --- numpy stays optional ------------------------------------------------------------------


def test_package_imports_without_numpy() -> None:
    script = (
        "import sys\n"
        "class NoNumpy:  # a finder that makes numpy look uninstalled\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'numpy':\n"
        "            raise ImportError('no numpy here')\n"
        "sys.meta_path.insert(0, NoNumpy())\n"
        "import hlcbus, hlcbus._core_py\n"
        "cores = [hlcbus._core_py]\n"
        "try:\n"
        "    import hlcbus._core\n"
        "    cores.append(hlcbus._core)\n"
        "except ImportError:\n"
        "    pass\n"
        "for core in cores:\n"
        "    clock = core.HLC(1)\n"
        "    clock.now()\n"
        "    try:\n"
        "        clock.now_many(2)\n"
        "    except ImportError:\n"
        "        print('ok')\n"
        "    assert clock.last == clock.last\n"
        "print(len(cores))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    *oks, count = result.stdout.split()
    assert oks == ["ok"] * int(count) and count in ("1", "2"), result.stderr


_EDGE_TEXTS = [
    "2024-02-29T00:00:00.000Z-0000-0000000000000000",  # a leap day
    "2023-02-29T00:00:00.000Z-0000-0000000000000000",  # not one
    "2100-02-29T00:00:00.000Z-0000-0000000000000000",  # not one either
    "2000-02-29T23:59:59.999Z-FFFF-FFFFFFFFFFFFFFFF",
    "1969-12-31T23:59:59.999Z-0000-0000000000000000",
    "1970-01-01T00:00:00.000Z-0000-0000000000000000",
    "9999-12-31T23:59:59.999Z-FFFF-FFFFFFFFFFFFFFFF",
    "2026-04-31T00:00:00.000Z-0000-0000000000000000",
    "2026-13-01T00:00:00.000Z-0000-0000000000000000",
    "2026-12-03T24:00:00.000Z-0000-0000000000000000",
    "2026-12-03T12:60:00.000Z-0000-0000000000000000",
    "2026-12-03T12:00:60.000Z-0000-0000000000000000",
    "2026-12-03T12:00:00.000Z-00ff-0000000000000000",
    "2026-12-03T12:00:00.000Z-0000-0000000000000000 ",
    "2026-12-03T12:00:00.000Z-0000-000000000000000",
    "2026-12-03T12:00:00.000Z-0000-00000000000000é0",
    "٢026-12-03T12:00:00.000Z-0000-0000000000000000",  # a non-ASCII decimal digit
    "",
]


def _scalar_parse(core: ModuleType, text: str) -> Any:
    try:
        ts = core.Timestamp.parse(text)
    except ValueError as exc:
        return str(exc)
    return ts.packed, ts.node


def _vector_parse(texts: Any) -> Any:
    try:
        packed, node = arrays.parse(texts)
    except ValueError as exc:
        return str(exc)
    return list(zip(packed.tolist(), node.tolist()))


@pytest.mark.parametrize("text", _EDGE_TEXTS)
def test_parse_edges_match_scalar(core: ModuleType, text: str) -> None:
    expected = _scalar_parse(core, text)
    got = _vector_parse([text])
    assert got == (f"texts[0]: {expected}" if isinstance(expected, str) else [expected])
    assert _vector_parse(np.array([text])) == got
    assert _vector_parse(np.array([text] * 3)) == (  # <U46, in numpy, when 46 long
        got if isinstance(got, str) else got * 3)


def test_parse_in_numpy_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrays, "_PARSE_CHUNK", 3)
    packed = arrays.pack(np.arange(10) * 86_400_000 * 400 + 1_796_299_200_000, np.arange(10))
    nodes = np.arange(10, dtype=np.uint64) << np.uint64(60)
    texts = arrays.format(packed, nodes)
    words, parsed_nodes = arrays.parse(texts)
    assert (words == packed).all() and (parsed_nodes == nodes).all()
    texts[7] = texts[7].replace("Z-0007", "Z-000g")
    with pytest.raises(ValueError, match=r"^texts\[7\]: .*counter '000g'"):
        arrays.parse(texts)


_MUTATIONS = "0123456789ABCDEFabcdefgZT:.- é٣\0"


@given(text_rows.filter(bool), st.data())
def test_parse_of_mutated_texts_matches_scalar(core: ModuleType, pairs: list[tuple[int, int]],
                                               data: st.DataObject) -> None:
    texts = arrays.format(*_columns(pairs)).tolist()
    row = data.draw(st.integers(0, len(texts) - 1))
    position = data.draw(st.integers(0, 45))
    char = data.draw(st.sampled_from(_MUTATIONS))
    texts[row] = texts[row][:position] + char + texts[row][position + 1:]
    # As a list (row by row) and as a <U46 array (in numpy, which drops trailing NULs).
    for column in (texts, np.array(texts)):
        rows = column if isinstance(column, list) else column.tolist()
        expected = [_scalar_parse(core, t) for t in rows]
        errors = [i for i, e in enumerate(expected) if isinstance(e, str)]
        got = _vector_parse(column)
        if errors:
            assert got == f"texts[{errors[0]}]: {expected[errors[0]]}"
        else:
            assert got == expected
