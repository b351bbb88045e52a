# The two commands of the README: `make run` (the main job) and `make test`. Both set everything up first.
SHELL := /bin/bash
export MLFLOW_DISABLE_TELEMETRY ?= true
export MPLCONFIGDIR ?= $(CURDIR)/.mplconfig
PY := .venv/bin/python

.PHONY: setup test-deps run test lint
setup:
	@bash scripts/setup.sh

test-deps:
	@bash scripts/test-deps.sh

STUDY := learnable_prior-$(shell date +%Y%m%d-%H%M%S)

# The default study (N(0,I) vs the learnable prior, 3 seeds each, budget demo) on a local Ray into ./mlruns.db,
# then its report (what separates, tables, figures) in reports/$(STUDY).
run: setup
	$(PY) -m study.run --space learnable_prior --budget demo --name $(STUDY)
	$(PY) -m analysis.report --study $(STUDY) --out reports/$(STUDY)

test: setup test-deps lint
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
