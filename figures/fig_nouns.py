"""Figure: MAP of the WordNet noun-closure embedding against training time.

Reads ``results/embeddings_nouns/entity.n.01_d*/history.jsonl`` (``python experiments/embed_nouns.py
--root entity.n.01 --dim D``); never trains. Each periodic point ranks a fixed random sample of
nodes against all 82,115 (an unbiased estimate of MAP); the last point of a run ranks every node.
Dashed lines: Nickel & Kiela's (2017, Table 1) MAP at the same dimension; dotted: the 0.90 target.

    python figures/fig_nouns.py [--results results/embeddings_nouns] [--out figures/nouns_map]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from figsave import save  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results/embeddings_nouns"))
    p.add_argument("--out", type=Path, default=Path("figures/nouns_map"))
    args = p.parse_args()
    runs = sorted(args.results.glob("entity.n.01_d*/history.jsonl"), key=lambda q: int(q.parent.name.split("_d")[1]))
    if not runs:
        print(f"fig_nouns: no {args.results}/entity.n.01_d*/history.jsonl yet (experiments/embed_nouns.py); no figure")
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for path, color in zip(runs, ("tab:blue", "tab:orange", "tab:green", "tab:purple"), strict=False):
        dim = int(path.parent.name.split("_d")[1])
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        minutes = [r["seconds"] / 60 for r in rows]
        ax.plot(minutes, [r["map"] for r in rows], "o-", ms=3, color=color, label=f"hyperr1, dim {dim}")
        full = [r for r in rows if not r["sample"]]
        if full:
            ax.plot([full[-1]["seconds"] / 60], [full[-1]["map"]], "D", color=color, mfc="white", ms=7)
        metrics = path.parent / "metrics.json"  # the run's own record of Nickel & Kiela's Table 1
        ref = json.loads(metrics.read_text()).get("reference_nickel_kiela", {}) if metrics.exists() else {}
        if str(dim) in ref:
            ax.axhline(ref[str(dim)]["map"], color=color, ls="--", lw=0.8, label=f"Nickel & Kiela, dim {dim}")
    ax.axhline(0.90, color="k", ls=":", lw=0.8, label="target 0.90")
    ax.set(xlabel="training minutes (2-core CPU, one thread)", ylabel="reconstruction MAP", ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("WordNet nouns (82,115 synsets): MAP against time; ◇ = full evaluation", fontsize=9)
    save(fig, args.out)


if __name__ == "__main__":
    main()
