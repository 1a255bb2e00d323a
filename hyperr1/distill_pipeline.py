"""``hyperr1 distill``: a trained Poincaré-head teacher → a small Euclidean-head student.

    hyperr1 distill --teacher runs/<teacher> [--config experiments/configs/<name>.toml]
                    [--set distill.steps=200] [--resume | --overwrite]

writes ``runs/<name>/`` like ``hyperr1 train``::

    config.json            the run record (resolved DistillRunConfig, the teacher's record and commit)
    distill/               metrics.jsonl, samples.jsonl, checkpoints/step_*/ (hyperr1.loop)
    eval_teacher.json      the teacher on every evaluation set (for retention)
    eval_student.json      the student on the same sets
    student/               the student and tokenizer (AutoModelForSeq2SeqLM / AutoTokenizer)
    results.json           headline accuracies with 95% CIs, parameter counts, retention

The teacher's run record gives the hierarchy, the task splits and the tokenizer, so the student sees
exactly the teacher's world. Distillation prompts are a *seen* share (``prompt_share``) of the
teacher's training queries. For the benchmark-bias table the evaluation sets are (all with hops ≥
``eval_min_hops``):

    distill_seen          training queries that are distillation prompts              (a)
    distill_unseen        training queries of the other share, same concepts          (b)
    test_unseen_pair /    the held-out splits (unseen pairs; held-out subjects)        (c)
    test_unseen_subject
    distill_subtree       queries about a held-out subtree (``bias_subtree``): no      (d)
                          distillation prompt names any of its concepts

and results.json holds each gap (seen − other) for the teacher and the student, and the student's
mean token confidence (the probability of each token it emits greedily) per set: a student whose
accuracy falls much further than the teacher's from (a) to (d), or whose confidence does, memorises.
A missing or unfinished teacher, a Euclidean teacher, a student above ``max_param_ratio`` of the
teacher's parameters, or a tokenizer that is not the teacher's is an error naming the problem.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hyperr1.decoding import TextPolicy, encode_prompts, sample
from hyperr1.distill import INITS, DistillConfig, DistillTrainer, init_student_from_teacher
from hyperr1.evaluate import EvalConfig, evaluate, write_results
from hyperr1.hierarchy import load_hierarchy
from hyperr1.loop import start_mode
from hyperr1.model import HyperR1ForConditionalGeneration, count_parameters
from hyperr1.pipeline import (
    ModelConfig,
    TrainConfig,
    check_finite,
    check_run_name,
    config_from_dict,
    headline,
    save_final_policy,
)
from hyperr1.runs import RunLock, open_run_directory, read_json, read_record, write_json
from hyperr1.splits import TEST_SPLITS, build_splits
from hyperr1.tokenizer import build_tokenizer, load_tokenizer

RESUMABLE_CHANGES = ("distill.steps",)


def _tiny_student() -> ModelConfig:
    """27,771 parameters with the mammals vocabulary: 7.9% of the shipped 353,065-parameter teacher."""
    return ModelConfig(head="euclidean", head_dim=4, d_model=12, layers=1, attention_heads=2, ffn_dim=24)


@dataclass
class DistillRunConfig:
    """One run of ``hyperr1 distill``: the student, the distillation, the evaluation."""

    name: str = "distill"  # run name: the output goes to <out>/<name>
    teacher: str = ""  # the teacher's run directory (a finished `hyperr1 train`, with policy/)
    out: str = "runs"  # parent directory of the run directory
    seed: int = 0  # seed of the student's initial weights, the prompt share and the distillation
    init: str = "logmap"  # student initialisation: "logmap" (from the teacher, see hyperr1.distill) | "random"
    #   | "checkpoint" (the weights of init_checkpoint, e.g. a student's own warm start)
    init_checkpoint: str = ""  # init="checkpoint": a saved policy directory (config.json, model.safetensors)
    max_param_ratio: float = 0.1  # the student may have at most this share of the teacher's parameters
    prompt_share: float = 0.5  # share of the teacher's training queries used as distillation prompts
    bias_examples: int = 300  # seen / unseen / subtree queries (hops >= eval_min_hops) in the bias evaluation
    bias_subtree: str = "auto"  # root of the held-out subtree ("auto": the one nearest 5% of the concepts; "": none)
    eval_min_hops: int = 3  # held-out evaluation on queries with at least this many hops
    device: str = "cpu"  # "cpu" or "cuda"
    student: ModelConfig = field(default_factory=_tiny_student)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def validate(self) -> None:
        check_finite(self)
        check_run_name(self.name, self.out)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if (self.init == "checkpoint") != bool(self.init_checkpoint):
            raise ValueError("init='checkpoint' and init_checkpoint (a saved policy directory) go together")
        if not 0 < self.max_param_ratio <= 1 or not 0 < self.prompt_share < 1:
            raise ValueError("need max_param_ratio in (0, 1] and prompt_share in (0, 1)")
        if not self.teacher:
            raise ValueError("teacher: name the teacher's run directory (--teacher runs/<name>)")
        if self.student.head != "euclidean":
            raise ValueError(f"student.head must be 'euclidean' (a Euclidean-head student), got {self.student.head!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        try:
            self.distill.validate()
        except ValueError as err:
            raise ValueError(f"distill: {err}") from err
        self.student.hf_config(vocab_size=8)


def load_teacher(teacher_dir: str | Path, device="cpu"):
    """(teacher policy, tokenizer, the teacher's resolved TrainConfig) from a finished train run."""
    teacher_dir = Path(teacher_dir)
    if not teacher_dir.is_dir():
        raise FileNotFoundError(f"teacher run directory {teacher_dir!s} does not exist (pass --teacher runs/<name>)")
    policy = teacher_dir / "policy"
    if not (policy / "model.safetensors").is_file():
        raise FileNotFoundError(f"teacher {teacher_dir}: no final policy at {policy} (did its `hyperr1 train` finish?)")
    record = read_record(teacher_dir)
    if record.get("kind") != "train":
        raise ValueError(f"{teacher_dir} is a {record.get('kind')!r} run, not a `hyperr1 train` teacher")
    tcfg = config_from_dict(TrainConfig, record["config"])
    teacher = HyperR1ForConditionalGeneration.from_pretrained(policy).to(device)
    if teacher.config.head != "poincare":
        raise ValueError(f"teacher {teacher_dir} has a {teacher.config.head!r} head; distillation needs a Poincaré one")
    return teacher, load_tokenizer(policy), tcfg


def load_student_weights(student: HyperR1ForConditionalGeneration, directory: str | Path) -> None:
    """Copy the weights of the policy saved in ``directory`` into ``student``, which must have its
    architecture and vocabulary: a multi-stage recipe (a student's own warm start, then
    distillation) starts from the first stage's output."""
    directory = Path(directory)
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(f"init_checkpoint {directory!s}: no saved policy (model.safetensors) there")
    saved = HyperR1ForConditionalGeneration.from_pretrained(directory)
    # the shape, and what the weights' shapes do not show (the number of attention heads)
    fields = (
        "head", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim",
        "encoder_attention_heads", "decoder_attention_heads", "head_dim", "vocab_size",
    )  # fmt: skip
    differ = [f for f in fields if getattr(saved.config, f, None) != getattr(student.config, f, None)]
    if differ:
        shown = ", ".join(f"{f} {getattr(saved.config, f, None)} vs {getattr(student.config, f, None)}" for f in differ)
        raise ValueError(f"init_checkpoint {directory!s} is not a policy of the student's shape ({shown})")
    try:
        student.load_state_dict(saved.state_dict(), strict=True)
    except RuntimeError as err:
        raise ValueError(f"init_checkpoint {directory!s} does not fit the student: {err}") from err


def run_distill(cfg: DistillRunConfig, *, resume: bool = False, overwrite: bool = False, progress=True) -> dict:
    """Distil the teacher of ``cfg`` into a new student (see the module docstring); returns results."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    cfg.validate()
    device = torch.device("cuda" if cfg.device == "cuda" else "cpu")
    teacher, tokenizer, tcfg = load_teacher(cfg.teacher, device)
    h = load_hierarchy(tcfg.data)
    if build_tokenizer(h).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"the tokenizer of {cfg.teacher}/policy is not the one of its hierarchy {tcfg.data!r}")
    splits, _ = build_splits(h, tcfg.tasks)
    root = held_out_subtree(h, cfg.bias_subtree)
    inside = h.descendants(root) | {root} if root else set()
    seen, unseen, subtree = prompt_pools(splits["train"], inside, cfg.prompt_share, cfg.seed)

    torch.manual_seed(cfg.seed)
    student = HyperR1ForConditionalGeneration(cfg.student.hf_config(len(tokenizer))).to(device)
    n_student, n_teacher = count_parameters(student), count_parameters(teacher)
    if n_student > cfg.max_param_ratio * n_teacher:
        raise ValueError(
            f"the student has {n_student:,} parameters, {n_student / n_teacher:.1%} of the teacher's {n_teacher:,}; "
            f"max_param_ratio allows {cfg.max_param_ratio:.1%}: shrink [student]"
        )
    if cfg.init == "logmap":
        init_student_from_teacher(student, teacher)
    elif cfg.init == "checkpoint":
        load_student_weights(student, cfg.init_checkpoint)

    cfg.distill.eval_min_hops, cfg.distill.seed = cfg.eval_min_hops, cfg.seed
    run = cfg.run_dir
    evals = _evaluation_sets(splits, seen, unseen, subtree, cfg)
    with RunLock(run):
        config = {**asdict(cfg), "teacher_record": read_record(cfg.teacher)["meta"]}
        modes = dict(resume=resume, overwrite=overwrite)
        open_run_directory(run, config, kind="distill", resumable=RESUMABLE_CHANGES, **modes)
        held_out = {name: evals[name] for name in TEST_SPLITS}
        gold = gold_completions(splits, seen, cfg.distill) if cfg.distill.alpha_ce > 0 else []
        trainer = DistillTrainer(
            student,
            teacher,
            tokenizer,
            seen,
            h,
            cfg.distill,
            run / "distill",
            eval_splits=held_out,
            gold=gold,
            config=config,
            progress=progress,
        )
        trainer.train(**start_mode(trainer, resume))
        length = cfg.distill.max_completion_length
        if resume and (run / "eval_teacher.json").exists():
            teacher_eval = read_json(run / "eval_teacher.json")
        else:
            policy = TextPolicy(teacher, tokenizer, max_new_tokens=length, seed=cfg.eval.seed)
            teacher_eval = evaluate(policy, evals, h, cfg.eval)
            write_results(teacher_eval, run / "eval_teacher.json")
        policy = TextPolicy(student, tokenizer, max_new_tokens=length, seed=cfg.eval.seed)
        student_eval = evaluate(policy, evals, h, cfg.eval)
        write_results(student_eval, run / "eval_student.json")
        save_final_policy(student, tokenizer, run / "student")
        results = _results(cfg, teacher_eval, student_eval, n_teacher, n_student, trainer.step_count)
        results["bias_subtree"] = {
            "root": root,
            "concepts": len(inside),
            "queries": len(evals.get("distill_subtree", [])),
        }
        results["student_confidence"] = {
            name: mean_token_confidence(student, tokenizer, [ex.prompt for ex in exs], length)
            for name, exs in evals.items()
            if name.startswith("distill_") and exs
        }
        write_json(run / "results.json", results)
    return results


def held_out_subtree(h, choice: str) -> str | None:
    """The root of the bias evaluation's held-out subtree: ``choice`` itself, none for ``""``, or
    for ``"auto"`` the concept whose subtree (itself and its descendants) is nearest 5% of the
    hierarchy's concepts, among those with a parent (ties: the name), so any hierarchy has one."""
    if not choice:
        return None
    if choice != "auto":
        if choice not in h:
            raise ValueError(f"bias_subtree: {choice!r} is not a concept of the hierarchy")
        return choice
    target = 0.05 * len(h)
    candidates = [x for x in h if h.parents(x)]
    if not candidates:
        return None
    return min(candidates, key=lambda x: (abs(len(h.descendants(x)) + 1 - target), x))


def gold_completions(splits: dict, seen: list, cfg: DistillConfig) -> list:
    """The gold completions of the hard-target term (``cfg.gold_pool``): the teacher's warm-start
    data, which holds every training query (the held-out subtree's too, so (d) then measures what
    the teacher's signal adds), or the distillation prompts' own gold completions."""
    return list(splits["warm_start"]) if cfg.gold_pool == "warm_start" else list(seen)


def prompt_pools(train: list, inside: set, share: float, seed: int) -> tuple[list, list, list]:
    """(seen, unseen, subtree) of the teacher's training queries: the queries naming no concept of
    ``inside`` (the held-out subtree), shuffled by ``seed`` and cut at ``share`` into the
    distillation prompts and the rest; and the queries about a concept of ``inside``."""
    outside = [ex for ex in train if not inside.intersection(ex.args)]
    random.Random(seed).shuffle(outside)
    n_seen = int(share * len(outside))
    return outside[:n_seen], outside[n_seen:], [ex for ex in train if ex.args[0] in inside]


@torch.no_grad()
def mean_token_confidence(model, tokenizer, prompts: list[str], max_new_tokens: int, batch: int = 128) -> float:
    """Mean over the tokens the model emits greedily of the probability it gives them (a
    memorisation signal: compare seen and unseen prompts)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(prompts), batch):
        ids, amask = encode_prompts(tokenizer, prompts[i : i + batch], model.device)
        out = sample(model, ids, amask, max_new_tokens=max_new_tokens, greedy=True)
        total += out.logprobs.exp()[out.mask].sum().item()
        count += int(out.mask.sum())
    return total / max(count, 1)


def _evaluation_sets(splits: dict, seen: list, unseen: list, subtree: list, cfg: DistillRunConfig) -> dict:
    """Held-out splits (hops ≥ eval_min_hops) and fixed subsets of the seen, unseen and held-out
    subtree training queries (see the module docstring)."""
    hops = cfg.eval_min_hops
    sets = {name: [ex for ex in splits[name] if ex.hops >= hops] for name in TEST_SPLITS}
    for name, pool in (("distill_seen", seen), ("distill_unseen", unseen), ("distill_subtree", subtree)):
        multi = [ex for ex in pool if ex.hops >= hops]
        if multi or name != "distill_subtree":
            sets[name] = multi[: cfg.bias_examples]
    return sets


def _results(cfg, teacher_eval, student_eval, n_teacher, n_student, steps) -> dict:
    teacher, student = headline(teacher_eval), headline(student_eval)
    retention = {
        split: student[split]["accuracy"]["value"] / teacher[split]["accuracy"]["value"]
        if teacher[split]["accuracy"]["value"] > 0
        else None
        for split in teacher
    }
    gap = {
        who: {
            other: res["distill_seen"]["accuracy"]["value"] - res[other]["accuracy"]["value"]
            for other in ("distill_unseen", *TEST_SPLITS, "distill_subtree")
            if other in res
        }
        for who, res in (("teacher", teacher), ("student", student))
    }
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "teacher": cfg.teacher,
        "divergence": cfg.distill.divergence,
        "lam": cfg.distill.lam,
        "init": cfg.init,
        "steps": steps,
        "parameters": {"teacher": n_teacher, "student": n_student, "ratio": n_student / n_teacher},
        "teacher_eval": teacher,
        "student_eval": student,
        "retention": retention,
        "gap_from_seen": gap,  # accuracy on distill_seen minus that on each other set
        "student_dir": str(cfg.run_dir / "student"),
    }


__all__ = ["DistillRunConfig", "load_teacher", "run_distill"]
