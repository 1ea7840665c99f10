"""Declare the compiled core; everything else lives in pyproject.toml.

HLCBUS_NO_EXTENSIONS=1 builds a pure-Python package (hlcbus then uses
_core_py).  Otherwise a failure to compile is an error, never a silent
fallback: the test suite checks that the compiled core is the one in use.
"""

import os

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("HLCBUS_NO_EXTENSIONS", "") not in ("", "0")

if NO_EXTENSIONS:
    ext_modules = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("hlcbus._core", ["src/hlcbus/_core.pyx"], extra_compile_args=["-O2"])],
        compiler_directives={"language_level": "3"},
    )

setup(ext_modules=ext_modules)
