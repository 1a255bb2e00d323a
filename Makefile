# Two commands for a newcomer:  `make reproduce` (the main job)  and  `make test`.
# Both create .venv on first use and install torch==2.13.0 (CPU) plus this package; the install
# step is keyed on pyproject.toml, so a second call installs nothing and starts at once.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: install test test-quick reproduce reproduce-embeddings reproduce-grpo-quick reproduce-distill-quick reproduce-heads reproduce-distill figures paper lint bench docs wheel-check clean

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

## the main job: the embeddings, the GRPO pipeline in a quick profile (one run of the head sweep:
## Poincaré head, dim 8, seed 0, about 3 min), a quick distillation of it, and every figure from the
## committed results (`make reproduce-heads` reruns the 40-run head sweep, `make reproduce-distill`
## the distillation experiment)
reproduce: reproduce-embeddings reproduce-grpo-quick reproduce-distill-quick figures

reproduce-embeddings: $(STAMP)
	$(BIN)/python experiments/embed_mammals.py
	$(BIN)/python figures/fig_poincare_mammals.py

# the head sweep's profile (experiments/configs/heads_sweep.toml) at dim 8, seed 0
QUICK := --name quick_poincare --overwrite --set model.head_dim=8 --set tasks.warm_max_hops=4 --set sft.epochs=10 \
         --set grpo.steps=400 --set grpo.eval_every=100 --set grpo.checkpoint_every=100 --set eval.k=0

reproduce-grpo-quick: $(STAMP)
	$(BIN)/hyperr1 train --config experiments/configs/mammals_poincare.toml $(QUICK) --quiet > /dev/null
	$(BIN)/python scripts/show_lift.py runs/quick_poincare/results.json
	$(BIN)/python figures/fig_grpo_curves.py runs/quick_poincare/grpo/metrics.jsonl \
		--out figures/grpo_curves_quick.png --title "GRPO, quick profile (Poincaré dim 8: 10 warm-start epochs, 400 steps)"
	$(BIN)/hyperr1 viz --input runs/quick_poincare --data mammals --out figures/poincare_policy --quiet > /dev/null

## a quick distillation of the quick teacher into the 7.9%-size Euclidean student
reproduce-distill-quick: $(STAMP)
	$(BIN)/hyperr1 distill --teacher runs/quick_poincare --config experiments/configs/distill_mammals.toml \
		--name quick_distill --overwrite --set distill.steps=200 --set distill.lam=0 --set distill.lr=1e-2 \
		--set distill.eval_every=100 --set distill.checkpoint_every=100 --quiet > /dev/null
	$(BIN)/hyperr1 viz --input runs/quick_distill --data mammals --out figures/student_policy --quiet > /dev/null

## the head comparison (40 runs, two workers sharing the grid; a killed sweep restarted skips the
## finished runs and resumes the interrupted ones), then its tables and figures
reproduce-heads: $(STAMP)
	mkdir -p runs
	$(BIN)/python experiments/mammals_heads.py --quiet --threads 1 > runs/heads_worker0.log 2>&1 & \
	$(BIN)/python experiments/mammals_heads.py --quiet --threads 1 > runs/heads_worker1.log 2>&1; wait
	$(BIN)/python experiments/mammals_heads.py --collect-only
	$(BIN)/python figures/fig_heads.py

## the teacher recipe (about 15 min of CPU) and the distillation experiment on it (23 runs)
reproduce-distill: $(STAMP)
	mkdir -p runs
	test -f runs/mammals_teacher/results.json || $(BIN)/hyperr1 train --config experiments/configs/mammals_teacher.toml --quiet
	$(BIN)/python experiments/distill_mammals.py --quiet --threads 1 > runs/distill_worker0.log 2>&1 & \
	$(BIN)/python experiments/distill_mammals.py --quiet --threads 1 > runs/distill_worker1.log 2>&1; wait
	$(BIN)/python experiments/distill_mammals.py --collect-only
	$(BIN)/python figures/fig_distill.py

figures: $(STAMP)
	$(BIN)/python figures/fig_heads.py
	$(BIN)/python figures/fig_grpo_curves.py results/heads/curves/poincare_d8_s*.jsonl \
		--out figures/grpo_curves.png --title "GRPO, Poincaré head, dim 8 (mean over the sweep's seeds)"
	$(BIN)/python figures/fig_distill.py
	$(BIN)/python figures/fig_distill_sizes.py
	$(BIN)/python figures/fig_nouns.py

## the paper: every figure from the committed results, the generated tables and quoted numbers
## (paper/generated/), then paper/hyperr1.pdf; installs LaTeX with apt when run as root and it is missing
paper: $(STAMP)
	$(MAKE) figures
	$(BIN)/python paper/make_tables.py
	@if ! command -v latexmk >/dev/null 2>&1 || ! command -v pdflatex >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
				texlive-latex-recommended texlive-fonts-recommended latexmk; \
		else \
			echo "error: make paper needs latexmk and pdflatex; install the Debian packages" \
				"texlive-latex-recommended texlive-fonts-recommended latexmk" >&2; \
			exit 1; \
		fi; \
	fi
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error hyperr1.tex && latexmk -c hyperr1.tex

lint: $(STAMP)
	$(BIN)/ruff check hyperr1 tests experiments figures benchmarks scripts examples docs paper

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
