"""Which core hlcbus uses, and that the two cores offer the same API (PEP 399)."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import hlcbus
import hlcbus._core_py

NO_EXTENSIONS = os.environ.get("HLCBUS_NO_EXTENSIONS", "") not in ("", "0")

PUBLIC_CLASSES = ("Timestamp", "HLC", "ManualClock", "PriorityBuffer", "Event", "ReorderBuffer")


@pytest.mark.compiled
@pytest.mark.skipif(NO_EXTENSIONS, reason="HLCBUS_NO_EXTENSIONS is set: the pure core is expected")
def test_compiled_core_is_active(compiled: ModuleType) -> None:
    # The proof the issue asks for: a build that silently fell back to the
    # pure core would pass every other test.
    assert hlcbus.CORE == "c"
    assert hlcbus.Timestamp is compiled.Timestamp
    assert hlcbus.HLC is compiled.HLC


def test_kill_switch_selects_pure_core(tmp_path: Path) -> None:
    script = (
        "import hlcbus, hlcbus._core_py as py\n"
        "print(hlcbus.CORE, hlcbus.Timestamp is py.Timestamp, hlcbus.HLC is py.HLC)\n"
    )
    env = {**os.environ, "HLCBUS_NO_EXTENSIONS": "1"}
    # A fresh interpreter: _compat decides once, at import.
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert result.stdout.split() == ["py", "True", "True"]


def test_kill_switch_zero_means_unset(tmp_path: Path) -> None:
    env = {**os.environ, "HLCBUS_NO_EXTENSIONS": "0"}
    result = subprocess.run(
        [sys.executable, "-c", "import hlcbus; print(hlcbus.CORE)"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=True,
    )
    # "0" switches nothing off: the compiled core is used wherever it was built.
    built = importlib.util.find_spec("hlcbus._core") is not None
    assert result.stdout.strip() == ("c" if built else "py")


def test_package_exports_the_active_core() -> None:
    active = hlcbus._compat.core
    for name in PUBLIC_CLASSES:
        assert getattr(hlcbus, name) is getattr(active, name)
    assert set(hlcbus.__all__) >= set(PUBLIC_CLASSES) | {"CORE", "ClockDriftError"}


def _public_api(cls: type) -> dict[str, Any]:
    """Map each public attribute to 'property' or its parameter list (annotations dropped)."""
    api: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        value = getattr(cls, name)
        if not callable(value):
            api[name] = "property"
            continue
        parameters = inspect.signature(value).parameters.values()
        api[name] = [(p.name, p.kind, p.default) for p in parameters]
    return api


@pytest.mark.compiled
@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_cores_expose_the_same_api(compiled: ModuleType, name: str) -> None:
    pure = hlcbus._core_py
    assert _public_api(getattr(compiled, name)) == _public_api(getattr(pure, name))

