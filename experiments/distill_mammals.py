"""Distillation of the mammals teacher into a tiny Euclidean student: five setups, seeds, sizes.

Reads a sweep file (``experiments/configs/distill_sweep.toml``) naming the teacher run, the seeds,
the setups and the student sizes, and runs what is missing into ``runs/<name>/``:

1. ``sft_only``      the student's own warm start on the gold warm-start data (no teacher);
2. ``student_grpo``  the same run continued with GRPO (R1's "RL on the small model");
3. ``seq_kd``        sequence-level KD on the teacher's greedy completions (Kim & Rush 2016);
4. ``word_kd``       word-level KD on the teacher's distributions, off-policy (Hinton et al. 2015);
5. ``gkd``           on-policy GKD with the generalized JSD (Agarwal et al. 2024);

3–5 with the student's output rows from log₀ of the teacher's prototypes (``logmap``) and from
random initialisation; 1–2 are one ``hyperr1 train`` run each (its warm-start evaluation is setup 1).
A setup whose ``inits`` name ``"warm_start"`` starts from that seed's setup-1 student instead
(``init="checkpoint"``): e.g. ``sft_word_kd``, the student's warm start followed by word-level KD;
``sft_word_kd_hard`` the same with Hinton's hard targets beside the soft ones (``distill.alpha_ce``);
``sft_continued`` the warm start continued on gold completions alone (``distill.alpha_kd = 0``), the
control that says what the teacher adds at the same compute. A setup with ``start_from = "<setup>"``
(defined earlier in the file) is a second stage: it starts from that setup's finished student of the
same seed and init (its ``inits``, when given, pick some of the source's). ``student_pipeline =
false`` leaves setups 1 and 2 out (a sweep of distillation runs whose baselines another sweep has).
An optional ``[student]`` table changes the student (ModelConfig fields) of every run, distilled or
not. A finished run is skipped and an interrupted one resumed; several workers can share the grid
(each skips the runs another holds).

Results (``results/<name>/``): ``runs.jsonl`` (one row per run, the schema of :func:`row`),
``table.md`` (accuracy and retention per setup and init, mean ± 95% t-CI over seeds, per-seed
values; the paired difference to ``student_grpo``), ``bias.md`` (the benchmark-bias gaps of the
teacher and each student: distillation prompts minus unseen prompts, held-out subjects and the
held-out subtree, with the student's token confidence), ``sizes.md``.

    python experiments/distill_mammals.py [--sweep experiments/configs/distill_sweep.toml] [--collect-only]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import tomllib
import torch

sys.path.insert(0, str(Path(__file__).parent))
from mammals_heads import _toml_value, mean_ci, paired  # noqa: E402  (the same statistics as the head sweep)

from hyperr1.distill_pipeline import DistillRunConfig, run_distill  # noqa: E402
from hyperr1.pipeline import TrainConfig, load_config, run_train  # noqa: E402
from hyperr1.runs import RunLockedError, read_json  # noqa: E402

CONFIGS = Path(__file__).parent / "configs"
HELD_OUT = ("test_unseen_pair", "test_unseen_subject")
DEFAULT_INITS = ("logmap",)  # a setup's inits when its table names none
BIAS_SETS = ("distill_seen", "distill_unseen", "test_unseen_subject", "distill_subtree")
SETUP_ORDER = (
    "sft_only", "student_grpo", "seq_kd", "word_kd", "sft_word_kd", "sft_word_kd_hard", "sft_continued", "sft_gkd",
    "sft_gkd_hard", "gkd", "gold_sft", "gold_sft_gkd_hard"
)  # fmt: skip


@dataclass(frozen=True)
class Job:
    kind: str  # "train" (setups 1 and 2) or "distill"
    name: str  # run directory name
    setup: str  # for "train": "sft_only+student_grpo"
    init: str
    seed: int
    size: str  # "default" or the [sizes.students] key
    overrides: tuple[str, ...]
    after: str = ""  # a start_from setup: the run (of this sweep) whose student this one starts from


def _overrides(table: dict) -> list[str]:
    return [f"{k}={_toml_value(v)}" for k, v in table.items()]


def _student_overrides(spec: dict) -> list[str]:
    """The sweep's optional ``[student]`` table as DistillRunConfig overrides (``student.<field>=…``)."""
    return [f"student.{k}={_toml_value(v)}" for k, v in spec.get("student", {}).items()]


