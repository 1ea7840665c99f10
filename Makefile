# The README's commands.  `make test` and `make demo` work on a fresh machine
# with Python 3.10+, a C compiler and make: they create $(VENV), build the
# package with its compiled core, and install the test dependencies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := $(wildcard src/hlcbus/*.py src/hlcbus/*.pyx src/hlcbus/*.pyi) setup.py pyproject.toml

.PHONY: install test test-pure demo bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip "setuptools>=77" wheel "Cython>=3.1"

# pip always rebuilds a local directory, so this re-runs only when a source changed.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q --no-build-isolation ".[test]"
	touch $@

install: $(VENV)/.installed

# The whole suite; every core test runs against both _core (compiled) and _core_py.
test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python -m hlcbus demo

$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-build-isolation ".[test,bench]"
	touch $@

# Writes bench/RESULTS.md; takes a few minutes (pyperf spawns worker processes).
bench: $(VENV)/.bench
	$(BIN)/python bench/run_all.py

$(VENV)/.lint: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-build-isolation ".[test,lint]"
	touch $@

# ruff, mypy --strict on the package, and stubtest: _core.pyi against the compiled _core.
lint: $(VENV)/.lint
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy --strict src/hlcbus
	$(BIN)/python -m mypy.stubtest hlcbus._core --allowlist tests/stubtest_allowlist.txt

clean:
	rm -rf build dist $(VENV) src/hlcbus/_core.c src/hlcbus/*.so src/*.egg-info
