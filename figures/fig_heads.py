"""Figures of the head comparison, from ``results/<sweep>/`` (``experiments/mammals_heads.py``); never trains.

- ``figures/heads.{png,pdf}``: held-out accuracy (mean of the two held-out splits, hops ≥ 3) of each
  head per dimension, warm start and after GRPO: the mean with its 95% t-interval over seeds, and
  every seed as a point beside it (a line joins the seed's warm start to its GRPO result);
- ``figures/heads_per_hop.{png,pdf}``: GRPO accuracy against the hop count of the query, per head
  and dimension (mean over seeds; both held-out splits pooled, weighted by their examples);
- ``figures/reflection.{png,pdf}``: over GRPO steps, the share of sampled completions with a
  ``wait`` retraction and the share of retractions that replace a wrong step with a right one.

    python figures/fig_heads.py [--results results/heads]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from figsave import save  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from mammals_heads import mean_ci, per_seed  # noqa: E402

STYLE = {"poincare": ("tab:red", "Poincaré"), "euclidean": ("tab:blue", "Euclidean")}


def _style(head: str) -> tuple[str, str]:
    return STYLE.get(head, ("tab:gray", head))


def summary(rows: list[dict], out: Path) -> None:
    dims = sorted({r["head_dim"] for r in rows})
    heads = [h for h in STYLE if any(r["head"] == h for r in rows)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / max(len(heads), 1)
    for i, head in enumerate(heads):
        color, label = _style(head)
        for j, dim in enumerate(dims):
            sel = [r for r in rows if r["head"] == head and r["head_dim"] == dim]
            seeds = sorted({r["seed"] for r in sel})
            if not seeds:
                continue
            x = j + (i - (len(heads) - 1) / 2) * width
            warm, grpo = per_seed(sel, seeds, "warm_start"), per_seed(sel, seeds, "grpo")
            for w, g in zip(warm, grpo, strict=True):
                ax.plot([x - 0.12, x + 0.12], [w, g], color=color, alpha=0.25, lw=0.8)
            ax.scatter([x - 0.12] * len(warm), warm, color=color, alpha=0.45, s=10, marker="o")
            ax.scatter([x + 0.12] * len(grpo), grpo, color=color, alpha=0.45, s=10, marker="s")
            for xx, values, marker in ((x - 0.12, warm, "o"), (x + 0.12, grpo, "s")):
                m, h = mean_ci(values)
                ax.errorbar([xx], [m], yerr=[h], color=color, marker=marker, ms=7, capsize=4, lw=2, mfc="white")
            if j == 0:
                ax.plot([], [], color=color, lw=2, label=f"{label} ({len(seeds)} seeds)")
    ax.plot([], [], "ko", mfc="white", label="warm start")
    ax.plot([], [], "ks", mfc="white", label="after GRPO")
    ax.set_xticks(range(len(dims)), labels=[f"head dim {d}" for d in dims])
    ax.set(ylabel="held-out accuracy (greedy, hops ≥ 3)", ylim=(0, 1))
    ax.set_title("Poincaré vs Euclidean head: mean ± 95% CI over seeds, each seed a point", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    save(fig, out)


def per_hop(rows: list[dict], out: Path) -> None:
    dims = sorted({r["head_dim"] for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(5 * len(dims), 3.6))
    axes = [axes] if len(dims) == 1 else list(axes)
    for ax, dim in zip(axes, dims, strict=True):
        for head in sorted({r["head"] for r in rows}):
            color, label = _style(head)
            for phase, ls in (("warm_start", ":"), ("grpo", "-")):
                sel = [r for r in rows if r["head"] == head and r["head_dim"] == dim and r["phase"] == phase]
                by_seed: dict[int, dict[int, list[float]]] = {}
                for r in sel:
                    for hops, (acc, n) in r.get("per_hop", {}).items():
                        cell = by_seed.setdefault(r["seed"], {}).setdefault(int(hops), [0.0, 0])
                        cell[0] += acc * n
                        cell[1] += n
                hops_all = sorted({k for s in by_seed.values() for k in s})
                seeds = list(by_seed.values())
                means = [statistics.fmean(s[k][0] / s[k][1] for s in seeds if k in s and s[k][1]) for k in hops_all]
                if hops_all:
                    name = f"{label}, {'GRPO' if phase == 'grpo' else 'warm start'}"
                    ax.plot(hops_all, means, color=color, ls=ls, marker="o", ms=3, label=name)
        ax.set(title=f"head dim {dim}", xlabel="hops of the query", ylabel="held-out accuracy", ylim=(0, 1))
        ax.legend(fontsize=7)
    save(fig, out)


def reflection(data: dict, out: Path) -> None:
    fig, (ax_r, ax_g) = plt.subplots(1, 2, figsize=(10, 3.6))
    for cell, series in sorted(data.items()):
        head, dim = cell.rsplit("_d", 1)
        color, label = _style(head)
        ls = "-" if dim == max((c.rsplit("_d", 1)[1] for c in data), key=int) else "--"
        ax_r.plot(series["step"], series["reflection_rate"], color=color, ls=ls, label=f"{label}, dim {dim}")
        good = [(s, g) for s, g in zip(series["step"], series["good_share"], strict=True) if g is not None]
        if good:
            ax_g.plot(*zip(*good, strict=True), color=color, ls=ls, marker=".", label=f"{label}, dim {dim}")
    ax_r.set(xlabel="GRPO step", ylabel="completions with a `wait` retraction", ylim=(0, None))
    ax_g.set(xlabel="GRPO step", ylabel="retractions that fix a wrong step", ylim=(0, 1))
    for ax in (ax_r, ax_g):
        ax.legend(fontsize=7)
    fig.suptitle("Reflection during GRPO (sampled completions, mean over seeds)", fontsize=10)
    save(fig, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results/heads"))
    p.add_argument("--out", type=Path, default=Path("figures"))
    args = p.parse_args()
    path = args.results / "runs.jsonl"
    if not path.exists():
        sys.exit(f"error: {path} is missing; run `python experiments/mammals_heads.py` first")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    summary(rows, args.out / "heads")
    if any("per_hop" in r for r in rows):
        per_hop(rows, args.out / "heads_per_hop")
    if (args.results / "reflection.json").exists():
        reflection(json.loads((args.results / "reflection.json").read_text()), args.out / "reflection")


if __name__ == "__main__":
    main()
