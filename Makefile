# Two commands on a fresh machine:
#   make demo   - create .venv, install qkv, train a tiny Transformer and show what it learned
#   make test   - create .venv, install qkv with its test extras, run `make lint`, then the whole test suite
#   make lint   - linter (ruff), type check (mypy) and import contract (lint-imports), as configured in pyproject.toml
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Extras the test suite exercises (each test that needs an extra skips cleanly without it).
TEST_EXTRAS ?= test,serve,interop,bench

.PHONY: demo test lint setup setup-test browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

demo: setup
	$(BIN)/qkv demo

# The explorer's end-to-end test drives a real headless Chromium (Debian's package; no download
# of a browser build), and fonts-nanum draws Korean (the pages in Korean, the explain page's pictures).
# Installed when missing and apt-get is usable; otherwise the browser test skips.
browser:
	@{ command -v chromium >/dev/null 2>&1 && [ -d /usr/share/fonts/truetype/nanum ]; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium fonts-nanum >/dev/null) || echo "chromium not installed: the browser test will skip"; }

lint: setup-test
	$(BIN)/ruff check src tests recipes benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup-test browser lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
