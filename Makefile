# frozen-scalars: every target builds its own virtualenv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= artifacts
NAME ?= reference
TARGET ?= 127.0.0.1:8500
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)

.PHONY: venv export test test-all lint bench bench-large docker-build deploy parity-remote clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

venv: $(VENV)/.installed

## Train the reference model on real data, export it frozen, serve it, prove parity through gRPC.
export: venv
	$(PY) -m exporter.reference --out $(OUT) --name $(NAME)
	$(PY) -m serving parity --export $(OUT) --model_name $(NAME) \
		--model $(OUT)/keras/$(NAME).keras --json $(OUT)/reports/$(NAME)/parity.json

## The test suite (slow load/soak runs excluded), plus lint.
test: venv lint
	$(PY) -m pytest -q

test-all: venv lint
	$(PY) -m pytest -q -m ''

lint: venv
	$(PY) -m ruff check exporter serving tests bench

bench: venv
	$(PY) -m bench

bench-large: venv
	$(PY) -m bench --large

clean:
	rm -rf $(OUT) .pytest_cache
