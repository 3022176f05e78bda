# The two commands of the README: `make demo` and `make test`. Both set everything up
# themselves (Debian packages, TimescaleDB, the virtualenv, a local database and broker).
SHELL := /bin/bash
VENV := .venv
STATE := .state
BIN := $(VENV)/bin
ENV := . $(STATE)/flowbill.env &&

.PHONY: setup stack demo test lint format bench stop compose-check

setup:
	@bash scripts/setup.sh

stack: setup
	@$(BIN)/flowbill stack up --dir $(STATE) >/dev/null
	@$(ENV) $(BIN)/flowbill migrate

demo: stack
	@$(ENV) $(BIN)/flowbill demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest

bench: setup
	@$(BIN)/python bench/ingest_throughput.py
	@$(BIN)/python bench/wallet_throughput.py
	@$(BIN)/python bench/allocation_throughput.py
	@$(BIN)/python bench/iot_cards_throughput.py
	@$(BIN)/python bench/driver_page.py
	@$(BIN)/python bench/device_identities.py

compose-check:
	@bash scripts/check-compose.sh

# Stops what `make demo` / `make bench` started, by their pids; safe when nothing runs.
stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m devstack.demo stop --dir $(STATE); fi
	@python3 -m devstack.localstack down --dir $(STATE)
