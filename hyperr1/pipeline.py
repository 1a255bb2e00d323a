"""``hyperr1 train``: warm start → GRPO → evaluation, one run directory per config.

    hyperr1 train --config experiments/configs/mammals_poincare.toml [--set grpo.steps=20]
                  [--resume | --overwrite]

writes ``runs/<name>/``::

    config.json              the run record (hyperr1.runs): resolved TrainConfig, version, commit,
                             machine, command line, start time; each --resume appended
    tokenizer/               the word-level tokenizer (save_pretrained)
    warm_start/              metrics.jsonl, config.json, model/ (safetensors), done.json
    grpo/                    metrics.jsonl, samples.jsonl, collapses.jsonl, checkpoints/step_*/
    eval_warm_start.json     held-out evaluation of the warm-started policy (hyperr1.evaluate)
    eval_grpo.json           held-out evaluation after GRPO
    policy/                  the final policy and tokenizer (AutoModelForSeq2SeqLM / AutoTokenizer)
    results.json             the headline numbers of both, with 95% CIs, and the lift (GRPO − warm start,
                             paired bootstrap over the held-out examples)

One process owns a run directory (:class:`hyperr1.runs.RunLock`). A new run refuses a directory
that holds files unless ``--overwrite`` (which clears it); ``--resume`` continues the recorded run
— a finished warm start is reused, GRPO continues from its newest intact checkpoint — and refuses
any config change but ``grpo.steps`` (the step budget), and a run with nothing to resume from.

A TOML config has top-level keys (``name``, ``data``, ``seed``, ``out``) and one table per part:
``[model]`` (:class:`ModelConfig`), ``[tasks]`` (:class:`hyperr1.splits.TasksConfig`), ``[sft]``
(:class:`hyperr1.sft.SFTConfig`), ``[grpo]`` (:class:`hyperr1.trainer.GRPOConfig`), ``[eval]``
(:class:`hyperr1.evaluate.EvalConfig`). Unknown keys, wrong types, NaN/inf and out-of-range values
are errors naming the key, raised before any work. The run's ``seed`` seeds the task splits, the
initial weights, the warm start and GRPO.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import shutil
import typing
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib
import torch

from hyperr1.decoding import TextPolicy
from hyperr1.distributed import barrier, init_distributed, world
from hyperr1.evaluate import EvalConfig, evaluate, paired_lift, write_results
from hyperr1.faults import crash_point
from hyperr1.hierarchy import load_hierarchy
from hyperr1.loop import start_mode
from hyperr1.model import HyperR1Config, HyperR1ForConditionalGeneration, count_parameters, save_policy
from hyperr1.runs import (
    RunLock,
    config_changes,
    open_run_directory,
    read_config_file,
    read_json,
    read_record,
    write_json,
)
from hyperr1.sft import SFTConfig, train_sft
from hyperr1.splits import TEST_SPLITS, TasksConfig, build_splits
from hyperr1.tokenizer import build_tokenizer
from hyperr1.trainer import GRPOConfig, GRPOTrainer, eval_subset, greedy_metrics

_DEFAULTS = HyperR1Config()  # the one source of the model's defaults
RESUMABLE_CHANGES = ("grpo.steps",)  # what a --resume may change: the step budget


@dataclass
class ModelConfig:
    """Size and head of the policy: the [model] table, mapped onto :class:`hyperr1.model.HyperR1Config`
    (whose defaults these are; ``layers``/``attention_heads``/``ffn_dim`` set encoder and decoder alike)."""

    head: str = _DEFAULTS.head  # output layer: "poincare" or "euclidean"
    head_dim: int = _DEFAULTS.head_dim  # k: dimension of the head's space
    d_model: int = _DEFAULTS.d_model  # D: transformer width
    layers: int = _DEFAULTS.encoder_layers  # encoder layers = decoder layers
    attention_heads: int = _DEFAULTS.encoder_attention_heads  # attention heads per layer
    ffn_dim: int = _DEFAULTS.encoder_ffn_dim  # hidden width of each MLP
    curvature: float = _DEFAULTS.curvature  # c of the ball
    learn_curvature: bool = _DEFAULTS.learn_curvature  # train c
    clip_r: float | None = _DEFAULTS.clip_r  # feature clipping radius r before exp₀ (None: off)
    head_init_scale: float = _DEFAULTS.head_init_scale  # initial s of logit = −s·d(z, p) + b
    head_kernel: str = _DEFAULTS.head_kernel  # distance kernel of the Poincaré head: "auto" | "eager" | "native"
    init_std: float = _DEFAULTS.init_std  # std of the normal initialisation of linear and embedding weights
    activation_function: str = _DEFAULTS.activation_function  # MLP activation (a transformers ACT2FN name)
    max_position_embeddings: int = _DEFAULTS.max_position_embeddings  # longest prompt / completion

    def hf_config(self, vocab_size: int) -> HyperR1Config:
        return HyperR1Config(
            vocab_size=vocab_size,
            d_model=self.d_model,
            encoder_layers=self.layers,
            decoder_layers=self.layers,
            encoder_attention_heads=self.attention_heads,
            decoder_attention_heads=self.attention_heads,
            encoder_ffn_dim=self.ffn_dim,
            decoder_ffn_dim=self.ffn_dim,
            head=self.head,
            head_dim=self.head_dim,
            curvature=self.curvature,
            learn_curvature=self.learn_curvature,
            clip_r=self.clip_r,
            head_init_scale=self.head_init_scale,
            head_kernel=self.head_kernel,
            init_std=self.init_std,
            activation_function=self.activation_function,
            max_position_embeddings=self.max_position_embeddings,
        )


@dataclass
class TrainConfig:
    """One run of the pipeline: warm start → GRPO → evaluation."""

    name: str = "mammals_poincare"  # run name: the output goes to <out>/<name>
    data: str = "mammals"  # shipped hierarchy name or child<TAB>parent TSV path
    out: str = "runs"  # parent directory of the run directory
    seed: int = 0  # seed of splits (unless split_seed), initial weights, warm start and GRPO
    split_seed: int | None = None  # seed of the task splits alone (None: seed); fix it to pair seeds on one test set
    eval_min_hops: int = 3  # held-out evaluation on queries with at least this many hops
    device: str = "cpu"  # "cpu" or "cuda" (under torchrun: one GPU per rank, nccl)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def resolved(self) -> TrainConfig:
        """A copy with the run-level data and seed pushed into the parts that use them."""
        cfg = copy.deepcopy(self)
        split_seed = self.seed if self.split_seed is None else self.split_seed
        cfg.tasks.data, cfg.tasks.seed, cfg.tasks.out = self.data, split_seed, str(self.run_dir / "tasks")
        cfg.sft.seed = cfg.grpo.seed = self.seed
        cfg.grpo.eval_min_hops = self.eval_min_hops
        return cfg

    def validate(self) -> None:
        """Every value checked before any work; errors name the key."""
        check_finite(self)
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available")
        check_run_name(self.name, self.out)
        if self.eval_min_hops < 1:
            raise ValueError(f"eval_min_hops must be >= 1, got {self.eval_min_hops}")
        for part in ("sft", "grpo"):
            try:
                getattr(self, part).validate()
            except ValueError as err:
                raise ValueError(f"{part}: {err}") from err
        try:
            self.model.hf_config(vocab_size=8)  # HyperR1Config raises on an invalid head or size
        except (ValueError, TypeError) as err:
            raise ValueError(f"model: {err}") from err
        if self.grpo.max_completion_length > self.model.max_position_embeddings:
            raise ValueError(
                f"grpo.max_completion_length={self.grpo.max_completion_length} exceeds "
                f"model.max_position_embeddings={self.model.max_position_embeddings}"
            )


def check_finite(cfg, where: str = "config") -> None:
    """``ValueError`` naming the first float field (at any depth) that is NaN or infinite."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_finite(value, f"{where}.{f.name}" if where != "config" else f.name)
        elif isinstance(value, float) and not math.isfinite(value):
            key = f"{where}.{f.name}" if where != "config" else f.name
            raise ValueError(f"{key} must be a finite number, got {value}")


