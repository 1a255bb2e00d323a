"""Figure: held-out accuracy of the Poincaré and Euclidean heads against head dimension, before
and after GRPO (mean over seeds and the two held-out splits, 95% t-interval over seeds).

Reads ``results/mammals_heads/runs.jsonl`` (``python experiments/mammals_heads.py``); never trains.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path("results/mammals_heads/runs.jsonl")
OUT = Path("figures/heads.png")
T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571}


def main() -> None:
    if not RESULTS.exists():
        sys.exit(f"error: {RESULTS} is missing; run `python experiments/mammals_heads.py` first")
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = {"poincare": ("tab:red", "Poincaré"), "euclidean": ("tab:blue", "Euclidean")}
    for head, (color, label) in styles.items():
        for phase, ls in (("warm_start", ":"), ("grpo", "-")):
            dims = sorted({r["head_dim"] for r in rows if r["head"] == head})
            means, halfs = [], []
            for d in dims:
                seeds = sorted({r["seed"] for r in rows if r["head"] == head and r["head_dim"] == d})
                per_seed = [
                    statistics.fmean(
                        r["accuracy"]
                        for r in rows
                        if r["head"] == head and r["head_dim"] == d and r["seed"] == s and r["phase"] == phase
                    )
                    for s in seeds
                ]
                means.append(statistics.fmean(per_seed))
                n = len(per_seed)
                halfs.append(T95.get(n, 1.96) * statistics.stdev(per_seed) / math.sqrt(n) if n > 1 else 0.0)
            if dims:
                name = f"{label}, {'GRPO' if phase == 'grpo' else 'warm start'}"
                ax.errorbar(dims, means, yerr=halfs, color=color, ls=ls, marker="o", capsize=3, label=name)
    ax.set(xscale="log", xlabel="head dimension", ylabel="held-out accuracy (hops ≥ 3)", ylim=(0, 1))
    ax.set_xticks([2, 8, 32], labels=["2", "8", "32"])
    ax.set_xticks([], minor=True)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT, dpi=150)
    fig.savefig(OUT.with_suffix(".pdf"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
