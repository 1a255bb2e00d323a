"""Figure: distillation — held-out accuracy per setup and the retention against student size.

Reads ``results/distill/runs.jsonl`` and ``sizes.json`` (``python experiments/distill_mammals.py``);
never trains. Left: each setup's student accuracy (mean of the two held-out splits, hops ≥ 3) with
its 95% t-interval over seeds and every seed as a point, beside the teacher's. Right: retention
(student / teacher accuracy) against the student's share of the teacher's parameters. With
``results/distill_long/runs.jsonl`` (the 4x-compute sweep, ``distill_sweep_long.toml``) a third
panel shows retention at 1x and 4x student compute for the setups both sweeps ran.

    python figures/fig_distill.py [--results results/distill] [--long results/distill_long]
                                  [--out figures/distill_retention]
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
from distill_mammals import SETUP_ORDER, held_out  # noqa: E402
from mammals_heads import mean_ci  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results/distill"))
    p.add_argument("--long", type=Path, default=Path("results/distill_long"))
    p.add_argument("--out", type=Path, default=Path("figures/distill_retention"))
    args = p.parse_args()
    path = args.results / "runs.jsonl"
    if not path.exists():
        print(f"fig_distill: {path} does not exist yet (python experiments/distill_mammals.py); no figure drawn")
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    main_rows = [r for r in rows if r["size"] == "default"]
    cells = sorted({(r["setup"], r["init"]) for r in main_rows}, key=lambda k: (SETUP_ORDER.index(k[0]), k[1]))
    long_path = args.long / "runs.jsonl"
    long_rows = []
    if long_path.exists():
        long_rows = [json.loads(line) for line in long_path.read_text().splitlines() if line.strip()]
    widths = [2, 1, 1] if long_rows else [2, 1]
    fig, axes = plt.subplots(1, len(widths), figsize=(5.5 * sum(widths) / 2, 3.8), gridspec_kw={"width_ratios": widths})
    ax, ax_s = axes[0], axes[1]
    for i, (setup, init) in enumerate(cells):
        acc = [held_out(r, "student") for r in main_rows if r["setup"] == setup and r["init"] == init]
        m, h = mean_ci(acc)
        color = "tab:green" if init == "logmap" else "tab:gray"
        ax.scatter([i] * len(acc), acc, color=color, alpha=0.5, s=12)
        ax.errorbar([i], [m], yerr=[h], color=color, marker="D", capsize=4, mfc="white")
    teacher = [held_out(r, "teacher") for r in main_rows]
    if teacher:
        ax.axhline(sum(teacher) / len(teacher), color="tab:red", ls="--", label="Poincaré teacher")
    ax.set_xticks(range(len(cells)), labels=[f"{s}\n{i}" for s, i in cells], fontsize=7)
    ax.set(ylabel="student held-out accuracy (hops ≥ 3)", ylim=(0, 1))
    ax.scatter([], [], color="tab:green", label="log-map init")
    ax.scatter([], [], color="tab:gray", label="random init")
    ax.legend(fontsize=7, loc="upper left")
    sizes_path = args.results / "sizes.json"
    sizes = json.loads(sizes_path.read_text()) if sizes_path.exists() else []
    if sizes:
        ax_s.plot([100 * s["ratio"] for s in sizes], [100 * s["retention"] for s in sizes], "o-", color="tab:green")
        for s in sizes:
            ax_s.annotate(f"{s['params']:,}", (100 * s["ratio"], 100 * s["retention"]), fontsize=7)
    ax_s.axhline(97, color="k", ls=":", lw=0.8, label="97% (DistilBERT, TinyBERT-4)")
    ax_s.set(xlabel="student parameters, % of the teacher", ylabel="retention, % of the teacher's accuracy")
    ax_s.set_ylim(0, 105)
    ax_s.legend(fontsize=7)
    if long_rows:
        compute_panel(axes[2], main_rows, [r for r in long_rows if r["size"] == "default"])
    fig.suptitle("Distilling the Poincaré teacher into a tiny Euclidean student", fontsize=10)
    save(fig, args.out)


def compute_panel(ax, base: list[dict], long: list[dict]) -> None:
    """Retention (% of the teacher) at 1x and 4x student compute, mean and 95% t-interval over seeds."""
    cells = sorted({(r["setup"], r["init"]) for r in long}, key=lambda k: (SETUP_ORDER.index(k[0]), k[1]))
    colors = ("tab:blue", "tab:orange", "tab:purple", "tab:brown")
    for i, ((setup, init), color) in enumerate(zip(cells, colors, strict=False)):
        shift, points = 0.12 * (i - (len(cells) - 1) / 2), []
        for factor, rows in ((1, base), (4, long)):
            sel = [r for r in rows if (r["setup"], r["init"]) == (setup, init)]
            ret = [100 * held_out(r, "student") / held_out(r, "teacher") for r in sel]
            if ret:
                m, h = mean_ci(ret)
                points.append((factor + shift, m, h))
                ax.scatter([factor + shift] * len(ret), ret, color=color, alpha=0.4, s=10)
        xs, ms, hs = zip(*points, strict=True)
        ax.errorbar(xs, ms, yerr=hs, color=color, marker="D", capsize=3, mfc="white", label=f"{setup} ({init})")
    ax.axhline(97, color="k", ls=":", lw=0.8)
    ax.set(xlabel="student compute (× main sweep)", ylabel="retention, %", xlim=(0.4, 4.6), ylim=(0, 105))
    ax.set_xticks([1, 4], labels=["1×", "4×"])
    ax.legend(fontsize=7, loc="lower right")


if __name__ == "__main__":
    main()
