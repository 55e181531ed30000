# Two commands for a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
# One BLAS/OpenMP thread per process: the stages pin torch to params (rl.common.threads,
# cnn_lstm.threads); numpy follows this, and two test workers share the 2 cores.
export OMP_NUM_THREADS ?= 1
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install run test bench deps lint clean

PLOTS_TEMPLATE := plots/offline/template.html

install: $(STAMP) $(PLOTS_TEMPLATE)  ## create .venv if needed and install (no-op when nothing changed)

# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e ".[dev,serve]"
	@touch $@

# `dvc plots show` offline: Vega, Vega-Lite, Vega-Embed from npm (pinned in plots/offline), inlined in the template.
$(PLOTS_TEMPLATE): plots/offline/package.json plots/offline/package-lock.json plots/offline/build_template.py | $(STAMP)
	$(PY) plots/offline/build_template.py

run: install  ## run the default pipeline on the embedded real dataset
	dvc repro
	trade-agent models export
	trade-agent train list
	cat reports/evaluation.md

test: install  ## run the test suite
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "could not install chromium: tests/test_offline_plots.py will skip"
	pytest -n 3

bench: install  ## benchmarks, as ratios against baselines measured in the same run
	$(PIP) -c constraints.txt -e ".[dev,serve,bench]"
	python benchmarks/run.py
	python benchmarks/learning.py   # the real pipeline on planted signals (~15 min)
	python benchmarks/walkforward_append.py   # a month appended: only the fold holding it re-runs (~4 min)
	dvc repro ensemble   # the registered ensemble the serving benchmark serves (restored when up to date)
	python benchmarks/serving.py   # POST /predict p50/p99 against the in-process predict call (~8 min)

deps: install  ## regenerate dvc.yaml's code deps from the stage scripts' import graph
	python -m trade_agent.devtools.stage_deps --write

lint: install
	ruff check trade_agent stages tests benchmarks
	mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
