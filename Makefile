# Two commands for a newcomer:  `make reproduce` (the main job)  and  `make test`.
# Both create .venv on first use and install torch==2.13.0 (CPU) plus this package; the install
# step is keyed on pyproject.toml, so a second call installs nothing and starts at once.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: install test test-quick reproduce reproduce-embeddings lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## the test suite (CI runs exactly this through .ci/run)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## the quick subset for the development loop: everything but the end-to-end runs
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

## the main job: every experiment of the paper that exists so far, then its figures and tables
reproduce: reproduce-embeddings

reproduce-embeddings: $(STAMP)
	$(BIN)/python experiments/embed_mammals.py
	$(BIN)/python figures/fig_poincare_mammals.py

lint: $(STAMP)
	$(BIN)/ruff check hyperr1 tests experiments figures benchmarks scripts

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_head.py
	$(BIN)/python benchmarks/bench_embeddings.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
