"""Poincaré vs Euclidean head, seeds paired across heads: the package's question, as a sweep.

A sweep is a TOML file (``experiments/configs/heads_sweep.toml``; the Euclidean tuning sweep is
``heads_tune_euclidean.toml``)::

    name = "heads"                    # runs in runs/<name>/, results in results/<name>/
    seeds = [0, 1, ...]
    dims = [2, 8]
    [overrides]                       # every run: "section.key" = value
    [heads.<label>]                   # one entry per head variant
    config = "mammals_poincare.toml"  # in experiments/configs/
    overrides = { "grpo.lr" = 1e-3 }  # this variant only (after the common ones)

Run ``<label>_d<dim>_s<seed>`` is the full pipeline of ``hyperr1 train`` (warm start → GRPO →
held-out evaluation, hops ≥ 3) with ``model.head_dim = dim`` and ``seed = seed``. A seed fixes the
task split and the initial trunk (the trunk is built before the head), so runs of the same seed are
paired across heads.

**Workers.** Start the script N times at once (``make reproduce-heads`` starts two, one thread
each): every worker walks the grid and takes the next run nobody holds (the run directory's lock,
:class:`hyperr1.runs.RunLock`); a finished run (``results.json``) is skipped and an interrupted one
resumed, so a killed sweep restarted picks up where it stopped, and a worker can join late.

**Results** (``results/<name>/``, merged with the committed rows, so a checkout without the run
directories regenerates the tables instead of emptying them):

- ``runs.jsonl``: one row per (head, dim, seed, phase, split): accuracy and its CI, format,
  faithfulness, accuracy per hop count (``per_hop``: hops → [accuracy, n]), the run's wall time;
- ``table.md``: per head and dim, warm-start and GRPO accuracy and the lift (mean ± 95% t-CI over
  seeds, per-seed values); the paired Poincaré − Euclidean difference per dim with its t-CI and
  the Wilcoxon signed-rank p-value;
- ``reflection.json``: per head and dim, over GRPO steps, the share of sampled completions with a
  ``wait`` retraction and the share of retractions that replace a wrong step with a right one;
- ``collapses.json``: every collapse-guard episode of every run (start, length, trigger);
- ``curves/<run>.jsonl``: a thinned copy of each run's training curves.

    python experiments/mammals_heads.py [--sweep experiments/configs/heads_sweep.toml] [--collect-only]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import tomllib
import torch
from scipy import stats

from hyperr1.pipeline import load_train_config, run_train
from hyperr1.runs import RunLockedError

CONFIGS = Path(__file__).parent / "configs"
SPLITS = ("test_unseen_pair", "test_unseen_subject")
CURVE_KEYS = (
    "reward/total",
    "reward/accuracy",
    "rate/format",
    "rate/reflection",
    "reflection/retractions",
    "reflection/good",
    "grpo/kl",
    "curriculum/max_hops",
)


# ---------------------------------------------------------------- the sweep file


@dataclass(frozen=True)
class Run:
    label: str  # the head variant's name in the sweep
    dim: int
    seed: int
    config: Path
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.label}_d{self.dim}_s{self.seed}"


@dataclass(frozen=True)
class Sweep:
    name: str
    runs: tuple[Run, ...]

    @property
    def runs_dir(self) -> Path:
        return Path("runs") / self.name


def _toml_value(value) -> str:
    """``value`` in the TOML syntax of ``--set`` overrides."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise ValueError(f"override value {value!r}: only numbers, booleans and strings are supported")


def load_sweep(path: Path) -> Sweep:
    """The runs of a sweep file, with clear errors for missing or unknown keys."""
    spec = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    known = {"name", "seeds", "dims", "overrides", "heads"}
    if unknown := sorted(set(spec) - known):
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    for key in ("name", "seeds", "dims", "heads"):
        if key not in spec:
            raise ValueError(f"{path}: missing key {key!r}")
    common = [f"{k}={_toml_value(v)}" for k, v in spec.get("overrides", {}).items()]
    runs = []
    for seed in spec["seeds"]:
        for dim in spec["dims"]:
            for label, head in spec["heads"].items():
                if "config" not in head:
                    raise ValueError(f"{path}: heads.{label} has no config")
                config = CONFIGS / head["config"]
                if not config.is_file():
                    raise ValueError(f"{path}: heads.{label}.config: {config} does not exist")
                own = [f"{k}={_toml_value(v)}" for k, v in head.get("overrides", {}).items()]
                runs.append(Run(label, int(dim), int(seed), config, tuple(common + own)))
    return Sweep(spec["name"], tuple(runs))


# ---------------------------------------------------------------- running