def check_run_name(name: str, out: str) -> None:
    """The run directory ``<out>/<name>`` must lie inside ``out``: no absolute name, no ``..``."""
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or name.strip() != name:
        raise ValueError(f"name {name!r} must be a relative run name inside --out (no '..', not absolute)")
    if not (Path(out) / name).resolve().is_relative_to(Path(out).resolve()):
        raise ValueError(f"name {name!r} escapes --out {out!r}")


# ---------------------------------------------------------------- configs from files


def config_from_dict(cls: type, values: dict, where: str = "config", base=None):
    """Build dataclass ``cls`` from nested dicts over the defaults (or over ``base``, an instance of
    ``cls``: a nested table overrides its field's default factory value key by key); unknown keys
    raise ``ValueError`` naming them."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a table, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    if unknown := sorted(set(values) - set(known)):
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = config_from_dict(type(default), value, f"{where}.{name}", base=default)
        else:
            kwargs[name] = _check_type(value, hints[name], f"{where}.{name}")
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _check_type(value, hint, where: str):
    """``value`` if it fits a scalar annotation (``int``, ``float``, ``str``, ``bool``, optional), else ValueError."""
    allowed = [a for a in typing.get_args(hint)] or [hint]
    if value is None and type(None) in allowed:
        return value
    for t in allowed:
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t in (int, str, bool) and isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    names = [getattr(a, "__name__", str(a)) for a in allowed]
    raise ValueError(f"{where}: expected {' or '.join(names)}, got {value!r}")


def load_config(
    cls: type, path: str | Path | None = None, overrides: Sequence[str] = (), *, values: dict | None = None
):
    """Dataclass ``cls`` from a TOML/JSON file, or from the nested dict ``values`` (e.g. a run
    record's ``config``), or the defaults; then ``section.key=value`` overrides (values in TOML
    syntax; a bare word is a string, ``none`` resets an optional field), then ``cls.validate()``."""
    if path is not None and values is not None:
        raise ValueError("load_config takes a path or values, not both")
    values = copy.deepcopy(values) if values is not None else read_config_file(path) if path is not None else {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        if raw.strip().lower() in ("none", "null"):
            value = None  # TOML has no null; "none" resets an optional field
        else:
            try:
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                value = raw  # a bare word is a string
        *parents, leaf = key.strip().split(".")
        table = values
        for p in parents:
            table = table.setdefault(p, {})
            if not isinstance(table, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a table")
        table[leaf] = value
    cfg = config_from_dict(cls, values)
    cfg.validate()
    return cfg


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """TrainConfig from a TOML/JSON file (or the defaults), then ``section.key=value`` overrides."""
    return load_config(TrainConfig, path, overrides)


# ---------------------------------------------------------------- the pipeline


def _held_out(splits: dict, min_hops: int) -> dict:
    return {name: [ex for ex in splits[name] if ex.hops >= min_hops] for name in TEST_SPLITS}


def headline(results: dict) -> dict:
    """``{split: {metric: {value, ci}}}`` of the overall metrics, for results.json."""
    keep = ("accuracy", "pass@1", "maj@k", "format", "faithfulness", "reflection_rate")
    return {
        split: {m: res["overall"][m] for m in keep if m in res["overall"]} for split, res in results["splits"].items()
    }


def run_train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    warm_start_from: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Run the pipeline of ``cfg`` (see the module docstring); returns the results dict.

    ``warm_start_from`` names another run directory whose finished warm start this run reuses (its
    data, seed, [model], [tasks] and [sft] must equal this config's): GRPO-only variants then skip
    the warm start. The reuse is recorded in this run's record.
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if warm_start_from is not None and resume:
        raise ValueError("--warm-start-from starts a new run; a resumed run already has its warm start")
    cfg.validate()
    init_distributed(cfg.device)
    rank, _ = world()
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.device == "cuda" else torch.device("cpu")
    cfg = cfg.resolved()
    run = cfg.run_dir
    with RunLock(run) if rank == 0 else nullcontext():
        if rank == 0:
            source = check_warm_start(Path(warm_start_from), cfg) if warm_start_from is not None else None
            modes = dict(resume=resume, overwrite=overwrite)
            open_run_directory(run, asdict(cfg), kind="train", resumable=RESUMABLE_CHANGES, **modes)
            if source is not None:
                adopt_warm_start(source, run)
        barrier()
        return _run_pipeline(cfg, run, device, resume=resume or warm_start_from is not None, progress=progress)


WARM_START_KEYS = ("data", "seed", "model", "tasks", "sft")  # what a warm start depends on


def check_warm_start(source: Path, cfg: TrainConfig) -> Path:
    """``source`` if it holds a finished warm start made under this config's WARM_START_KEYS."""
    record = read_record(source)
    if not (source / "warm_start" / "done.json").is_file():
        raise FileNotFoundError(f"--warm-start-from: {source} has no finished warm start (warm_start/done.json)")
    old = {k: record["config"].get(k) for k in WARM_START_KEYS}
    new = {k: asdict(cfg).get(k) for k in WARM_START_KEYS}
    for table in (old, new):  # where the splits are written differs between runs; it changes nothing
        if isinstance(table.get("tasks"), dict):
            table["tasks"] = {k: v for k, v in table["tasks"].items() if k != "out"}
    if differ := config_changes(old, new):
        raise ValueError(f"--warm-start-from {source}: its warm start was made with other settings: {differ}")
    return source


