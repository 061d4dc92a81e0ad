# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
# TORCH_SPEC picks the torch build. Its default installs the CPU wheel that lies on
# disk on the project's own machines; elsewhere it is an ordinary PyPI release. For a GPU
# build or an existing install: `make setup TORCH_SPEC=torch` (or any pip requirement).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo

.PHONY: setup demo test lint bench clean browser

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

# Headless Chromium for tests/test_report_browser.py: installed once on Debian when run as root
# (CI); elsewhere the test says why it is skipped. Quiet, and a no-op when a browser exists.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: no Chromium could be installed; the browser test will be skipped"

test: setup lint browser
	$(BIN)/python -m pytest -q --durations=15 tests

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
