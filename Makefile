# Fresh machine: `make demo` runs the demo, `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test check fmt bench fuzz clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[cli,compression]'
	touch $@

$(VENV)/.test: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

demo: $(VENV)/.demo
	$(BIN)/glasspool demo

test: $(VENV)/.test
	$(MAKE) check

check:
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy --strict
	$(BIN)/pytest -q

fmt:
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(VENV)/.test
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/pool_ops.py

fuzz: $(VENV)/.test
	GLASSPOOL_FUZZ_EXAMPLES=5000 $(BIN)/pytest -q tests/test_fuzz.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
