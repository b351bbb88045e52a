# The two commands of the README: `make run` (the main job) and `make test`. Both set everything up first.
SHELL := /bin/bash
export RAY_AUTH_MODE ?= disabled
export MLFLOW_DISABLE_TELEMETRY ?= true
export MPLCONFIGDIR ?= $(CURDIR)/.mplconfig
PY := .venv/bin/python

.PHONY: setup run test lint
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m core --dataset 8gaussians --prior vamp_to_mog --budget quick --out runs/quick

test: setup lint
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
