# Two commands for a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
# One BLAS/OpenMP thread per process: the stages pin torch to base.threads (trade_agent/threads.py);
# numpy follows this, and the test workers share the 2 cores.
export OMP_NUM_THREADS ?= 1
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install run test bench deps lint clean gpu-check gpu-wheelhouse

PLOTS_TEMPLATE := plots/offline/template.html

install: $(STAMP) $(PLOTS_TEMPLATE)  ## create .venv if needed and install (no-op when nothing changed)

# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e ".[dev,serve,scale]"
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
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
		|| echo "could not install postgresql: the PostgreSQL tests of tests/test_scale_out.py will skip"
	pytest -n 3

bench: install  ## benchmarks, as ratios against baselines measured in the same run
	$(PIP) -c constraints.txt -e ".[dev,serve,scale,bench]"
	python benchmarks/run.py
	python benchmarks/threads.py   # the thread plan: 1 vs 2 threads per kind of work, idle and under load (~2 min)
	dvc repro   # the whole pipeline, so the no-op benchmark times a no-op (restored when up to date)
	python benchmarks/noop_repro.py   # a no-op dvc repro against a toy pipeline of as many stages
	python benchmarks/learning.py   # the real pipeline on planted signals (~15 min)
	python benchmarks/walkforward_append.py   # a month appended: only the fold holding it re-runs (~4 min)
	python benchmarks/serving.py   # POST /predict p50/p99 against the in-process predict call (~8 min)

deps: install  ## regenerate dvc.yaml's code deps from the stage scripts' import graph
	python -m trade_agent.devtools.stage_deps --write

# On a CUDA machine (README: GPU check): the machine's own python and torch, no .venv and no install;
# the repository on PYTHONPATH, and the packages from wheels/ in .gpu-packages. Summary JSON:
# $GPU_CHECK_OUT, else reports/gpu-check.json. Without CUDA it runs nothing and exits 0.
# GPU_PYTHON: the python to use (default: python3, else python, from PATH).
GPU_PACKAGES := $(CURDIR)/.gpu-packages
gpu-check:  ## CUDA tests + trainer/distributed benchmarks on a GPU machine, <= 8 min, one JSON summary
	PYTHONPATH="$(CURDIR):$(GPU_PACKAGES)$${PYTHONPATH:+:$$PYTHONPATH}" \
		$(or $(GPU_PYTHON),$$(command -v python3 || command -v python)) -m trade_agent.devtools.gpu_check

# What gpu-check needs besides the GPU machine's preinstalled packages, for its Python 3.12 (no
# network there): requirements-gpu.txt at constraints.txt's versions; deepspeed, an sdist only, is
# built here as a pure-Python wheel. Never torch or nvidia-* wheels.
GPU_WHEEL_TAGS := --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
gpu-wheelhouse: | $(STAMP)  ## wheels/ (git-ignored, <= 60 MiB) for `make gpu-check` on a CUDA machine
	rm -rf wheels && mkdir wheels
	grep -Ev '^(#|deepspeed$$|$$)' requirements-gpu.txt > wheels/.binary.txt
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: $(GPU_WHEEL_TAGS) \
		-c constraints.txt -r wheels/.binary.txt -d wheels
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -c constraints.txt \
		-w wheels deepspeed
	rm wheels/.binary.txt
	@ls wheels/deepspeed-*-py3-none-any.whl >/dev/null || (echo "deepspeed did not build as a pure-Python wheel"; exit 1)
	@! ls wheels | grep -Ei '^(torch|nvidia|triton)' || (echo "torch/nvidia wheels must not be in wheels/"; exit 1)
	@ls -1 wheels; du -sh wheels
	@test $$(du -sm wheels | cut -f1) -le 60 || (echo "wheels/ is over 60 MiB"; exit 1)

lint: install
	ruff check trade_agent stages tests benchmarks
	mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
