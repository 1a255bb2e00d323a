"""Poincaré vs Euclidean head at head dimensions 2, 8 and 32, three seeds each, on mammals.

Every run is the full pipeline of ``hyperr1 train`` (warm start → GRPO → held-out evaluation on
queries with ≥ 3 hops) from ``experiments/configs/mammals_<head>.toml`` with ``model.head_dim`` and
``seed`` overridden. Runs go to ``runs/mammals_heads/<head>_d<dim>_s<seed>/``; a finished run (one
with ``results.json``) is skipped and an interrupted one resumed, so the script can be stopped and
restarted. The collected
numbers go to ``results/mammals_heads/runs.jsonl`` and ``table.md``, and a thinned copy of each
run's training curves to ``results/mammals_heads/curves/<run>.jsonl`` (for the figures).

    python experiments/mammals_heads.py [--seeds 0 1 2] [--dims 2 8 32] [--heads poincare euclidean]

On a 2-core machine two workers with one thread each finish the grid in about half the time
(the model is too small for two threads to help one run):

    python experiments/mammals_heads.py --workers 2 --worker 0 --threads 1 &
    python experiments/mammals_heads.py --workers 2 --worker 1 --threads 1; wait
    python experiments/mammals_heads.py        # collects the table once both are done
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch
from scipy import stats

from hyperr1.pipeline import load_train_config, run_train

CONFIGS = Path(__file__).parent / "configs"
SPLITS = ("test_unseen_pair", "test_unseen_subject")


CURVE_KEYS = ("reward/total", "reward/accuracy", "rate/format", "grpo/kl", "curriculum/max_hops")


def export_curves(metrics: Path, out: Path, every: int = 10) -> None:
    """A small copy of a run's metrics for the figures: means of CURVE_KEYS over blocks of
    ``every`` steps (labelled by the block's last step) and every evaluation row's accuracies."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    lines = []
    for i in range(0, len(rows) - every + 1, every):
        block = rows[i : i + every]
        lines.append({"step": block[-1]["step"], **{k: statistics.fmean(r[k] for r in block) for k in CURVE_KEYS}})
    for r in rows:
        evals = {k: v for k, v in r.items() if k.startswith("eval/") and "@" not in k and k.endswith("/accuracy")}
        if evals:
            lines.append({"step": r["step"], **evals})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in sorted(lines, key=lambda x: x["step"])))


def run_all(seeds, dims, heads, runs: Path, quiet: bool, curves: Path, worker: int = 0, workers: int = 1) -> list[dict]:
    """Run the missing (seed, dim, head) cells of this worker's share, then collect every finished run."""
    grid = [(seed, dim, head) for seed in seeds for dim in dims for head in heads]
    for i, (seed, dim, head) in enumerate(grid if workers > 0 else []):
        name = f"{head}_d{dim}_s{seed}"
        if i % workers != worker or (runs / name / "results.json").exists():
            continue
        print(f"== {name}", flush=True)
        overrides = [
            f"name={json.dumps(name)}",
            f"out={json.dumps(str(runs))}",
            f"seed={seed}",
            f"model.head_dim={dim}",
        ]
        started = (runs / name / "config.json").exists()  # an interrupted run: resume it, never restart it
        run_train(load_train_config(CONFIGS / f"mammals_{head}.toml", overrides), resume=started, progress=not quiet)
    rows = []
    for seed, dim, head in grid:
        name = f"{head}_d{dim}_s{seed}"
        done = runs / name / "results.json"
        if not done.exists():
            continue  # not run yet (or another worker's, still running)
        res = json.loads(done.read_text())
        export_curves(runs / name / "grpo" / "metrics.jsonl", curves / f"{name}.jsonl")
        for phase in ("warm_start", "grpo"):
            for split in SPLITS:
                m = res[phase][split]
                rows.append(
                    {
                        "head": head,
                        "head_dim": dim,
                        "seed": seed,
                        "phase": phase,
                        "split": split,
                        **{k: m[k]["value"] for k in ("accuracy", "pass@1", "maj@k", "format", "faithfulness")},
                        "accuracy_ci": m["accuracy"]["ci"],
                    }
                )
    return rows


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval over seeds (0 for a single seed)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    return m, float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


def paired(a: list[float], b: list[float]) -> dict:
    """The paired difference a − b over seeds: mean, 95% t-interval, Wilcoxon signed-rank p-value."""
    diff = [x - y for x, y in zip(a, b, strict=True)]
    m, h = mean_ci(diff)
    p = None
    if len(diff) >= 2 and any(d != 0 for d in diff):
        p = float(stats.wilcoxon(a, b).pvalue)
    return {"mean": m, "ci": [m - h, m + h], "wilcoxon_p": p, "per_seed": diff}


