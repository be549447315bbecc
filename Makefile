# frozen-scalars: every target builds its own virtualenv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= artifacts
NAME ?= reference
TARGET ?= 127.0.0.1:8500
REST_TARGET ?=
IMAGE ?= frozen-scalars/tfserving
KERAS_REF = $(if $(wildcard $(OUT)/keras/$(NAME).keras),--model $(OUT)/keras/$(NAME).keras)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)

.PHONY: venv export test test-all lint bench bench-large soak docker-build deploy manifests parity-remote clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

venv: $(VENV)/.installed

## Train the reference model on real data, export it frozen, serve it, prove parity through gRPC.
export: venv
	$(PY) examples/reference.py --out $(OUT) --name $(NAME)
	$(PY) -m exporter parity --export $(OUT) --model-name $(NAME) \
		--model $(OUT)/keras/$(NAME).keras --json $(OUT)/reports/$(NAME)/parity.json

## The test suite (slow load/soak runs excluded), plus lint.
test: venv lint
	$(PY) -m pytest -q

test-all: venv lint
	$(PY) -m pytest -q -m ''

lint: venv
	$(PY) -m ruff format --check exporter serving tests bench tools examples
	$(PY) -m ruff check exporter serving tests bench tools examples

bench: venv
	$(PY) -m bench

bench-large: venv
	$(PY) -m bench --large

## Build the TF Serving image with artifacts/tfserving baked in (serves MODEL_NAME=$(NAME)).
docker-build:
	@ls $(OUT)/tfserving/$(NAME)/*/saved_model.pb >/dev/null 2>&1 || { echo "error: no $(OUT)/tfserving/$(NAME)/<version>/saved_model.pb: run 'make export' first" >&2; exit 2; }
	docker build -f docker/Dockerfile --build-arg MODEL_NAME=$(NAME) -t $(IMAGE):$(NAME) .

## Start it with compose (gRPC 8500, REST 8501), wait until healthy, then prove parity through it.
deploy: docker-build venv
	MODEL_NAME=$(NAME) docker compose -f docker/docker-compose.yml up -d --no-build --wait tfserving
	$(PY) -m exporter parity --export $(OUT) --model-name $(NAME) $(KERAS_REF) \
		--target 127.0.0.1:8500 --rest-target 127.0.0.1:8501 --json $(OUT)/reports/$(NAME)/parity-docker.json

## Kubernetes + KServe manifests for the export: make manifests [STORAGE_URI=s3://bucket/path]
manifests: venv
	$(PY) -m exporter deploy --out $(OUT) --name $(NAME) $(if $(STORAGE_URI),--storage-uri $(STORAGE_URI))

## Parity against any running TF Serving: make parity-remote TARGET=host:8500 [REST_TARGET=host:8501]
parity-remote: venv
	$(PY) -m exporter parity --export $(OUT) --model-name $(NAME) $(KERAS_REF) --target $(TARGET) \
		$(if $(REST_TARGET),--rest-target $(REST_TARGET)) --json $(OUT)/reports/$(NAME)/parity-remote.json

clean:
	rm -rf $(OUT) .pytest_cache

## Reliability soak (issue 8): warm swaps of a 50M model under 8 gRPC clients, RSS across 10
## swaps, the malformed-request catalogue; writes bench/results/soak.json. ~2 min here.
soak: venv
	$(PY) -m bench.soak
