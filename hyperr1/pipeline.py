"""``hyperr1 train``: warm start → GRPO → evaluation, one run directory per config.

    hyperr1 train --config experiments/configs/mammals_poincare.toml [--set grpo.steps=20] [--resume]

writes ``runs/<name>/``::

    config.json              resolved TrainConfig + package version, git commit, machine
    tokenizer/               the word-level tokenizer (save_pretrained)
    warm_start/              metrics.jsonl, config.json, model/ (safetensors)
    grpo/                    metrics.jsonl, samples.jsonl, collapses.jsonl, checkpoints/step_*/
    eval_warm_start.json     held-out evaluation of the warm-started policy (hyperr1.evaluate)
    eval_grpo.json           held-out evaluation after GRPO
    results.json             the headline numbers of both, with 95% CIs

A TOML config has top-level keys (``name``, ``data``, ``seed``, ``out``) and one table per part:
``[model]`` (:class:`ModelConfig`), ``[tasks]`` (:class:`hyperr1.splits.TasksConfig`), ``[sft]``
(:class:`hyperr1.sft.SFTConfig`), ``[grpo]`` (:class:`hyperr1.trainer.GRPOConfig`), ``[eval]``
(:class:`hyperr1.evaluate.EvalConfig`). Unknown keys are errors. The run's ``seed`` seeds the task
splits, the initial weights, the warm start and GRPO.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib
import torch

from hyperr1.evaluate import EvalConfig, evaluate, write_results
from hyperr1.hierarchy import load_hierarchy
from hyperr1.model import HyperR1Config, HyperR1ForConditionalGeneration, TextPolicy, count_parameters
from hyperr1.runs import run_metadata, write_json
from hyperr1.sft import SFTConfig, train_sft
from hyperr1.splits import TEST_SPLITS, TasksConfig, build_splits
from hyperr1.tokenizer import build_tokenizer
from hyperr1.trainer import GRPOConfig, GRPOTrainer, eval_subset, greedy_metrics, init_distributed, world


@dataclass
class ModelConfig:
    """Size and head of the policy (see :class:`hyperr1.model.HyperR1Config`)."""

    head: str = "poincare"  # output layer: "poincare" or "euclidean"
    head_dim: int = 16  # k: dimension of the head's space
    d_model: int = 64  # D: transformer width
    layers: int = 2  # encoder layers = decoder layers
    attention_heads: int = 4  # attention heads per layer
    ffn_dim: int = 256  # hidden width of each MLP
    curvature: float = 1.0  # c of the ball
    learn_curvature: bool = False  # train c
    clip_r: float | None = 2.0  # feature clipping radius r before exp₀ (None: off)
    head_init_scale: float = 5.0  # initial s of logit = −s·d(z, p) + b
    max_position_embeddings: int = 128  # longest prompt / completion

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
            max_position_embeddings=self.max_position_embeddings,
        )


@dataclass
class TrainConfig:
    """One run of the pipeline: warm start → GRPO → evaluation."""

    name: str = "mammals_poincare"  # run name: the output goes to <out>/<name>
    data: str = "mammals"  # shipped hierarchy name or child<TAB>parent TSV path
    out: str = "runs"  # parent directory of the run directory
    seed: int = 0  # seed of splits, initial weights, warm start and GRPO
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
        cfg.tasks.data, cfg.tasks.seed, cfg.tasks.out = self.data, self.seed, str(self.run_dir / "tasks")
        cfg.sft.seed = cfg.grpo.seed = self.seed
        cfg.grpo.eval_min_hops = self.eval_min_hops
        return cfg

    def validate(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available")
        self.sft.validate()
        self.grpo.validate()
        self.model.hf_config(vocab_size=8)  # HyperR1Config raises on an invalid head or size


# ---------------------------------------------------------------- configs from files


def config_from_dict(cls: type, values: dict, where: str = "config"):
    """Build dataclass ``cls`` from nested dicts; unknown keys raise ``ValueError`` naming them."""
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
            kwargs[name] = config_from_dict(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = _check_type(value, hints[name], f"{where}.{name}")
    return cls(**kwargs)


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


def load_train_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """TrainConfig from a TOML/JSON file (or the defaults), then ``section.key=value`` overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            values = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
        except (ValueError, tomllib.TOMLDecodeError) as err:
            raise ValueError(f"cannot parse config file {path}: {err}") from err
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
        table[leaf] = value
    cfg = config_from_dict(TrainConfig, values)
    cfg.validate()
    return cfg


# ---------------------------------------------------------------- the pipeline


def _held_out(splits: dict, min_hops: int) -> dict:
    return {name: [ex for ex in splits[name] if ex.hops >= min_hops] for name in TEST_SPLITS}


def headline(results: dict) -> dict:
    """``{split: {metric: {value, ci}}}`` of the overall metrics, for results.json."""
    keep = ("accuracy", "pass@1", "maj@k", "format", "faithfulness", "reflection_rate")
    return {
        split: {m: res["overall"][m] for m in keep if m in res["overall"]} for split, res in results["splits"].items()
    }


def run_train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Run the pipeline of ``cfg`` (see the module docstring); returns the results dict."""
    init_distributed(cfg.device)
    rank, _ = world()
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.device == "cuda" else torch.device("cpu")
    cfg = cfg.resolved()
    run = cfg.run_dir
    run.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        write_json(run / "config.json", {"config": asdict(cfg), "meta": run_metadata()})

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
    if resume and (warm_dir / "done.json").exists():  # a finished warm start (not an interrupted one)
        model = HyperR1ForConditionalGeneration.from_pretrained(warm_dir / "model").to(device)
    else:
        model = HyperR1ForConditionalGeneration(cfg.model.hf_config(len(tokenizer))).to(device)
        if rank == 0:
            monitor = _greedy_monitor(tokenizer, held_out, h, cfg.grpo.eval_examples, cfg.grpo.max_completion_length)
            train_sft(
                model, tokenizer, splits["warm_start"], cfg.sft, out=warm_dir, evaluate_fn=monitor, progress=progress
            )
        _sync_from_disk(model, warm_dir / "model")

    policy = TextPolicy(model, tokenizer, max_new_tokens=cfg.grpo.max_completion_length, seed=cfg.eval.seed)
    results = {"name": cfg.name, "seed": cfg.seed, "parameters": count_parameters(model)}
    if rank == 0:
        if resume and (run / "eval_warm_start.json").exists():
            warm_eval = json.loads((run / "eval_warm_start.json").read_text())
        else:
            warm_eval = evaluate(policy, held_out, h, cfg.eval)
            write_results(warm_eval, run / "eval_warm_start.json")
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
    )
    trainer.train(resume=resume and trainer.latest_checkpoint() is not None)

    if rank == 0:
        policy = TextPolicy(model, tokenizer, max_new_tokens=cfg.grpo.max_completion_length, seed=cfg.eval.seed)
        grpo_eval = evaluate(policy, held_out, h, cfg.eval)
        write_results(grpo_eval, run / "eval_grpo.json")
        results["grpo"] = headline(grpo_eval)
        results["grpo_steps"] = trainer.step_count
        results["collapse_episodes"] = trainer.episodes
        results["rollbacks"] = trainer.rollbacks
        write_json(run / "results.json", results)
    return results


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
