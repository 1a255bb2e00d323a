#!/usr/bin/env bash
# The faithfulness reward (a process reward on the chain; hyperr1.rewards) as a documented variant:
# GRPO from the warm start of the head sweep's dim-8 seed-0 runs with grpo.w_faithfulness = 1
# beside accuracy and format, to compare with those runs (R1's accuracy + format only).
# Run after make reproduce-heads: bash experiments/faithfulness_variant.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONHASHSEED=0
for head in poincare euclidean; do
  extra=""; [ "$head" = euclidean ] && extra="--set grpo.lr=1e-3"
  .venv/bin/hyperr1 train --config "experiments/configs/mammals_$head.toml" --name "${head}_d8_s0_faith" --out runs/faith \
    --overwrite --warm-start-from "runs/heads/${head}_d8_s0" --set model.head_dim=8 --set tasks.warm_max_hops=4 \
    --set sft.epochs=10 --set grpo.steps=400 --set grpo.eval_every=100 --set grpo.checkpoint_every=100 --set eval.k=0 \
    --set grpo.w_faithfulness=1.0 $extra --quiet > "runs/faith/$head.log" 2>&1
  mkdir -p results/faithfulness && cp "runs/faith/${head}_d8_s0_faith/results.json" "results/faithfulness/${head}_d8_s0.json"
done
