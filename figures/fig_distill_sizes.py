"""Figure: retention against student size at the 16x budget, for distillation and for RL on the student.

Reads the ``runs.jsonl`` of the 16x sweep (``results/distill_chain_hard``, the 7.9% student) and of
its smaller-student copies (``results/distill_chain_hard_d8``, ``_d4``, ``_d2``: the same sweep with
a ``[student]`` table, ``experiments/configs/distill_sweep_chain_hard_<size>.toml``); never trains.
Retention is the student's held-out accuracy (mean of the two held-out splits, hops ≥ 3) over the
teacher's, per setup: the warm start alone (``sft_only``), GRPO on it (``student_grpo``) and the best
distillation recipe (``sft_gkd_hard``). A line joins each seed that every size has (one per seed,
fainter for later seeds); the other seeds of a size are faint points.

    python figures/fig_distill_sizes.py [--results results/distill_chain_hard ...]
                                        [--out figures/distill_sizes]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from figsave import save  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from distill_mammals import held_out  # noqa: E402

SWEEPS = ("distill_chain_hard", "distill_chain_hard_d8", "distill_chain_hard_d4", "distill_chain_hard_d2")
SETUPS = {"sft_only": "tab:gray", "student_grpo": "tab:blue", "sft_gkd_hard": "tab:green"}


def load(paths: list[Path]) -> list[dict]:
    """Every row of the sweeps' ``runs.jsonl`` files that exist (a missing sweep is skipped, named)."""
    rows = []
    for path in paths:
        file = path / "runs.jsonl"
        if not file.exists():
            print(f"fig_distill_sizes: {file} does not exist yet; that size is not drawn")
            continue
        rows += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, nargs="+", default=[Path("results") / s for s in SWEEPS])
    p.add_argument("--out", type=Path, default=Path("figures/distill_sizes"))
    args = p.parse_args()
    rows = [r for r in load(args.results) if r["setup"] in SETUPS and r["size"] == "default"]
    if not rows:
        print("fig_distill_sizes: no runs of the 16x sweeps yet; no figure drawn")
        return
    line_seeds = set.intersection(*({r["seed"] for r in rows if r["ratio"] == q} for q in {r["ratio"] for r in rows}))
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for setup, color in SETUPS.items():
        sel = [r for r in rows if r["setup"] == setup]
        ret = [(100 * r["ratio"], 100 * held_out(r, "student") / held_out(r, "teacher"), r) for r in sel]
        faint = [(x, y) for x, y, r in ret if r["seed"] not in line_seeds]
        if faint:
            ax.scatter(*zip(*faint, strict=True), color=color, alpha=0.35, s=14)
        for i, seed in enumerate(sorted(line_seeds)):
            pts = sorted((x, y) for x, y, r in ret if r["seed"] == seed)
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", color=color, alpha=1 - 0.25 * i, label=None if i else setup)
    ax.axhline(97, color="k", ls=":", lw=0.8, label="97% (DistilBERT, TinyBERT-4)")
    ax.axvline(10, color="tab:red", ls="--", lw=0.8, label="10% of the teacher")
    ax.set(
        xlabel="student parameters, % of the teacher",
        ylabel="retention, % of the teacher's held-out accuracy",
        xlim=(0, 11),
        ylim=(0, 105),
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Retention against student size, 16× student compute", fontsize=10)
    save(fig, args.out)


if __name__ == "__main__":
    main()