def load_jobs(path: Path) -> tuple[dict, list[Job]]:
    spec = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("name", "teacher", "distill_config", "seeds", "setups"):
        if key not in spec:
            raise ValueError(f"{path}: missing key {key!r}")
    common = _student_overrides(spec) + _overrides(spec.get("distill_overrides", {}))
    jobs = []
    for seed in spec["seeds"]:
        if spec.get("student_pipeline", True):  # setups 1 and 2 (false: a sweep of distillation runs alone)
            train = tuple(_overrides(spec.get("train_overrides", {})))
            jobs.append(Job("train", f"student_s{seed}", "sft_only+student_grpo", "random", seed, "default", train))
        for setup, s in spec["setups"].items():
            source = _source_setup(spec, setup, path)
            inherited = spec["setups"][source].get("inits", DEFAULT_INITS) if source else DEFAULT_INITS
            for init in s.get("inits", inherited):
                own = _overrides(s.get("overrides", {}))
                after = f"{source}_{init}_s{seed}" if source else ""
                start = None
                if after:  # the finished student of an earlier setup of this seed
                    start = Path("runs") / spec["name"] / after / "student"
                elif init == "warm_start":  # the student's own warm start of this seed (the train job)
                    start = warm_start_of(spec, seed)
                how = (
                    ['init="checkpoint"', f"init_checkpoint={json.dumps(str(start))}"]
                    if start
                    else [f"init={json.dumps(init)}"]
                )
                name = f"{setup}_{init}_s{seed}"
                jobs.append(Job("distill", name, setup, init, seed, "default", tuple(common + own + how), after))
    sizes = spec.get("sizes")
    if sizes:
        base = spec["setups"][sizes["setup"]]
        for seed in sizes.get("seeds", [0]):
            for size, student in sizes["students"].items():
                own = _overrides(base.get("overrides", {})) + _overrides(student)
                name = f"{sizes['setup']}_{sizes['init']}_{size}_s{seed}"
                jobs.append(
                    Job(
                        "distill",
                        name,
                        sizes["setup"],
                        sizes["init"],
                        seed,
                        size,
                        tuple(common + own + [f"init={json.dumps(sizes['init'])}"]),
                    )
                )
    return spec, jobs


def _source_setup(spec: dict, setup: str, path: Path) -> str:
    """The setup named by ``start_from`` (a second stage starts from that setup's student, of the same
    seed and init, instead of an init of its own), or ``""``; it must be defined earlier in the file."""
    source = spec["setups"][setup].get("start_from", "")
    if not source:
        return ""
    earlier = list(spec["setups"])[: list(spec["setups"]).index(setup)]
    if source not in earlier:
        raise ValueError(f"{path}: setup {setup!r} starts from {source!r}, which is not a setup defined before it")
    own, theirs = spec["setups"][setup].get("inits"), spec["setups"][source].get("inits", DEFAULT_INITS)
    if own is not None and not set(own) <= set(theirs):
        raise ValueError(f"{path}: setup {setup!r} starts from {source!r}, which has no runs of inits {own}")
    return source


def warm_start_of(spec: dict, seed: int) -> Path:
    """The saved warm-start policy of the sweep's own student pipeline (setup 1) for ``seed``."""
    return Path("runs") / spec["name"] / f"student_s{seed}" / "warm_start" / "model"


