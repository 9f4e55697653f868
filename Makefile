# Two commands on a fresh machine (see README):
#   make demo   set up .venv + Jupyter kernel, render the demo world, run the whole pipeline (dvc repro)
#   make test   set up .venv + Jupyter kernel, run the test suite
# Both are idempotent: a second run reinstalls nothing and `dvc repro` is a no-op when nothing changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-fast lab lock

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}; run: make PYTHON=python3.11 ..."'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24,<27"
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --user --name mblip --display-name "Python (mblip)" >/dev/null
	touch $(STAMP)

demo: setup
	$(BIN)/mblip fetch
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e"

lab: setup
	$(BIN)/jupyter lab --no-browser notebooks/

# Re-pin every transitive package after changing requirements.txt.
lock: setup
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > constraints.txt
