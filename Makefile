# Two commands for a newcomer:  `make reproduce` (the main job)  and  `make test`.
# Both create .venv on first use and install torch==2.13.0 (CPU) plus this package; the install
# step is keyed on pyproject.toml, so a second call installs nothing and starts at once.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: install test test-quick reproduce reproduce-embeddings reproduce-grpo-quick reproduce-heads figures lint bench clean

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

## the main job: the embeddings, the GRPO pipeline in a quick profile (about 2 min), and every
## figure from the committed results (`make reproduce-heads` reruns the 18-run head sweep, ~1 h)
reproduce: reproduce-embeddings reproduce-grpo-quick figures

reproduce-embeddings: $(STAMP)
	$(BIN)/python experiments/embed_mammals.py
	$(BIN)/python figures/fig_poincare_mammals.py

QUICK := --name quick_poincare --overwrite --set sft.epochs=10 --set grpo.steps=200 --set grpo.eval_every=50 \
         --set grpo.checkpoint_every=100 --set eval.k=0

reproduce-grpo-quick: $(STAMP)
	$(BIN)/hyperr1 train --config experiments/configs/mammals_poincare.toml $(QUICK) --quiet > /dev/null
	$(BIN)/python figures/fig_grpo_curves.py runs/quick_poincare/grpo/metrics.jsonl \
		--out figures/grpo_curves_quick.png --title "GRPO, quick profile (10 warm-start epochs, 200 steps)"

reproduce-heads: $(STAMP)
	$(BIN)/python experiments/mammals_heads.py --quiet --workers 2 --worker 0 --threads 1 & \
	$(BIN)/python experiments/mammals_heads.py --quiet --workers 2 --worker 1 --threads 1; wait
	$(BIN)/python experiments/mammals_heads.py --quiet

figures: $(STAMP)
	$(BIN)/python figures/fig_heads.py
	$(BIN)/python figures/fig_grpo_curves.py results/mammals_heads/curves/poincare_d8_s*.jsonl \
		--out figures/grpo_curves.png --title "GRPO, Poincaré head, dim 8 (mean of 3 seeds)"

lint: $(STAMP)
	$(BIN)/ruff check hyperr1 tests experiments figures benchmarks scripts

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_head.py
	$(BIN)/python benchmarks/bench_embeddings.py
	$(BIN)/python benchmarks/bench_sampler.py
	$(BIN)/python benchmarks/bench_grpo.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
