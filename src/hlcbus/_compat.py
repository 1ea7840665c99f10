"""Choose the core: the compiled ``_core`` unless HLCBUS_NO_EXTENSIONS is set.

A missing compiled module (a pure build) falls back to ``_core_py``;
``hlcbus.CORE`` says which one is active ("c" or "py").
"""

import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("HLCBUS_NO_EXTENSIONS", "") not in ("", "0")

core: ModuleType
if NO_EXTENSIONS:
    from hlcbus import _core_py as core
else:
    try:
        from hlcbus import _core as core
    except ImportError:  # built with HLCBUS_NO_EXTENSIONS=1
        from hlcbus import _core_py as core

CORE = "py" if core.__name__.endswith("_core_py") else "c"
