"""Choose the core: the compiled ``_core`` unless HLCBUS_NO_EXTENSIONS is set.

A missing compiled module (a pure build) falls back to ``_core_py``;
``hlcbus.CORE`` says which one is active ("c" or "py").
"""

import os

NO_EXTENSIONS = os.environ.get("HLCBUS_NO_EXTENSIONS", "") not in ("", "0")

__all__ = ["CORE", "NO_EXTENSIONS", "core"]

# For mypy, ``core`` is its first binding, the pure twin (the reference).  The
# compiled module has the same API (stubtest checks _core.pyi against it, and
# every core test runs on both), so callers see one set of types either way.
if NO_EXTENSIONS:
    from hlcbus import _core_py as core
else:
    try:
        from hlcbus import _core as core  # type: ignore[no-redef]  # same API, see above
    except ImportError:  # built with HLCBUS_NO_EXTENSIONS=1
        from hlcbus import _core_py as core

CORE = "py" if core.__name__.endswith("_core_py") else "c"
