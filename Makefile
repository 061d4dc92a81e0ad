# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
# TORCH_SPEC picks the torch build. Its default installs the CPU wheel that lies on
# disk on the project's own machines; elsewhere it is an ordinary PyPI release. For a GPU
# build or an existing install: `make setup TORCH_SPEC=torch` (or any pip requirement).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo

.PHONY: setup demo test lint bench clean

$(BIN)/.rlvr-lens-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.rlvr-lens-installed

demo: setup
	$(BIN)/rlvr-lens demo --out $(DEMO_OUT)

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup lint
	$(BIN)/python -m pytest -q --durations=15 tests

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
