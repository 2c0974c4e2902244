# Quick start: `make run` (train DSH on the embedded data, print results), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/dsh

.PHONY: install run test lint clean

install: $(VENV)/.installed

# Re-install only when the package metadata changes.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: install
	$(BIN)/python launch.py --config=configs/dsh.py --workdir=$(WORKDIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# One worker per core, each test file on one worker (its module fixtures built once).
test: lint
	$(BIN)/python -m pytest -n auto --dist loadfile tests

clean:
	rm -rf $(VENV) runs *.egg-info
