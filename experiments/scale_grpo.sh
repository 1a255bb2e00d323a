#!/usr/bin/env bash
# The reasoning tasks on a larger hierarchy (issue 14): tasks + a short warm start + 60 GRPO steps on
# WordNet's animal.n.01 subtree (4,017 concepts, vocabulary 4,102) beside the same profile on the
# shipped mammals (1,170 concepts), each under /usr/bin/time -v for the peak memory.
# Run: bash experiments/scale_grpo.sh   (needs Debian's wordnet-base for wordnet:animal.n.01)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONHASHSEED=0
mkdir -p runs/scale results/scale_grpo
for data in mammals wordnet:animal.n.01; do
  name=$(echo "$data" | tr ':.' '__')
  /usr/bin/time -v .venv/bin/hyperr1 train --config experiments/configs/mammals_poincare.toml --name "$name" \
    --out runs/scale --overwrite --set data=\""$data"\" --set model.head_dim=8 --set sft.epochs=2 \
    --set grpo.steps=60 --set grpo.eval_every=60 --set grpo.checkpoint_every=60 --set eval.k=0 \
    --set grpo.eval_examples=100 --quiet > "runs/scale/$name.log" 2>&1
  cp "runs/scale/$name/results.json" "results/scale_grpo/$name.results.json"
  grep -E "Maximum resident|Elapsed|User time" "runs/scale/$name.log" > "results/scale_grpo/$name.time.txt"
  .venv/bin/python - "$name" <<'PY'
import json, statistics, sys
name = sys.argv[1]
rows = [json.loads(line) for line in open(f"runs/scale/{name}/grpo/metrics.jsonl")]
out = {k: statistics.median(r[k] for r in rows) for k in ("time/step_s", "time/sample_s")}
json.dump({"steps": len(rows), "median": out}, open(f"results/scale_grpo/{name}.steps.json", "w"), indent=1)
PY
done
