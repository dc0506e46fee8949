# orch-tui: every target sets itself up from nothing (venv, project, Debian packages).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := screen tmux shellcheck chromium
RECIPE ?= recipes/demo_screen_dash_ctx.yaml

.PHONY: help setup system-deps demo test lint format bench screenshots clean distclean

help:
	@echo "make demo    set up, then run the demo recipe ($(RECIPE))"
	@echo "make test    set up, then lint and run the test suite"
	@echo "make bench   set up, then run the benchmarks (bench/results.json)"
	@echo "make clean   remove runs (orch-tui clean) and this repo's caches;  make distclean: the venv too"

setup: system-deps $(STAMP)

# Debian packages: installed when missing and we are root; otherwise we say what to install.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "warning: missing$$missing; install with: sudo apt-get install$$missing" >&2; \
	    echo "         (tests that need them are skipped)" >&2; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "orch-tui needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/orch-tui $(RECIPE)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The peers (doit, go-task) and matplotlib for bench/scaling.png go into the venv; a peer that
# cannot be installed is left out of the figures (and said so), not a failure.
bench: setup
	$(PY) -m pip install -q doit go-task-bin matplotlib || echo "warning: some bench peers missing" >&2
	$(PY) bench/run.py

screenshots: setup
	$(PY) -m tui.screenshots

# The runs go through `orch-tui clean` (it keeps a run still going); the rest is what this
# repository's own tools leave: caches, egg-info, a crashed benchmark's folders. Nothing else.
clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis *.egg-info bench/results.json.tmp snapshot_report.html .orch/bench-*
	find . -path ./.venv -prune -o -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
	@if [ -x $(VENV)/bin/orch-tui ]; then $(VENV)/bin/orch-tui clean; \
	elif [ -e .orch ]; then echo "orch-tui is not installed: .orch/ left alone (make setup, then make clean)"; fi

distclean: clean
	rm -rf $(VENV)