def run_missing(sweep: Sweep, quiet: bool, only: list[str] | None = None) -> None:
    """Run every unfinished run of the sweep (of the head variants ``only``) that no other worker holds."""
    for run in sweep.runs:
        if only and run.label not in only:
            continue
        directory = sweep.runs_dir / run.name
        if (directory / "results.json").exists():
            continue
        overrides = [f"name={json.dumps(run.name)}", f"out={json.dumps(str(sweep.runs_dir))}", f"seed={run.seed}"]
        cfg = load_train_config(run.config, [*run.overrides, f"model.head_dim={run.dim}", *overrides])
        resume = (directory / "config.json").exists()  # an interrupted run: resume it, never restart it
        print(f"== {run.name}{' (resumed)' if resume else ''}", flush=True)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            run_train(cfg, resume=resume, progress=not quiet)
        except RunLockedError:
            print(f"   {run.name} is another worker's", flush=True)
            continue
        timing = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "resumed": resume}
        (directory / "sweep_timing.json").write_text(json.dumps(timing) + "\n")


# ---------------------------------------------------------------- collecting


def export_curves(metrics: Path, out: Path, every: int = 10) -> None:
    """A small copy of a run's metrics for the figures: means of CURVE_KEYS over blocks of
    ``every`` steps (labelled by the block's last step) and every evaluation row's accuracies."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    lines = []
    for i in range(0, len(rows), every):  # the last block may be shorter
        block = rows[i : i + every]
        means = {k: statistics.fmean(r[k] for r in block) for k in CURVE_KEYS if all(k in r for r in block)}
        lines.append({"step": block[-1]["step"], **means})
    for r in rows:
        evals = {k: v for k, v in r.items() if k.startswith("eval/") and "@" not in k and k.endswith("/accuracy")}
        if evals:
            lines.append({"step": r["step"], **evals})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in sorted(lines, key=lambda x: x["step"])))


def run_rows(sweep: Sweep, run: Run) -> list[dict]:
    """The result rows of one finished run (none if it has not finished)."""
    directory = sweep.runs_dir / run.name
    if not (directory / "results.json").exists():
        return []
    res = json.loads((directory / "results.json").read_text())
    timing_path = directory / "sweep_timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    rows = []
    for phase in ("warm_start", "grpo"):
        detail = json.loads((directory / f"eval_{phase}.json").read_text())["splits"]
        for split in SPLITS:
            m = res[phase][split]
            per_hop = {
                hops: [v["accuracy"]["value"], v["accuracy"]["n"]] for hops, v in detail[split]["by_hops"].items()
            }
            rows.append(
                {
                    "head": run.label,
                    "head_dim": run.dim,
                    "seed": run.seed,
                    "phase": phase,
                    "split": split,
                    **{k: m[k]["value"] for k in ("accuracy", "format", "faithfulness", "reflection_rate")},
                    "accuracy_ci": m["accuracy"]["ci"],
                    "per_hop": per_hop,
                    "collapse_episodes": res["collapse_episodes"],
                    "wall_s": timing.get("wall_s"),
                }
            )
    return rows


def collapses(sweep: Sweep) -> dict[str, list[dict]]:
    """Every guard episode of every finished run of the sweep, by run name."""
    episodes = {}
    for run in sweep.runs:
        directory = sweep.runs_dir / run.name
        if (directory / "results.json").exists():
            path = directory / "grpo" / "collapses.jsonl"
            text = path.read_text() if path.exists() else ""
            episodes[run.name] = [json.loads(line) for line in text.splitlines() if line.strip()]
    return episodes


def collapse_summary(episodes: dict[str, list[dict]]) -> dict:
    """Per cell (head and dim): runs, runs with an episode, episodes, steps inside episodes, triggers."""
    summary: dict[str, dict] = {}
    for name, found in sorted(episodes.items()):
        cell = summary.setdefault(
            name.rsplit("_s", 1)[0],
            {"runs": 0, "runs_with_episode": 0, "episodes": 0, "steps_in_episode": 0, "triggers": {}},
        )
        cell["runs"] += 1
        cell["runs_with_episode"] += bool(found)
        cell["episodes"] += len(found)
        cell["steps_in_episode"] += sum(e["length"] for e in found)
        triggers = Counter(cell["triggers"]) + Counter(reason for e in found for reason in e["reasons"])
        cell["triggers"] = dict(sorted(triggers.items()))
    return summary


def reflection(sweep: Sweep, curves: Path) -> dict:
    """Per head and dim, over blocks of GRPO steps (mean over seeds): the share of sampled
    completions that retract, and the share of retractions that are good (Σ good / Σ retractions)."""
    out = {}
    for key in sorted({(r.label, r.dim) for r in sweep.runs}):
        blocks: dict[int, list[dict]] = {}
        for run in sweep.runs:
            path = curves / f"{run.name}.jsonl"
            if (run.label, run.dim) != key or not path.exists():
                continue
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if "rate/reflection" in row:
                    blocks.setdefault(row["step"], []).append(row)
        steps = sorted(blocks)
        good = [sum(r.get("reflection/good", 0.0) for r in blocks[s]) for s in steps]
        total = [sum(r.get("reflection/retractions", 0.0) for r in blocks[s]) for s in steps]
        out[f"{key[0]}_d{key[1]}"] = {
            "step": steps,
            "seeds": [len(blocks[s]) for s in steps],
            "reflection_rate": [statistics.fmean(r["rate/reflection"] for r in blocks[s]) for s in steps],
            "good_share": [g / t if t > 0 else None for g, t in zip(good, total, strict=True)],
        }
    return out


def reflection_table(rows: list[dict], curves: Path, window: int = 100) -> str:
    """Markdown: per cell, the share of sampled completions that retract over the first and the
    last ``window`` GRPO steps (mean ± 95% t-CI over seeds), the share of good retractions over the
    last window, and Spearman's ρ across seeds between the final reflection rate and the GRPO
    held-out accuracy: does reflection rise, and do the seeds that reflect more answer better?"""
    out = [
        f"| cell | seeds | reflection, first {window} steps | reflection, last {window} steps | rise (points) "
        f"| good retractions, last {window} | ρ(reflection, GRPO acc) | p |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for head, dim in _cells(rows):
        first, last, good, acc = [], [], [], []
        for seed in sorted({r["seed"] for r in rows if r["head"] == head and r["head_dim"] == dim}):
            path = curves / f"{head}_d{dim}_s{seed}.jsonl"
            if not path.exists():
                continue
            series = [json.loads(line) for line in path.read_text().splitlines()]
            series = [r for r in series if "rate/reflection" in r]
            if not series:  # curves written before the reflection metrics existed
                continue
            end = max(r["step"] for r in series)
            head_rows = [r for r in series if r["step"] <= window]
            tail_rows = [r for r in series if r["step"] > end - window]
            first.append(statistics.fmean(r["rate/reflection"] for r in head_rows))
            last.append(statistics.fmean(r["rate/reflection"] for r in tail_rows))
            retractions = sum(r.get("reflection/retractions", 0.0) for r in tail_rows)
            good.append(sum(r.get("reflection/good", 0.0) for r in tail_rows) / retractions if retractions else None)
            acc.append(per_seed([r for r in rows if r["head"] == head and r["head_dim"] == dim], [seed], "grpo")[0])
        if not first:
            continue
        rise = [100 * (b - a) for a, b in zip(first, last, strict=True)]
        (fm, fh), (lm, lh), (rm, rh) = mean_ci(first), mean_ci(last), mean_ci(rise)
        known = [g for g in good if g is not None]
        good_txt = f"{statistics.fmean(known):.2f}" if known else "—"
        rho, p = ("—", "—")
        if len(last) >= 3 and len(set(last)) > 1 and len(set(acc)) > 1:
            res = stats.spearmanr(last, acc)
            rho, p = f"{res.statistic:+.2f}", f"{res.pvalue:.3g}"
        out.append(
            f"| {head}_d{dim} | {len(first)} | {fm:.3f} ± {fh:.3f} | {lm:.3f} ± {lh:.3f} | {rm:+.1f} ± {rh:.1f} "
            f"| {good_txt} | {rho} | {p} |"
        )
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- statistics and tables


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


def per_seed(rows: list[dict], seeds: list[int], phase: str, metric: str = "accuracy") -> list[float]:
    """Per seed, the metric averaged over the held-out splits."""
    return [statistics.fmean(r[metric] for r in rows if r["seed"] == s and r["phase"] == phase) for s in seeds]


def _cells(rows: list[dict]) -> list[tuple[str, int]]:
    return sorted({(r["head"], r["head_dim"]) for r in rows}, key=lambda k: (k[1], k[0]))


def table(rows: list[dict]) -> str:
    """Markdown: per head and dim, accuracy and format (mean ± 95% CI over seeds) of warm start and
    GRPO, averaged over the two held-out splits, the GRPO lift, and the per-seed GRPO accuracies."""
    out = [
        "| head | dim | seeds | warm-start acc | GRPO acc | lift (points) | GRPO format | wall min/run "
        "| GRPO acc per seed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for head, dim in _cells(rows):
        sel = [r for r in rows if r["head"] == head and r["head_dim"] == dim]
        seeds = sorted({r["seed"] for r in sel})
        wa, ga = per_seed(sel, seeds, "warm_start"), per_seed(sel, seeds, "grpo")
        gf = per_seed(sel, seeds, "grpo", "format")
        lift = [100 * (g - w) for g, w in zip(ga, wa, strict=True)]
        (wm, wh), (gm, gh), (lm, lh), (fm, fh) = (mean_ci(v) for v in (wa, ga, lift, gf))
        walls = [r["wall_s"] for r in sel if r.get("wall_s") and r["phase"] == "grpo" and r["split"] == SPLITS[0]]
        wall = f"{statistics.fmean(walls) / 60:.1f}" if walls else "—"
        seeds_txt = ", ".join(f"{v:.2f}" for v in ga)
        out.append(
            f"| {head} | {dim} | {len(seeds)} | {wm:.3f} ± {wh:.3f} | {gm:.3f} ± {gh:.3f} | "
            f"{lm:+.1f} ± {lh:.1f} | {fm:.3f} ± {fh:.3f} | {wall} | {seeds_txt} |"
        )
    return "\n".join(out) + "\n"


def paired_table(rows: list[dict], a: str = "poincare", b: str = "euclidean") -> str:
    """Markdown: per dim and phase, the paired difference a − b of accuracy over the seeds both heads
    finished (same seed = same task split and initial trunk), with per-seed values."""
    out = [
        f"| dim | phase | seeds | {a} − {b} (points) | 95% CI | Wilcoxon p | per seed |",
        "|---:|---|---:|---:|---|---:|---|",
    ]
    for dim in sorted({r["head_dim"] for r in rows}):
        seeds_of = {h: {r["seed"] for r in rows if r["head"] == h and r["head_dim"] == dim} for h in (a, b)}
        seeds = sorted(seeds_of[a] & seeds_of[b])
        if not seeds:
            continue
        for phase in ("warm_start", "grpo"):
            cell = {h: [r for r in rows if r["head"] == h and r["head_dim"] == dim] for h in (a, b)}
            acc = {h: per_seed(cell[h], seeds, phase) for h in (a, b)}
            d = paired([100 * x for x in acc[a]], [100 * x for x in acc[b]])
            p = "—" if d["wilcoxon_p"] is None else f"{d['wilcoxon_p']:.3g}"
            seeds_txt = ", ".join(f"{v:+.1f}" for v in d["per_seed"])
            ci = f"[{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"
            out.append(f"| {dim} | {phase} | {len(seeds)} | {d['mean']:+.1f} | {ci} | {p} | {seeds_txt} |")
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


def _merge_json(path: Path, fresh: dict, section: str) -> dict:
    """``fresh`` over the committed ``section`` of ``path`` (runs finished elsewhere are kept)."""
    old = json.loads(path.read_text()).get(section, {}) if path.exists() else {}
    return {**old, **fresh}


def collect(sweep: Sweep, results: Path) -> str:
    curves = results / "curves"
    rows = []
    for run in sweep.runs:
        found = run_rows(sweep, run)
        if found:
            export_curves(sweep.runs_dir / run.name / "grpo" / "metrics.jsonl", curves / f"{run.name}.jsonl")
        rows += found
    rows = merge_with_committed(rows, results / "runs.jsonl")
    results.mkdir(parents=True, exist_ok=True)
    (results / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    episodes = _merge_json(results / "collapses.json", collapses(sweep), "episodes")
    summary = collapse_summary(episodes)
    (results / "collapses.json").write_text(json.dumps({"summary": summary, "episodes": episodes}, indent=1) + "\n")
    (results / "reflection.json").write_text(json.dumps(reflection(sweep, curves), indent=1) + "\n")
    md = table(rows)
    if {"poincare", "euclidean"} <= {r["head"] for r in rows}:
        md += "\n" + paired_table(rows)
    md += "\n" + reflection_table(rows, curves) + "\n" + collapse_table(summary)
    (results / "table.md").write_text(md)
    return md


def collapse_table(summary: dict) -> str:
    out = [
        "| cell | runs | runs with an episode | episodes | steps in episodes | triggers |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for cell, s in sorted(summary.items()):
        triggers = ", ".join(f"{k} × {v}" for k, v in sorted(s["triggers"].items())) or "—"
        counts = f"{s['runs']} | {s['runs_with_episode']} | {s['episodes']} | {s['steps_in_episode']}"
        out.append(f"| {cell} | {counts} | {triggers} |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, default=CONFIGS / "heads_sweep.toml", help="the sweep file")
    p.add_argument("--results", type=Path, default=None, help="results folder (default: results/<sweep name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--collect-only", action="store_true", help="run nothing; tabulate the finished runs")
    p.add_argument("--only", nargs="+", metavar="LABEL", help="run only these head variants of the sweep")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sweep = load_sweep(args.sweep)
    if unknown := sorted(set(args.only or ()) - {r.label for r in sweep.runs}):
        p.error(f"--only {unknown}: not head variants of {args.sweep}")
    if not args.collect_only:
        run_missing(sweep, args.quiet, args.only)
    print(collect(sweep, args.results or Path("results") / sweep.name))


if __name__ == "__main__":
    main()
