# Fresh machine: `make demo` runs the demo, `make test` runs every check.
# Development tools are installed from constraints.txt (the lock); `make lock` refreshes it.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := constraints.txt
FLOOR := constraints-floor.txt
PIP_VERSION := 26.3
# Other interpreters for the version matrix (pyenv's by default; override with PY312=...).
PY312 ?= $(shell pyenv prefix 3.12 2>/dev/null)/bin/python
PY313 ?= $(shell pyenv prefix 3.13 2>/dev/null)/bin/python
# The soak and fuzz runs are left to the default interpreter's full run.
QUICK := -m 'not soak' --deselect tests/test_fuzz.py
RUNTIME_DEPS := httptools|yarl|multidict|aiohappyeyeballs|brotli|zstandard|rich|redis|uvloop|aiohttp|httpx

.PHONY: demo test check fmt bench fuzz clean lock test-uvloop test-py312 test-py313 \
	test-floor test-matrix venv-check

# A .venv made by another Python (or a broken one) is rebuilt, and says so.
venv-check:
	@if [ -e $(BIN)/python ] && ! [ "$$($(BIN)/python -c 'import sys; print(sys.version)' 2>/dev/null)" = "$$($(PY) -c 'import sys; print(sys.version)')" ]; then \
		echo "$(VENV) was made with another Python than $(PY): rebuilding it"; \
		rm -rf $(VENV); \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==$(PIP_VERSION)

$(VENV)/.demo: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/pip install -q -c $(LOCK) -e '.[cli,compression]'
	touch $@

$(VENV)/.test: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/pip install -q -c $(LOCK) -e '.[test,bench,speed,package]'
	touch $@

demo: venv-check
	@$(MAKE) --no-print-directory $(VENV)/.demo
	$(BIN)/glasspool demo

test: venv-check
	@$(MAKE) --no-print-directory $(VENV)/.test
	$(MAKE) check

check:
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy --strict
	$(BIN)/pytest -q

fmt:
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

# The whole suite on uvloop (tests/conftest.py reads GLASSPOOL_TEST_LOOP).
test-uvloop: venv-check
	@$(MAKE) --no-print-directory $(VENV)/.test
	GLASSPOOL_TEST_LOOP=uvloop $(BIN)/pytest -q $(QUICK)

# The suite on Python 3.12 and 3.13, each in its own venv, on both loops.
test-py312:
	$(MAKE) --no-print-directory VENV=.venv-3.12 PY=$(PY312) _test-other
test-py313:
	$(MAKE) --no-print-directory VENV=.venv-3.13 PY=$(PY313) _test-other
_test-other: venv-check
	@test -x $(PY) || { echo "no interpreter at $(PY): install it (pyenv install) or set it"; exit 1; }
	@$(MAKE) --no-print-directory $(VENV)/.test
	$(BIN)/pytest -q $(QUICK)
	GLASSPOOL_TEST_LOOP=uvloop $(BIN)/pytest -q $(QUICK)

# The lowest runtime dependency versions pyproject.toml admits, with the locked tools.
test-floor:
	$(MAKE) --no-print-directory VENV=.venv-floor _test-floor
_test-floor: venv-check $(BIN)/python
	grep -v -E '^($(RUNTIME_DEPS))==' $(LOCK) > $(VENV)/tools.txt
	$(BIN)/pip install -q -c $(VENV)/tools.txt -c $(FLOOR) -e '.[test,bench,speed]'
	$(BIN)/pip check
	# Packaging is checked by `make test`: twine needs a newer rich than the cli floor.
	$(BIN)/pytest -q $(QUICK) --deselect tests/test_packaging.py

# What CI runs after `make test`.
test-matrix: test-uvloop test-py312 test-py313 test-floor

# Refresh the lock on purpose: newest versions of everything, then the full suite.
lock:
	rm -rf .venv-lock
	$(PY) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q pip==$(PIP_VERSION)
	.venv-lock/bin/pip install -q -e '.[test,bench,speed,package]'
	{ sed -n '1,3p' $(LOCK); .venv-lock/bin/pip freeze --exclude-editable | grep -v '^#'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock
	$(MAKE) test

bench: venv-check
	@$(MAKE) --no-print-directory $(VENV)/.test
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/pool_ops.py
	$(BIN)/python benchmarks/eviction.py
	$(BIN)/python benchmarks/eviction.py --uvloop

fuzz: venv-check
	@$(MAKE) --no-print-directory $(VENV)/.test
	GLASSPOOL_FUZZ_EXAMPLES=5000 $(BIN)/pytest -q tests/test_fuzz.py

clean:
	rm -rf $(VENV) .venv-3.12 .venv-3.13 .venv-floor .venv-lock build dist src/*.egg-info
