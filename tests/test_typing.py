"""The public API's static types: mypy over typing_cases.py, revealed types checked.

typing_cases.py marks each ``reveal_type`` line with ``# revealed: <type>``;
mypy (strict, the project's config) must report exactly that type on that
line, and no error.  One mypy run costs a few seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip(
    "mypy.api", reason="mypy is not installed (it is in the test extra: pip install '.[test]')")

HERE = Path(__file__).parent
CASES = HERE / "typing_cases.py"
CONFIG = HERE.parent / "pyproject.toml"
EXPECTED = re.compile(r"reveal_type\(.*\)\s*# revealed: (?P<type>.+?)\s*$")
REVEALED = re.compile(r'^(?P<file>[^:]+):(?P<line>\d+): note: Revealed type is "(?P<type>.*)"$')


def expected_types() -> dict[int, str]:
    lines = CASES.read_text().splitlines()
    return {number: match["type"] for number, line in enumerate(lines, 1)
            if (match := EXPECTED.search(line))}


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    cache = tmp_path_factory.mktemp("mypy_cache")
    stdout, stderr, status = mypy_api.run([
        "--strict", "--config-file", str(CONFIG), "--cache-dir", str(cache),
        "--no-color-output", "--no-error-summary", "--show-absolute-path", str(CASES),
    ])
    return stdout, stderr, status


def revealed_types(stdout: str) -> dict[int, str]:
    found = {}
    for line in stdout.splitlines():
        match = REVEALED.match(line)
        if match and Path(match["file"]) == CASES:
            found[int(match["line"])] = match["type"].replace("builtins.", "")
    return found


def test_cases_are_marked() -> None:
    source = CASES.read_text()
    assert len(expected_types()) >= 30
    assert source.count("reveal_type(") == len(expected_types())


def test_no_type_errors(mypy_output: tuple[str, str, int]) -> None:
    stdout, stderr, status = mypy_output
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert not errors, "\n".join(errors)
    assert status == 0, stdout + stderr


def test_revealed_types(mypy_output: tuple[str, str, int]) -> None:
    revealed = revealed_types(mypy_output[0])
    expected = expected_types()
    mismatches = {line: (want, revealed.get(line)) for line, want in expected.items()
                  if revealed.get(line) != want}
    assert not mismatches, "line: (expected, revealed)\n" + "\n".join(
        f"{line}: {pair}" for line, pair in sorted(mismatches.items()))
    assert revealed.keys() == expected.keys()