def run_missing(spec: dict, jobs: list[Job], quiet: bool) -> None:
    runs = Path("runs") / spec["name"]
    for job in jobs:
        directory = runs / job.name
        if (directory / "results.json").exists():
            continue
        if job.kind == "distill" and not (Path(spec["teacher"]) / "policy" / "model.safetensors").exists():
            print(f"   {job.name} waits for the teacher {spec['teacher']} to finish", flush=True)
            continue
        if job.after and not (runs / job.after / "results.json").exists():
            print(f"   {job.name} waits for {job.after}, whose student it starts from", flush=True)
            continue
        if job.init == "warm_start" and not (warm_start_of(spec, job.seed).parent / "done.json").exists():
            print(f"   {job.name} waits for the warm start of student_s{job.seed}", flush=True)
            continue
        resume = (directory / "config.json").exists()
        where = [f"name={json.dumps(job.name)}", f"out={json.dumps(str(runs))}", f"seed={job.seed}"]
        print(f"== {job.name}{' (resumed)' if resume else ''}", flush=True)
        try:
            if job.kind == "train":
                teacher = [f"teacher={json.dumps(spec['teacher'])}", *_student_overrides(spec)]
                student = load_config(DistillRunConfig, CONFIGS / spec["distill_config"], teacher).student
                cfg = student_train_config(Path(spec["teacher"]), student, [*job.overrides, *where])
                run_train(cfg, resume=resume, progress=not quiet)
            else:
                teacher = f"teacher={json.dumps(spec['teacher'])}"
                cfg = load_config(DistillRunConfig, CONFIGS / spec["distill_config"], [teacher, *job.overrides, *where])
                run_distill(cfg, resume=resume, progress=not quiet)
        except RunLockedError:
            print(f"   {job.name} is another worker's", flush=True)


def student_train_config(teacher: Path, student, overrides: list[str]) -> TrainConfig:
    """The student's own pipeline (setups 1 and 2): the teacher's run settings from its record (data,
    tasks, warm start, GRPO), the student's model, then ``overrides``; the task splits are the
    teacher's (``split_seed``), so that every setup of a seed is scored on the same held-out queries."""
    record = read_json(teacher / "config.json")["config"]
    model = [f"model.{k}={_toml_value(v)}" for k, v in vars(student).items() if v is not None]
    split = [f"split_seed={record['tasks']['seed']}"]
    return load_config(TrainConfig, values=record, overrides=[*model, *split, *overrides])


# ---------------------------------------------------------------- collecting


def _acc(evals: dict) -> dict:
    return {split: v["accuracy"] for split, v in evals.items()}


def row(spec: dict, job: Job) -> list[dict]:
    """The rows of one finished job: setup, init, seed, size, parameters, and per evaluation set
    the teacher's and the student's accuracy ({"value", "ci", "n"})."""
    directory = Path("runs") / spec["name"] / job.name
    if not (directory / "results.json").exists():
        return []
    res = json.loads((directory / "results.json").read_text())
    if job.kind == "distill":
        return [
            {
                "setup": job.setup,
                "init": job.init,
                "seed": job.seed,
                "size": job.size,
                "student_params": res["parameters"]["student"],
                "teacher_params": res["parameters"]["teacher"],
                "ratio": res["parameters"]["ratio"],
                "teacher": _acc(res["teacher_eval"]),
                "student": _acc(res["student_eval"]),
                "student_confidence": res.get("student_confidence", {}),
                "bias_subtree": res.get("bias_subtree"),
            }
        ]
    teacher = json.loads((Path(spec["teacher"]) / "results.json").read_text())
    n_teacher = teacher["parameters"]
    rows = [
        {
            "setup": setup,
            "init": "random",
            "seed": job.seed,
            "size": job.size,
            "student_params": res["parameters"],
            "teacher_params": n_teacher,
            "ratio": res["parameters"] / n_teacher,
            "teacher": _acc(teacher["grpo"]),
            "student": _acc(res[phase]),
        }
        for setup, phase in (("sft_only", "warm_start"), ("student_grpo", "grpo"))
    ]
    restarts = warm_start_restarts(directory / "warm_start")
    if restarts:
        rows[0]["warm_start_restarts"] = restarts
    return rows


def warm_start_restarts(warm: Path) -> dict | None:
    """A warm start of ``sft.restarts > 1``: every restart's order seed and gold NLL, the chosen one,
    and each restart's last greedy monitor accuracy (the mean of its held-out splits on the monitor's
    subset, logged during training and not used in the choice); ``None`` for a single warm start."""
    done = read_json(warm / "done.json") if (warm / "done.json").exists() else {}
    if "restarts" not in done:
        return None
    last = {}
    for line in (warm / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        keys = [f"eval/{s}/accuracy" for s in HELD_OUT]
        if all(k in r for k in keys):
            last[r["restart"]] = statistics.fmean(r[k] for k in keys)
    tried = [{**r, "monitor_held_out": last.get(r["restart"])} for r in done["restarts"]]
    return {"chosen": done["chosen"], "tried": tried}


def held_out(r: dict, who: str) -> float:
    """Accuracy averaged over the two held-out splits."""
    return statistics.fmean(r[who][s]["value"] for s in HELD_OUT)


def _fmt(values: list[float], scale: float = 1.0, signed: bool = False) -> str:
    m, h = mean_ci([scale * v for v in values])
    digits = 3 if scale == 1 and not signed else 1
    value = f"{m:+.{digits}f}" if signed else f"{m:.{digits}f}"
    return value if len(values) < 2 else f"{value} ± {h:.{digits}f}"  # one seed: no interval


def results_table(rows: list[dict]) -> str:
    main = [r for r in rows if r["size"] == "default"]
    out = [
        "| setup | init | seeds | student params (share) | student held-out acc | teacher | retention % "
        "| − student_grpo (points) | Wilcoxon p | student acc per seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = {r["seed"]: held_out(r, "student") for r in main if r["setup"] == "student_grpo"}
    cells = sorted({(r["setup"], r["init"]) for r in main}, key=lambda k: (SETUP_ORDER.index(k[0]), k[1]))
    for setup, init in cells:
        sel = sorted((r for r in main if r["setup"] == setup and r["init"] == init), key=lambda r: r["seed"])
        acc = [held_out(r, "student") for r in sel]
        teacher = [held_out(r, "teacher") for r in sel]
        retention = [a / t for a, t in zip(acc, teacher, strict=True)]
        seeds = [r["seed"] for r in sel if r["seed"] in base]
        if setup != "student_grpo" and len(seeds) >= 2:
            d = paired([100 * held_out(r, "student") for r in sel if r["seed"] in base], [100 * base[s] for s in seeds])
            diff = f"{d['mean']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"
            p = "—" if d["wilcoxon_p"] is None else f"{d['wilcoxon_p']:.3g}"
        else:
            diff, p = "—", "—"
        params = f"{sel[0]['student_params']:,} ({100 * sel[0]['ratio']:.1f}%)"
        out.append(
            f"| {setup} | {init} | {len(sel)} | {params} | {_fmt(acc)} | {_fmt(teacher)} | {_fmt(retention, 100)} "
            f"| {diff} | {p} | {', '.join(f'{a:.3f}' for a in acc)} |"
        )
    return "\n".join(out) + "\n"


def bias_table(rows: list[dict]) -> str:
    """Per distilled setup (and the teacher), accuracy on (a) distillation prompts and its gap to
    (b) unseen prompts, (c) held-out subjects and (d) the held-out subtree, in points, mean ± 95%
    t-CI over seeds; and the student's mean token confidence on (a), (b), (d)."""
    kd = [r for r in rows if r["size"] == "default" and "distill_seen" in r["student"]]
    out = [
        "| model | init | seeds | (a) seen acc | (a) − (b) unseen | (a) − (c) held-out subjects | (a) − (d) subtree "
        "| confidence (a) / (b) / (d) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    cells = sorted({(r["setup"], r["init"]) for r in kd}, key=lambda k: (SETUP_ORDER.index(k[0]), k[1]))
    # the teacher's own gaps, from the rows of one distilled setup (word_kd/logmap where the sweep has it)
    first = ("word_kd", "logmap") if ("word_kd", "logmap") in cells else (cells[0] if cells else None)
    groups = [("teacher", "—", [r for r in kd if (r["setup"], r["init"]) == first], "teacher")]
    for setup, init in cells:
        groups.append((setup, init, [r for r in kd if r["setup"] == setup and r["init"] == init], "student"))
    for label, init, sel, who in groups:
        if not sel:
            continue
        seen = [r[who]["distill_seen"]["value"] for r in sel]
        gaps = []
        for other in BIAS_SETS[1:]:
            vals = [100 * (r[who]["distill_seen"]["value"] - r[who][other]["value"]) for r in sel if other in r[who]]
            gaps.append(_fmt(vals, signed=True) if vals else "—")
        conf = "—"
        if who == "student" and all(r.get("student_confidence") for r in sel):
            parts = [
                statistics.fmean(r["student_confidence"].get(k, math.nan) for r in sel)
                for k in ("distill_seen", "distill_unseen", "distill_subtree")
            ]
            conf = " / ".join(f"{v:.3f}" for v in parts)
        out.append(f"| {label} | {init} | {len(sel)} | {_fmt(seen)} | " + " | ".join(gaps) + f" | {conf} |")
    return "\n".join(out) + "\n"


def restarts_table(rows: list[dict]) -> str:
    """Per seed whose warm start chose among restarts (``sft.restarts > 1``): each restart's order
    seed, gold NLL and monitor accuracy, the chosen one (lowest NLL, marked *) and its held-out
    accuracy on the full evaluation; empty when no warm start had restarts."""
    sel = sorted((r for r in rows if r.get("warm_start_restarts")), key=lambda r: (r["size"], r["seed"]))
    if not sel:
        return ""
    out = [
        "| seed | order seeds | gold NLL per restart | monitor held-out per restart | chosen | chosen held-out |",
        "|---:|---|---|---|---:|---:|",
    ]
    for r in sel:
        info = r["warm_start_restarts"]
        nll, monitor = [], []
        for t in info["tried"]:
            star = "*" if t["restart"] == info["chosen"] else ""
            nll.append(f"{t['gold_nll']:.3f}{star}")
            monitor.append(("—" if t["monitor_held_out"] is None else f"{t['monitor_held_out']:.3f}") + star)
        seeds = ", ".join(str(t["order_seed"]) for t in info["tried"])
        out.append(
            f"| {r['seed']} | {seeds} | {', '.join(nll)} | {', '.join(monitor)} | {info['chosen']} "
            f"| {held_out(r, 'student'):.3f} |"
        )
    return "\n".join(out) + "\n"


def sizes_table(rows: list[dict], spec: dict) -> list[dict]:
    """Retention against student size for the sizes' setup and init (seed-averaged)."""
    sizes = spec.get("sizes")
    if not sizes:
        return []
    sel = [r for r in rows if r["setup"] == sizes["setup"] and r["init"] == sizes["init"]]
    points = []
    for size in ["default", *sizes["students"]]:
        here = [r for r in sel if r["size"] == size and r["seed"] in sizes.get("seeds", [0])]
        if here:
            retention = [held_out(r, "student") / held_out(r, "teacher") for r in here]
            points.append(
                {
                    "size": size,
                    "params": here[0]["student_params"],
                    "ratio": here[0]["ratio"],
                    "retention": statistics.fmean(retention),
                    "seeds": len(here),
                    "student_acc": statistics.fmean(held_out(r, "student") for r in here),
                }
            )
    return points


def collect(spec: dict, jobs: list[Job], results: Path) -> str:
    rows = [r for job in jobs for r in row(spec, job)]
    path = results / "runs.jsonl"
    if path.exists():  # keep committed rows of runs this checkout does not have
        key = ("setup", "init", "seed", "size")
        fresh = {tuple(r[k] for k in key) for r in rows}
        old = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in old if tuple(r[k] for k in key) not in fresh] + rows
    results.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    sizes = sizes_table(rows, spec)
    (results / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    md = results_table(rows) + "\n" + bias_table(rows)
    md += "\n| student | params | share of teacher | student acc | retention % | seeds |\n"
    md += "|---|---:|---:|---:|---:|---:|\n"
    md += "".join(
        f"| {p['size']} | {p['params']:,} | {100 * p['ratio']:.1f}% | {p['student_acc']:.3f} "
        f"| {100 * p['retention']:.1f} | {p['seeds']} |\n"
        for p in sizes
    )
    restarts = restarts_table(rows)
    md += f"\n{restarts}" if restarts else ""
    (results / "table.md").write_text(md)
    return md


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, default=CONFIGS / "distill_sweep.toml")
    p.add_argument("--results", type=Path, default=None, help="results folder (default: results/<sweep name>)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--collect-only", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec, jobs = load_jobs(args.sweep)
    if not args.collect_only:
        if not (Path(spec["teacher"]) / "config.json").is_file():
            p.error(
                f"the teacher {spec['teacher']} has no run record: train it first "
                "(hyperr1 train --config experiments/configs/mammals_teacher.toml)"
            )
        run_missing(spec, jobs, args.quiet)  # distillation jobs wait while the teacher is unfinished
    if not (Path(spec["teacher"]) / "results.json").is_file():
        p.error(f"the teacher {spec['teacher']} has not finished: rerun once it has, to run and collect the rest")
    print(collect(spec, jobs, args.results or Path("results") / spec["name"]))


if __name__ == "__main__":
    main()
