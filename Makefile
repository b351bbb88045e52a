# The two commands of the README: `make run` (the main job) and `make test`. Both set everything up first.
SHELL := /bin/bash
export RAY_AUTH_MODE ?= disabled
export MLFLOW_DISABLE_TELEMETRY ?= true
export MPLCONFIGDIR ?= $(CURDIR)/.mplconfig
PY := .venv/bin/python

.PHONY: setup run test lint
setup:
	@bash scripts/setup.sh

STUDY := ablation_regularizers-$(shell date +%Y%m%d-%H%M%S)

# The default study on a local Ray into ./mlruns.db, then its report (tables, figures) in reports/$(STUDY).
run: setup
	$(PY) -m study.run --space ablation_regularizers --name $(STUDY)
	$(PY) -m analysis.report --study $(STUDY) --out reports/$(STUDY)

test: setup lint
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
