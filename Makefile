# Two commands for a newcomer:  `make reproduce` (the main job)  and  `make test`.
# Both create .venv on first use and install torch==2.13.0 (CPU) plus this package; the install
# step is keyed on pyproject.toml, so a second call installs nothing and starts at once.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: install test test-quick reproduce reproduce-embeddings reproduce-grpo-quick reproduce-distill-quick reproduce-heads figures lint bench docs wheel-check clean

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
reproduce: reproduce-embeddings reproduce-grpo-quick reproduce-distill-quick figures

reproduce-embeddings: $(STAMP)
	$(BIN)/python experiments/embed_mammals.py
	$(BIN)/python figures/fig_poincare_mammals.py

QUICK := --name quick_poincare --overwrite --set sft.epochs=10 --set grpo.steps=200 --set grpo.eval_every=50 \
         --set grpo.checkpoint_every=100 --set eval.k=0

reproduce-grpo-quick: $(STAMP)
	$(BIN)/hyperr1 train --config experiments/configs/mammals_poincare.toml $(QUICK) --quiet > /dev/null
	$(BIN)/python figures/fig_grpo_curves.py runs/quick_poincare/grpo/metrics.jsonl \
		--out figures/grpo_curves_quick.png --title "GRPO, quick profile (10 warm-start epochs, 200 steps)"
	$(BIN)/hyperr1 viz --input runs/quick_poincare --data mammals --out figures/poincare_policy --quiet > /dev/null

## a quick distillation of the quick teacher into the 7.9%-size Euclidean student
reproduce-distill-quick: $(STAMP)
	$(BIN)/hyperr1 distill --teacher runs/quick_poincare --config experiments/configs/distill_mammals.toml \
		--name quick_distill --overwrite --set distill.steps=200 --set distill.lam=0 --set distill.lr=1e-2 \
		--set distill.eval_every=100 --set distill.checkpoint_every=100 --quiet > /dev/null

reproduce-heads: $(STAMP)
	$(BIN)/python experiments/mammals_heads.py --quiet --workers 2 --worker 0 --threads 1 & \
	$(BIN)/python experiments/mammals_heads.py --quiet --workers 2 --worker 1 --threads 1; wait
	$(BIN)/python experiments/mammals_heads.py --quiet

figures: $(STAMP)
	$(BIN)/python figures/fig_heads.py
	$(BIN)/python figures/fig_grpo_curves.py results/mammals_heads/curves/poincare_d8_s*.jsonl \
		--out figures/grpo_curves.png --title "GRPO, Poincaré head, dim 8 (mean of 3 seeds)"

lint: $(STAMP)
	$(BIN)/ruff check hyperr1 tests experiments figures benchmarks scripts examples docs

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_head.py
	$(BIN)/python benchmarks/bench_embeddings.py
	$(BIN)/python benchmarks/bench_sampler.py
	$(BIN)/python benchmarks/bench_grpo.py

## the API reference (Sphinx autodoc of the docstrings) into docs/_build/html; any warning,
## e.g. from a broken docstring, fails the build
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

## build the sdist and the wheel from it, install the wheel (and torch==2.13.0) into a fresh venv
## outside the checkout, and run the README snippets against it from there, so that a file missing
## from the wheel fails (about 3 min, most of it installing torch and the other dependencies)
wheel-check: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/python -m build --outdir "$$tmp/dist" . > "$$tmp/build.log" 2>&1 || { cat "$$tmp/build.log"; exit 1; }; \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install -qq --no-compile torch==2.13.0 && \
	"$$tmp/venv/bin/python" -m pip install -qq --no-compile "$$tmp"/dist/hyperr1-*.whl pytest && \
	cd "$$tmp" && HYPERR1_WHEEL_CHECK=1 "$$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider \
		"$(CURDIR)/tests/test_readme.py"

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis docs/_build
