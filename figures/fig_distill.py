"""Figure: distillation — held-out accuracy per setup and the retention against student size.

Reads ``results/distill/runs.jsonl`` and ``sizes.json`` (``python experiments/distill_mammals.py``);
never trains. Left: each setup's student accuracy (mean of the two held-out splits, hops ≥ 3) with
its 95% t-interval over seeds and every seed as a point, beside the teacher's. Right: retention
(student / teacher accuracy) against the student's share of the teacher's parameters.

    python figures/fig_distill.py [--results results/distill] [--out figures/distill_retention]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from distill_mammals import SETUP_ORDER, held_out  # noqa: E402
from mammals_heads import mean_ci  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results/distill"))
    p.add_argument("--out", type=Path, default=Path("figures/distill_retention"))
    args = p.parse_args()
    path = args.results / "runs.jsonl"
    if not path.exists():
        print(f"fig_distill: {path} does not exist yet (python experiments/distill_mammals.py); no figure drawn")
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    main_rows = [r for r in rows if r["size"] == "default"]
    cells = sorted({(r["setup"], r["init"]) for r in main_rows}, key=lambda k: (SETUP_ORDER.index(k[0]), k[1]))
    fig, (ax, ax_s) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
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
    fig.suptitle("Distilling the Poincaré teacher into a tiny Euclidean student", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out.with_suffix(".png"), dpi=150)
    fig.savefig(args.out.with_suffix(".pdf"), metadata={"CreationDate": None})  # byte-identical redraws
    print(f"wrote {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