def _per_seed(rows: list[dict], seeds: list[int], phase: str, metric: str) -> list[float]:
    """Per seed, the metric averaged over the held-out splits."""
    return [statistics.fmean(r[metric] for r in rows if r["seed"] == s and r["phase"] == phase) for s in seeds]


def table(rows: list[dict]) -> str:
    """Markdown: per head and dimension, accuracy and format (mean ± 95% CI over seeds) of warm start
    and GRPO, averaged over the two held-out splits, and the GRPO lift."""
    keys = sorted({(r["head"], r["head_dim"]) for r in rows}, key=lambda k: (k[1], k[0]))
    out = [
        "| head | dim | seeds | warm-start acc | GRPO acc | lift (points) | warm-start format | GRPO format |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for head, dim in keys:
        sel = [r for r in rows if r["head"] == head and r["head_dim"] == dim]
        seeds = sorted({r["seed"] for r in sel})

        wa, ga = _per_seed(sel, seeds, "warm_start", "accuracy"), _per_seed(sel, seeds, "grpo", "accuracy")
        wf, gf = _per_seed(sel, seeds, "warm_start", "format"), _per_seed(sel, seeds, "grpo", "format")
        lift = [100 * (g - w) for g, w in zip(ga, wa, strict=True)]
        cells = [mean_ci(v) for v in (wa, ga, lift, wf, gf)]
        fmt = [f"{m:.3f} ± {h:.3f}" for m, h in cells]
        fmt[2] = f"{cells[2][0]:+.1f} ± {cells[2][1]:.1f}"
        out.append(f"| {head} | {dim} | {len(seeds)} | " + " | ".join(fmt) + " |")
    return "\n".join(out) + "\n"


def paired_table(rows: list[dict]) -> str:
    """Markdown: per dimension, the paired Poincaré − Euclidean difference of GRPO accuracy over the
    seeds both heads finished (same seed = same task split and initial trunk), with per-seed values."""
    out = [
        "| dim | seeds | Poincaré − Euclidean (points) | 95% CI | Wilcoxon p | per seed |",
        "|---:|---:|---:|---|---:|---|",
    ]
    for dim in sorted({r["head_dim"] for r in rows}):
        by_head = {
            head: {r["seed"] for r in rows if r["head"] == head and r["head_dim"] == dim}
            for head in ("poincare", "euclidean")
        }
        seeds = sorted(by_head["poincare"] & by_head["euclidean"])
        if not seeds:
            continue
        sel = [r for r in rows if r["head_dim"] == dim]
        acc = {h: _per_seed([r for r in sel if r["head"] == h], seeds, "grpo", "accuracy") for h in by_head}
        d = paired([100 * x for x in acc["poincare"]], [100 * x for x in acc["euclidean"]])
        p = "—" if d["wilcoxon_p"] is None else f"{d['wilcoxon_p']:.3g}"
        per_seed = ", ".join(f"{v:+.1f}" for v in d["per_seed"])
        ci = f"[{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"
        out.append(f"| {dim} | {len(seeds)} | {d['mean']:+.1f} | {ci} | {p} | {per_seed} |")
    return "\n".join(out) + "\n"


def merge_with_committed(rows: list[dict], path: Path) -> list[dict]:
    """The committed rows of ``path`` with those of runs finished here replacing theirs: a checkout
    without the run directories regenerates the table from the committed results, never empties it."""
    if not path.exists():
        return rows
    key = ("head", "head_dim", "seed", "phase", "split")
    fresh = {tuple(r[k] for k in key) for r in rows}
    old = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in old if tuple(r[k] for k in key) not in fresh] + rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32])
    p.add_argument("--heads", nargs="+", default=["poincare", "euclidean"])
    p.add_argument("--runs", type=Path, default=Path("runs/mammals_heads"))
    p.add_argument("--results", type=Path, default=Path("results/mammals_heads"))
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--worker", type=int, default=0, help="this process's index among --workers")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the grid (run each with --threads 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--collect-only", action="store_true", help="run nothing; tabulate the finished runs")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_all(
        args.seeds,
        args.dims,
        args.heads,
        args.runs,
        args.quiet,
        args.results / "curves",
        args.worker,
        0 if args.collect_only else args.workers,
    )
    rows = merge_with_committed(rows, args.results / "runs.jsonl")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = table(rows) + "\n" + paired_table(rows)
    (args.results / "table.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
