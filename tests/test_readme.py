"""Every Python example in README.md runs, each on its own, so none can rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_example_runs(number: int, request: pytest.FixtureRequest,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    if "hlcbus.redis" in BLOCKS[number]:  # the two-process example, on a server of our own
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_server").url)
    exec(compile(BLOCKS[number], f"README.md example {number}", "exec"), {})