def adopt_warm_start(source: Path, run: Path) -> None:
    """Copy the finished warm start of ``source`` into ``run`` and note it in ``run``'s record."""
    shutil.copytree(source / "warm_start", run / "warm_start")
    record = read_record(run)
    record["warm_start_from"] = {"run": str(source), "meta": read_record(source)["meta"]}
    write_json(run / "config.json", record)


def _run_pipeline(cfg: TrainConfig, run: Path, device: torch.device, *, resume: bool, progress: bool) -> dict:
    rank, _ = world()
    h = load_hierarchy(cfg.data)
    splits, audit = build_splits(h, cfg.tasks)
    if not audit["passed"]:
        raise ValueError(f"task splits of {cfg.data!r} failed the contamination audit: {audit}")
    tokenizer = build_tokenizer(h)
    held_out = _held_out(splits, cfg.eval_min_hops)
    if rank == 0:
        tokenizer.save_pretrained(run / "tokenizer")

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    warm_dir = run / "warm_start"
    if resume and (warm_dir / "done.json").exists():  # a finished warm start (an interrupted one is redone)
        model = HyperR1ForConditionalGeneration.from_pretrained(warm_dir / "model").to(device)
    else:
        model = HyperR1ForConditionalGeneration(cfg.model.hf_config(len(tokenizer))).to(device)
        if rank == 0:
            shutil.rmtree(warm_dir, ignore_errors=True)
            monitor = _greedy_monitor(tokenizer, held_out, h, cfg.grpo.eval_examples, cfg.grpo.max_completion_length)
            train_sft(
                model, tokenizer, splits["warm_start"], cfg.sft, out=warm_dir, evaluate_fn=monitor, progress=progress
            )
        _sync_from_disk(model, warm_dir / "model")

    results = {"name": cfg.name, "seed": cfg.seed, "parameters": count_parameters(model)}
    if rank == 0:
        if resume and (run / "eval_warm_start.json").exists():
            warm_eval = read_json(run / "eval_warm_start.json")
        else:
            policy = TextPolicy(model, tokenizer, max_new_tokens=cfg.grpo.max_completion_length, seed=cfg.eval.seed)
            warm_eval = evaluate(policy, held_out, h, cfg.eval)
            write_results(warm_eval, run / "eval_warm_start.json")
            crash_point("run/warm_eval")
        results["warm_start"] = headline(warm_eval)

    trainer = GRPOTrainer(  # π_ref: a frozen copy of the warm-started policy
        model,
        tokenizer,
        splits["train"],
        h,
        cfg.grpo,
        run / "grpo",
        eval_splits=held_out,
        progress=progress,
        config=asdict(cfg),
    )
    trainer.train(**start_mode(trainer, resume))
    crash_point("run/grpo_done")

    if rank == 0:
        policy = TextPolicy(model, tokenizer, max_new_tokens=cfg.grpo.max_completion_length, seed=cfg.eval.seed)
        grpo_eval = evaluate(policy, held_out, h, cfg.eval)
        write_results(grpo_eval, run / "eval_grpo.json")
        save_final_policy(model, tokenizer, run / "policy")
        crash_point("run/policy")
        results["grpo"] = headline(grpo_eval)
        if all("correct" in split for split in warm_eval["splits"].values()):  # not in warm evals of old runs
            results["lift"] = paired_lift(warm_eval, grpo_eval, cfg.eval)
        results["grpo_steps"] = trainer.step_count
        results["collapse_episodes"] = trainer.episodes
        results["rollbacks"] = trainer.rollbacks
        results["policy"] = str(run / "policy")
        write_json(run / "results.json", results)
    return results


def save_final_policy(model: HyperR1ForConditionalGeneration, tokenizer, path: str | Path) -> Path:
    """``save_pretrained`` of the policy and its tokenizer into ``path`` (written beside it, then
    renamed), loadable with ``AutoModelForSeq2SeqLM`` / ``AutoTokenizer`` after ``import hyperr1``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(model, tmp)
    tokenizer.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def _greedy_monitor(tokenizer, held_out: dict, h, n: int, max_new_tokens: int):
    """The warm start's periodic evaluation: greedy accuracy and format on ``n`` held-out examples per split."""
    splits = {name: eval_subset(exs, n) for name, exs in held_out.items()}

    def monitor(model) -> dict:
        return greedy_metrics(
            model, tokenizer, splits, h, max_new_tokens=max_new_tokens, metrics=("accuracy", "format"), per_hops=False
        )[0]

    return monitor


def _sync_from_disk(model: HyperR1ForConditionalGeneration, path: Path) -> None:
    """Under torchrun, ranks other than 0 load the warm start rank 0 wrote."""
    rank, size = world()
    if size == 1:
        return
    torch.distributed.barrier()
    if rank != 0:
        model.load_weights(path)
    torch.distributed.barrier()
