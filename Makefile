# Two commands for a fresh machine:
#   make run       set up .venv and start the server on http://localhost:9487
#   make test      set up .venv, run the linter and the fast tests (units and API on generated images)
#   make test-all  the same plus the system tier: real servers, nginx, redis, the browser, fuzzing,
#                  SAM with random weights (what CI runs)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: setup setup-dev run test test-all lint clean

$(VENV)/.server: requirements_server.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements_server.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.server requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.server
setup-dev: $(VENV)/.dev

run: setup
	$(VENV)/bin/sam-droplet serve

lint: setup-dev
	$(VENV)/bin/ruff check .

test: setup-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not system"

test-all: setup-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
