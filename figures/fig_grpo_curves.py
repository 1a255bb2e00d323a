"""Figure: GRPO training curves — rewards (accuracy, format, total) and held-out accuracy per step.

Reads a run's metrics: either the ``grpo/metrics.jsonl`` of a run directory or a thinned copy in
``results/mammals_heads/curves/``; it never trains. Several files (e.g. the seeds of one setting)
are averaged per step.

    python figures/fig_grpo_curves.py results/mammals_heads/curves/poincare_d8_s*.jsonl --out figures/grpo_curves.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from figsave import save  # noqa: E402

REWARDS = (("reward/accuracy", "accuracy"), ("rate/format", "format"), ("reward/total", "total"))


def read_curves(paths: list[Path]) -> dict[str, dict[int, float]]:
    """metric → step → mean over the files that have it."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        if not path.exists():
            sys.exit(f"error: {path} does not exist")
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                for k, v in row.items():
                    if k != "step" and isinstance(v, int | float):
                        acc[k][row["step"]].append(float(v))
    return {k: {s: statistics.fmean(v) for s, v in sorted(by.items())} for k, by in acc.items()}


def smooth(points: dict[int, float], window: int) -> tuple[list[int], list[float]]:
    steps, values = list(points), list(points.values())
    if window <= 1 or len(values) < window:
        return steps, values
    out = [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]
    return steps, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", type=Path, nargs="+", help="metrics.jsonl files (averaged per step)")
    p.add_argument("--out", type=Path, default=Path("figures/grpo_curves.png"))
    p.add_argument("--smooth", type=int, default=10, help="moving-average window over logged points")
    p.add_argument("--title", default="")
    args = p.parse_args()
    curves = read_curves(args.metrics)
    fig, (ax_r, ax_e) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in REWARDS:
        if key in curves:
            ax_r.plot(*smooth(curves[key], args.smooth), label=label)
    ax_r.set(xlabel="GRPO step", ylabel="training reward (batch mean)", ylim=(0, 1.02))
    ax_r.legend(loc="lower right")
    for key in sorted(k for k in curves if k.startswith("eval/") and k.endswith("/accuracy")):
        split = key.split("/")[1].replace("test_", "")
        ax_e.plot(list(curves[key]), list(curves[key].values()), marker="o", label=split)
    ax_e.set(xlabel="GRPO step", ylabel="held-out accuracy (greedy, hops ≥ 3)", ylim=(0, 1))
    ax_e.legend(loc="lower right")
    fig.suptitle(args.title or f"GRPO on WordNet mammals ({len(args.metrics)} run(s))")
    save(fig, args.out)


if __name__ == "__main__":
    main()
