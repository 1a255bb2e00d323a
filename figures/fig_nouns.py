"""Figure: MAP of the WordNet noun-closure embedding against training time.

Reads ``results/embeddings_nouns/entity.n.01_d*/history.jsonl`` and each run's ``config.json``
(``python experiments/embed_nouns.py --root entity.n.01 --dim D [--init-scheme hierarchy]``); never
trains. Left: MAP; right: mean rank (the construction's runs trade one for the other). Each
periodic point ranks a fixed random sample of nodes against all 82,115 (an unbiased estimate of
MAP); the last point of a run ranks every node. Runs with a seed other than 0 (repeats) are
left out; ``summary.md`` lists them.
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


def run_label(config: dict) -> str:
    init = config.get("init_scheme", "uniform")
    start = "uniform init" if init == "uniform" else f"{init} init"
    margin = "" if config.get("boundary_eps", 1e-10) == 1e-10 else f", ε = {config['boundary_eps']:g}"
    return f"dim {config['dim']}, {start}, η = {config['lr']:g}{margin}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results/embeddings_nouns"))
    p.add_argument("--out", type=Path, default=Path("figures/nouns_map"))
    args = p.parse_args()
    runs = sorted(args.results.glob("entity.n.01_d*/history.jsonl"), key=lambda q: q.parent.name)
    if not runs:
        print(f"fig_nouns: no {args.results}/entity.n.01_d*/history.jsonl yet (experiments/embed_nouns.py); no figure")
        return
    fig, (ax, ax_rank) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {10: ("tab:blue", "tab:cyan", "tab:purple", "navy"), 5: ("tab:orange", "tab:red", "tab:brown", "gold")}
    used: dict[int, int] = {}
    references: dict[int, float] = {}
    for path in runs:
        config = json.loads((path.parent / "config.json").read_text())["config"]
        if config.get("seed", 0) != 0:
            continue  # repeats of a run with other seeds: their final values are in summary.md
        dim = config["dim"]
        palette = colors.get(dim, ("tab:green", "tab:olive", "tab:gray", "black"))
        color = palette[used.get(dim, 0) % len(palette)]
        used[dim] = used.get(dim, 0) + 1
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        minutes = [r["seconds"] / 60 for r in rows]
        style = "o-" if config.get("init_scheme", "uniform") == "uniform" else "s-"
        ax.plot(minutes, [r["map"] for r in rows], style, ms=3, color=color, label=run_label(config))
        ax_rank.plot(minutes, [r["mean_rank"] for r in rows], style, ms=3, color=color, label=run_label(config))
        full = [r for r in rows if not r["sample"]]
        if full:
            ax.plot([full[-1]["seconds"] / 60], [full[-1]["map"]], "D", color=color, mfc="white", ms=7)
            ax_rank.plot([full[-1]["seconds"] / 60], [full[-1]["mean_rank"]], "D", color=color, mfc="white", ms=7)
        metrics = path.parent / "metrics.json"  # the run's own record of Nickel & Kiela's Table 1
        ref = json.loads(metrics.read_text()).get("reference_nickel_kiela", {}) if metrics.exists() else {}
        if str(dim) in ref:
            references[dim] = ref[str(dim)]
    for dim, ref in sorted(references.items(), reverse=True):
        color = colors.get(dim, ("tab:green",))[0]
        ax.axhline(ref["map"], color=color, ls="--", lw=0.8, label=f"Nickel & Kiela, dim {dim}")
        ax_rank.axhline(ref["mean_rank"], color=color, ls="--", lw=0.8)
    ax.axhline(0.90, color="k", ls=":", lw=0.8, label="target 0.90")
    ax.set(xlabel="training minutes (2-core CPU, one thread)", ylabel="reconstruction MAP", ylim=(0, 1))
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title("MAP against time; ◇ = full evaluation", fontsize=9)
    ax_rank.set(xlabel="training minutes (2-core CPU, one thread)", ylabel="mean rank (log)", yscale="log")
    ax_rank.set_title("mean rank against time (dashed: Nickel & Kiela)", fontsize=9)
    fig.suptitle("WordNet nouns (82,115 synsets)", fontsize=10)
    fig.tight_layout()
    save(fig, args.out)


if __name__ == "__main__":
    main()
