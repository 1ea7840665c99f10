"""The command line and the demo, run as subprocesses."""

from __future__ import annotations

import subprocess
import sys

import hlcbus


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hlcbus", *args], capture_output=True,
                          text=True, timeout=120)


def test_now_prints_a_parsable_timestamp() -> None:
    result = run("now", "--node", "0xff")
    assert result.returncode == 0
    ts = hlcbus.Timestamp.parse(result.stdout.strip())
    assert ts.node == 255


def test_now_in_bytes_and_packed() -> None:
    raw = run("now", "--format", "bytes").stdout.strip()
    assert len(hlcbus.Timestamp.from_bytes(bytes.fromhex(raw)).to_bytes()) == 16
    packed = int(run("now", "--format", "packed").stdout)
    assert hlcbus.Timestamp.from_packed(packed).physical > 1_700_000_000_000


def test_decode_each_form() -> None:
    ts = hlcbus.Timestamp(1_796_299_200_000, 1, 255)
    for value in (str(ts), ts.to_bytes().hex(), str(ts.packed)):
        result = run("decode", value)
        assert result.returncode == 0
        assert "2026-12-03T12:00:00+00:00" in result.stdout
        assert "logical   1" in result.stdout


def test_bad_input_exits_2_with_one_line() -> None:
    result = run("decode", "2026-13-03T12:00:00.000Z-0001-00000000000000FF")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("hlcbus decode: error: cannot decode")
    assert "month 13 is out of range" in result.stderr


def test_demo_keeps_the_ordered_stream_in_order() -> None:
    result = run("demo", "--seconds", "1", "--events", "2000", "--window-ms", "50",
                 "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "order inversions, ordered    0" in result.stdout
    assert ": ok" in result.stdout  # the accounting identity
    assert "never went backwards" in result.stdout


def test_bench_prints_its_table() -> None:
    result = run("bench", "--events", "2000", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    for label in ("publish, 1 subscriber", "end to end, 1 publisher, ordered",
                  "telemetry.execute, nothing attached"):
        assert label in result.stdout


def test_every_command_has_help() -> None:
    for command in ("now", "decode", "demo", "bench"):
        result = run(command, "--help")
        assert result.returncode == 0 and "usage: hlcbus" in result.stdout


def test_unknown_command_exits_2() -> None:
    result = run("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr
