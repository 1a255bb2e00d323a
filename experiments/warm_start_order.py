"""Does the order of the gold examples alone move a small student's warm start?

The question behind it (README, "Log-map initialisation of the warm start"): the same 27,771-parameter
student, trained on the same gold warm-start completions from the same initial weights at the same
η = 1e-2 and batch 64 for the same number of sequences, reached 0.770 held-out through ``hyperr1
train``'s warm start (epochs over the set, shuffled by ``Random(seed)``) and 0.373 through ``hyperr1
distill`` with the teacher's term off (batches drawn with replacement). The update rule of the two
paths is the same (``tests/test_distill.py::test_gold_only_step_is_a_warm_start_step`` checks it
step for step); what differs is which examples each step sees. Here the initial weights are held
fixed (``torch.manual_seed(init_seed)``, as ``hyperr1 train`` seeds them) and only the order moves:

- ``epochs``: :func:`hyperr1.sft.train_sft` as ``hyperr1 train`` runs it, its per-epoch shuffle
  seeded by ``order_seed`` (``hyperr1 train`` ties it to the run seed);
- ``replacement``: the same function over one "epoch" of ``epochs × |set|`` examples drawn with
  replacement by ``Random(order_seed)``, the distillation runner's sampling.

The student, splits and warm-start settings are those of the sweep file's own student pipeline
(``experiments/distill_mammals.py``: the teacher's record, the sweep's ``[student]`` and
``[train_overrides]``); held-out accuracy is greedy, on the held-out splits at the run's
``eval_min_hops``, averaged over the two, as the sweep's ``sft_only`` row. A finished run is skipped.
``--set`` adds train settings to every run (named by ``--tag``), e.g. the warm start's learning-rate
schedule (:class:`hyperr1.sft.SFTConfig`), to see whether it narrows the spread over orders.

    python experiments/warm_start_order.py --runs epochs:0 epochs:1 replacement:0 --threads 1 --quiet
    python experiments/warm_start_order.py --runs epochs:0 epochs:1 --tag wcos \\
        --set sft.warmup_steps=230 sft.schedule=cosine      # → results/warm_start_order/{runs.jsonl,table.md}
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib
import torch

sys.path.insert(0, str(Path(__file__).parent))
from distill_mammals import HELD_OUT, _overrides, _student_overrides, student_train_config  # noqa: E402
from mammals_heads import mean_ci  # noqa: E402

from hyperr1.decoding import TextPolicy  # noqa: E402
from hyperr1.distill_pipeline import DistillRunConfig, run_distill  # noqa: E402
from hyperr1.evaluate import evaluate  # noqa: E402
from hyperr1.hierarchy import load_hierarchy  # noqa: E402
from hyperr1.model import HyperR1ForConditionalGeneration  # noqa: E402
from hyperr1.pipeline import _held_out, headline, load_config  # noqa: E402
from hyperr1.runs import write_json  # noqa: E402
from hyperr1.sft import train_sft  # noqa: E402
from hyperr1.splits import build_splits  # noqa: E402
from hyperr1.tokenizer import build_tokenizer  # noqa: E402

SAMPLINGS = ("epochs", "replacement")
CONFIGS = Path(__file__).parent / "configs"


@dataclass
class OrderConfig:
    """One sweep of warm starts that differ only in example order."""

    sweep: str = "experiments/configs/distill_sweep_chain_hard.toml"  # teacher, student, warm-start overrides
    init_seed: int = 0  # seed of the initial weights (and of the task splits, through the teacher's record)
    runs: list[str] = field(default_factory=lambda: ["epochs:1"])  # "<sampling>:<order seed>" per run
    overrides: list[str] = field(default_factory=list)  # extra "key=value" train settings, e.g. sft.warmup_steps=230
    tag: str = ""  # names the overrides in run directories and the table ("" for none)
    distill: str = ""  # a setup of the sweep (e.g. sft_gkd_hard) to run from each finished warm start
    out: str = "runs/warm_start_order"  # one directory per run (warm_start/, results.json)
    results: str = "results/warm_start_order"  # runs.jsonl and table.md

    def parsed_runs(self) -> list[tuple[str, int]]:
        parsed = []
        for item in self.runs:
            sampling, _, seed = item.partition(":")
            if sampling not in SAMPLINGS or not seed.lstrip("-").isdigit():
                raise ValueError(f"run {item!r}: expected <sampling>:<order seed>, sampling one of {SAMPLINGS}")
            parsed.append((sampling, int(seed)))
        if self.overrides and not self.tag:
            raise ValueError(f"overrides {self.overrides} need a --tag to name their runs")
        if self.distill and self.distill not in self.spec()["setups"]:
            raise ValueError(f"--distill {self.distill!r} is not a setup of {self.sweep}")
        return parsed

    def spec(self) -> dict:
        """The sweep file's tables."""
        return tomllib.loads(Path(self.sweep).read_text(encoding="utf-8"))

    def run_dir(self, sampling: str, order_seed: int) -> Path:
        return Path(self.out) / (f"{sampling}_o{order_seed}_s{self.init_seed}" + (f"_{self.tag}" if self.tag else ""))


def order_examples(examples: list, sampling: str, epochs: int, seed: int) -> tuple[list, int]:
    """The examples and epoch count to hand ``train_sft`` for ``sampling``: the set itself for
    ``epochs`` passes, or one pass over ``epochs × len(examples)`` draws with replacement."""
    if sampling == "epochs":
        return examples, epochs
    rng = random.Random(seed)
    return [examples[rng.randrange(len(examples))] for _ in range(epochs * len(examples))], 1


def held_out_accuracy(evals: dict) -> float:
    """Accuracy averaged over the held-out splits of one evaluation ({split: {"accuracy": …}})."""
    return statistics.fmean(evals[split]["accuracy"]["value"] for split in HELD_OUT)


def run_one(cfg: OrderConfig, sampling: str, order_seed: int, progress: bool = True) -> dict:
    spec = cfg.spec()
    teacher = [f"teacher={json.dumps(spec['teacher'])}", *_student_overrides(spec)]
    student = load_config(DistillRunConfig, CONFIGS / spec["distill_config"], teacher).student
    overrides = [*_overrides(spec.get("train_overrides", {})), *cfg.overrides, f"seed={cfg.init_seed}"]
    train = student_train_config(Path(spec["teacher"]), student, overrides).resolved()
    h = load_hierarchy(train.data)
    splits, _ = build_splits(h, train.tasks)
    tokenizer = build_tokenizer(h)
    examples, epochs = order_examples(list(splits["warm_start"]), sampling, train.sft.epochs, order_seed)
    sft = train.sft
    sft.seed, sft.epochs, sft.eval_every, sft.checkpoint_every = order_seed, epochs, 0, 0

    random.seed(train.seed)
    torch.manual_seed(train.seed)  # the initial weights, as hyperr1 train seeds them
    model = HyperR1ForConditionalGeneration(train.model.hf_config(len(tokenizer)))
    directory = cfg.run_dir(sampling, order_seed)
    history = train_sft(model, tokenizer, examples, sft, out=directory / "warm_start", progress=progress)
    policy = TextPolicy(model, tokenizer, max_new_tokens=train.grpo.max_completion_length, seed=train.eval.seed)
    evals = headline(evaluate(policy, _held_out(splits, train.eval_min_hops), h, train.eval))
    result = {
        "sampling": sampling,
        "tag": cfg.tag,
        "overrides": cfg.overrides,
        "order_seed": order_seed,
        "init_seed": cfg.init_seed,
        "sweep": cfg.sweep,
        "sequences": len(examples) * epochs,
        "final_sft_loss": history[-1]["sft/loss"],
        "held_out": held_out_accuracy(evals),
        "eval": evals,
        "config": {"order": asdict(cfg), "train": asdict(train)},
    }
    write_json(directory / "results.json", result)
    return result


def distill_one(cfg: OrderConfig, sampling: str, order_seed: int, progress: bool = True) -> dict:
    """The sweep's setup ``cfg.distill`` (its teacher, student, overrides; seed ``init_seed``) from the
    finished warm start of one run: does the order's effect survive distillation? Adds
    ``distilled`` (the setup, and the student's and teacher's held-out accuracy, mean of the two
    splits) to the run's results.json."""
    spec = cfg.spec()
    directory = cfg.run_dir(sampling, order_seed)
    overrides = [
        f"teacher={json.dumps(spec['teacher'])}",
        *_student_overrides(spec),
        *_overrides(spec.get("distill_overrides", {})),
        *_overrides(spec["setups"][cfg.distill].get("overrides", {})),
        'init="checkpoint"',
        f"init_checkpoint={json.dumps(str(directory / 'warm_start' / 'model'))}",
        f"name={json.dumps(cfg.distill)}",
        f"out={json.dumps(str(directory))}",
        f"seed={cfg.init_seed}",
    ]
    run = load_config(DistillRunConfig, CONFIGS / spec["distill_config"], overrides)
    resume = (directory / cfg.distill / "config.json").exists()
    res = run_distill(run, resume=resume, progress=progress)
    result = json.loads((directory / "results.json").read_text())
    result["distilled"] = {
        "setup": cfg.distill,
        "held_out": held_out_accuracy(res["student_eval"]),
        "teacher_held_out": held_out_accuracy(res["teacher_eval"]),
    }
    write_json(directory / "results.json", result)
    return result["distilled"]


def table(rows: list[dict]) -> str:
    lines = [
        "| sampling | settings | init seed | order seeds | held-out acc (mean ± 95% CI) | per order seed "
        "| final gold NLL | distilled |",
        "|---|---|---:|---|---:|---|---|---|",
    ]
    groups = sorted({(r.get("tag", ""), r["init_seed"]) for r in rows})
    for sampling in SAMPLINGS:
        for tag, init in groups:
            sel = [r for r in rows if r["sampling"] == sampling and r.get("tag", "") == tag and r["init_seed"] == init]
            if not sel:
                continue
            sel.sort(key=lambda r: r["order_seed"])
            m, ci = mean_ci([r["held_out"] for r in sel])
            acc = f"{m:.3f}" if len(sel) < 2 else f"{m:.3f} ± {ci:.3f}"
            settings = ", ".join(sel[0].get("overrides", [])) or "as the sweep"
            seeds = ", ".join(str(r["order_seed"]) for r in sel)
            per = ", ".join(f"{r['held_out']:.3f}" for r in sel)
            nll = ", ".join(f"{r['final_sft_loss']:.3f}" for r in sel)
            distilled = ", ".join(f"{r['distilled']['held_out']:.3f}" if "distilled" in r else "—" for r in sel)
            lines.append(f"| {sampling} | {settings} | {init} | {seeds} | {acc} | {per} | {nll} | {distilled} |")
    return "\n".join(lines) + "\n"


def _key(r: dict) -> tuple:
    return r["sampling"], r.get("tag", ""), r["init_seed"], r["order_seed"]


def collect(cfg: OrderConfig) -> str:
    """Merge the finished runs under ``cfg.out`` into the rows already in ``runs.jsonl`` (a run
    directory replaces its row; rows whose directories are gone, e.g. on another machine, stay)."""
    results = Path(cfg.results)
    results.mkdir(parents=True, exist_ok=True)
    jsonl = results / "runs.jsonl"
    rows = {_key(r): r for r in map(json.loads, jsonl.read_text().splitlines())} if jsonl.exists() else {}
    keep = (
        "sampling",
        "tag",
        "overrides",
        "order_seed",
        "init_seed",
        "sweep",
        "sequences",
        "final_sft_loss",
        "held_out",
        "eval",
        "distilled",
    )
    for path in sorted(Path(cfg.out).glob("*/results.json")):
        r = json.loads(path.read_text())
        rows[_key(r)] = {k: r[k] for k in keep if k in r}
    ordered = sorted(rows.values(), key=_key)
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ordered))
    text = table(ordered)
    (results / "table.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", default=OrderConfig.sweep)
    ap.add_argument("--init-seed", type=int, default=0)
    ap.add_argument(
        "--runs", nargs="+", default=["epochs:1"], help="<sampling>:<order seed>, sampling in epochs|replacement"
    )
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="train settings, e.g. sft.warmup_steps=230"
    )
    ap.add_argument("--tag", default="", help="names the --set runs")
    ap.add_argument(
        "--distill", default="", metavar="SETUP", help="then run this setup of the sweep from each warm start"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = OrderConfig(
        sweep=args.sweep,
        init_seed=args.init_seed,
        runs=args.runs,
        overrides=args.set,
        tag=args.tag,
        distill=args.distill,
    )
    if not args.collect_only:
        for sampling, seed in cfg.parsed_runs():
            directory = cfg.run_dir(sampling, seed)
            if not (directory / "results.json").exists():
                print(f"== {sampling}, order seed {seed}, init seed {cfg.init_seed}", flush=True)
                result = run_one(cfg, sampling, seed, progress=not args.quiet)
                print(json.dumps({k: result[k] for k in ("held_out", "final_sft_loss")}), flush=True)
            if cfg.distill and "distilled" not in json.loads((directory / "results.json").read_text()):
                print(f"== {cfg.distill} from {directory.name}", flush=True)
                print(json.dumps(distill_one(cfg, sampling, seed, progress=not args.quiet)), flush=True)
    print(collect(cfg))


if __name__ == "__main__":
    main()
