# Two commands on a fresh machine:
#   make demo   - create .venv, install qkv, train a tiny Transformer and show what it learned
#   make test   - create .venv, install qkv with its test extras, run `make lint`, then the whole test suite
#   make lint   - linter (ruff), type check (mypy) and import contract (lint-imports), as configured in pyproject.toml
#   make course - the course's notebooks in JupyterLab (127.0.0.1 only), opened on the first one
#   make course-html - execute every notebook (en and ko) and write static HTML to course/html/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Extras the test suite exercises (each test that needs an extra skips cleanly without it).
TEST_EXTRAS ?= test,serve,interop,bench,course

.PHONY: demo test lint setup setup-test browser clean course course-html

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $@

$(VENV)/.installed-course: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[course]'
	touch $@

# JupyterLab opens the course's percent-format .py files as notebooks (jupytext's viewer made the
# default for Python files, in this environment's settings only); course/jupytext.toml says how
# they are saved back.
$(VENV)/.installed-lab: $(VENV)/.installed-course
	$(BIN)/python -m pip install --quiet -e '.[course,lab]'
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp course/jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
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
	$(BIN)/ruff check src tests recipes benchmarks course/build.py
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup-test browser lint
	$(BIN)/python -m pytest -q

# From course/, so that the file to open is found both from here and from JupyterLab's root
# (--allow-root only where make itself runs as root, as in a container).
course: $(VENV)/.installed-lab
	cd course && $(abspath $(BIN))/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=. \
	  $(if $(filter 0,$(shell id -u)),--allow-root) en/00_before_attention.py

course-html: $(VENV)/.installed-course
	$(BIN)/python course/build.py

clean:
	rm -rf $(VENV) runs course/runs course/html .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
