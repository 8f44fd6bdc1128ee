# One way to do each thing; README and .ci/run call these targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install services build run demo test lint fmt bench migrations clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Everything: the package (builds the Rust extension in release mode) and the dev tools.
install: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

build: $(BIN)/python
	$(BIN)/maturin develop --release -q

# PostgreSQL and Redis for the self-hosted tests: start them if they are not answering.
services:
	@bash scripts/services.sh

# The main job on the embedded default: start the gateway, send real OpenAI-SDK requests.
demo: install
	$(BIN)/watchllm demo

run: install
	$(BIN)/watchllm serve

test: install services
	$(BIN)/ruff check watchllm tests bench
	$(BIN)/mypy
	cargo fmt --check
	cargo clippy --all-targets -q -- -D warnings
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo clippy --all-targets --features python -q -- -D warnings
	cargo test -q
	$(BIN)/python -m watchllm.metadata.export deploy --check
	$(BIN)/pytest -q -p no:cacheprovider

lint:
	$(BIN)/ruff check watchllm tests bench
	$(BIN)/mypy
	cargo fmt --check
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo clippy --all-targets --features python -q -- -D warnings

fmt:
	$(BIN)/ruff check --fix watchllm tests bench
	cargo fmt

bench: install
	$(BIN)/python bench/run_all.py

migrations:
	$(BIN)/python -m watchllm.metadata.export deploy

clean:
	rm -rf $(VENV) target .watchllm
