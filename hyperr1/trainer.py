"""The GRPO training loop: sample → reward → group advantages → clipped-ratio update, with plumbing.

One step (Shao et al. 2024, Alg. 1, with the policy-model update done μ times)::

    B prompts from the hop curriculum                      (sharded across ranks)
    G completions each from π_θold (the fast sampler)      tokens (N, T), N = B·G
    r_i = Σ_j w_j r_j(o_i) / Σ_j w_j                       accuracy + format (+ faithfulness)
    Â_i = group-normalised r_i                             hyperr1.grpo.group_advantages
    for μ iterations: loss = hyperr1.grpo.grpo_loss(log π_θ, log π_θold, Â, mask, log π_ref)

The algorithm lives in :meth:`GRPOTrainer.step` and :mod:`hyperr1.grpo`; everything else here is
plumbing: metrics (``metrics.jsonl``, TensorBoard when installed), checkpoints and ``--resume``,
the collapse guard, and ``torchrun`` / DistributedDataParallel.

**Metrics** (one row per step in ``metrics.jsonl``; every name is listed in the README):
``loss/{total,policy,kl}``, ``reward/total``, ``reward/total_std``, ``reward/<fn>`` and
``reward/<fn>_std`` for each reward function, ``grpo/{zero_std_frac,kl,clip_frac,clip_low_frac,
clip_high_frac}``, ``completion/{length,truncated_frac}``, ``policy/entropy``,
``rate/{format,reflection}``, ``curriculum/max_hops``, ``optim/{lr,grad_norm}``,
``time/{step_s,sample_s}``, ``guard/{episodes,rollbacks}``, and at evaluations
``eval/<split>/<metric>[@hops=k]`` from :func:`hyperr1.evaluate.flat_metrics`.

**Collapse guard**: a step is *incoherent* when its format rate or mean reward falls below
``(1 − drop)`` times its running average (and at least ``min_gap`` below it), its KL exceeds
``kl_spike`` times its running average (and ``kl_min``), or its loss is not finite. Consecutive
incoherent steps form an *episode*
(recorded in ``collapses.jsonl`` with its length); after ``patience`` of them (at once for a
non-finite loss) the run rolls back to the last checkpoint and multiplies the learning rates by
``lr_factor``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from hyperr1.evaluate import EvalConfig, evaluate, flat_metrics
from hyperr1.grpo import LOSS_TYPES, SCALE_REWARDS, group_advantages, grpo_loss
from hyperr1.hierarchy import Hierarchy
from hyperr1.model import HyperR1ForConditionalGeneration, TextPolicy, decode_completions, encode_prompts, save_policy
from hyperr1.optim import riemannian_optimizer
from hyperr1.rewards import (
    RewardWeights,
    accuracy_reward,
    composite_reward,
    format_reward,
    make_faithfulness_reward,
    tag_count_reward,
)
from hyperr1.tasks import WAIT, HopCurriculum, TaskExample


@dataclass
class GRPOConfig:
    """GRPO hyperparameters (symbols of DeepSeekMath eq. 3 and the R1 report)."""

    steps: int = 200  # optimizer steps (outer iterations)
    prompts_per_step: int = 8  # B: prompts per step, over all ranks
    num_generations: int = 8  # G: completions sampled per prompt (the group)
    max_completion_length: int = 64  # longest completion in tokens, </s> included
    temperature: float = 1.0  # sampling temperature of π_θold
    top_p: float = 1.0  # nucleus mass of the sampler (1: off)
    top_k: int = 0  # top-k of the sampler (0: off)
    lr: float = 1e-3  # η of the Euclidean parameters (Adam)
    manifold_lr: float | None = 1e-2  # η of the ball's prototypes (Riemannian Adam); None: lr
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    beta: float = 0.04  # β: coefficient of the k3 KL to the frozen reference (DeepSeekMath: 0.04)
    epsilon_low: float = 0.2  # ε_low: ratio clipped below at 1 − ε_low
    epsilon_high: float | None = None  # ε_high: ratio clipped above at 1 + ε_high (None: ε_low; DAPO 0.28)
    mu: int = 1  # μ: policy updates per batch of samples
    loss_type: str = "grpo"  # aggregation: "grpo" | "dr_grpo" | "dapo"
    scale_rewards: str = "group"  # advantage scaling: "group" | "batch" | "none"
    w_accuracy: float = 1.0  # w_acc: weight of the accuracy reward
    w_format: float = 1.0  # w_fmt: weight of the strict format reward
    w_tag_count: float = 0.0  # weight of the partial-credit tag-count reward
    w_faithfulness: float = 0.0  # w_faith: weight of the chain-faithfulness reward
    curriculum_start_hops: int = 2  # h_max at the start of the hop curriculum
    curriculum_threshold: float = 0.8  # τ: widen h_max when the rolling train accuracy reaches it
    curriculum_window: int = 10  # steps in the rolling accuracy of the curriculum
    eval_every: int = 50  # steps between held-out evaluations (0: only at the end)
    eval_examples: int = 200  # held-out examples per split at periodic evaluations (0: all)
    eval_min_hops: int = 3  # evaluate on held-out queries with at least this many hops
    checkpoint_every: int = 50  # steps between checkpoints (step 0 is always saved)
    keep_checkpoints: int = 2  # checkpoints kept on disk (the newest)
    guard: bool = True  # run the collapse guard
    guard_warmup: int = 10  # healthy steps before the guard starts judging
    guard_patience: int = 3  # consecutive incoherent steps that trigger a rollback
    guard_format_drop: float = 0.5  # incoherent if format rate < (1 − drop) · running average
    guard_reward_drop: float = 0.5  # incoherent if mean reward < (1 − drop) · running average
    guard_kl_spike: float = 10.0  # incoherent if KL > spike · running average and > guard_kl_min
    guard_kl_min: float = 0.5  # KL below this is never a spike
    guard_min_gap: float = 0.2  # format / reward drops smaller than this (absolute) are never incoherent
    guard_ema: float = 0.9  # decay of the running averages
    guard_lr_factor: float = 0.5  # learning rates are multiplied by this at each rollback
    guard_max_rollbacks: int = 5  # stop the run after this many rollbacks
    samples_logged: int = 4  # completions written to samples.jsonl at each evaluation
    seed: int = 0  # seed of prompt order and sampling

    def validate(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; known: {list(LOSS_TYPES)}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"unknown scale_rewards {self.scale_rewards!r}; known: {list(SCALE_REWARDS)}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations (G) must be >= 2 for group advantages, got {self.num_generations}")
        if min(self.steps, self.prompts_per_step, self.max_completion_length, self.mu) < 1 and self.steps != 0:
            raise ValueError("prompts_per_step, max_completion_length and mu must be >= 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.beta < 0 or self.epsilon_low < 0:
            raise ValueError(f"need beta >= 0 and epsilon_low >= 0, got {self.beta}, {self.epsilon_low}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every and keep_checkpoints must be >= 1")
        if self.curriculum_window < 1 or not 0 <= self.curriculum_threshold <= 1:
            raise ValueError("need curriculum_window >= 1 and curriculum_threshold in [0, 1]")
        if self.guard_patience < 1 or not 0 < self.guard_lr_factor <= 1:
            raise ValueError("need guard_patience >= 1 and guard_lr_factor in (0, 1]")

    @property
    def reward_weights(self) -> RewardWeights:
        return RewardWeights(
            accuracy=self.w_accuracy, format=self.w_format, tag_count=self.w_tag_count, faithfulness=self.w_faithfulness
        )


# ---------------------------------------------------------------- distributed plumbing


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str = "cpu") -> bool:
    """Join the process group ``torchrun`` describes: gloo for ``device="cpu"``, nccl for
    ``"cuda"`` (each rank on GPU ``LOCAL_RANK``). False when not launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist.is_available() and dist.is_initialized()
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return True


def _collective_device() -> torch.device:
    """nccl reduces CUDA tensors, gloo CPU ones."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average each value over ranks (every rank holds equally many completions)."""
    rank, size = world()
    if size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return {k: float(v) / size for k, v in zip(keys, t.tolist(), strict=True)}


def _gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equally sized 1-D tensors of every rank, in rank order."""
    rank, size = world()
    if size == 1:
        return t
    t = t.to(_collective_device()).contiguous()
    parts = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


class _CompletionLogprobs(nn.Module):
    """The policy's teacher-forced log-probabilities as a module ``forward``, so DDP can wrap it."""

    def __init__(self, model: HyperR1ForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, completions, num_samples: int, temperature: float):
        return self.model.completion_logprobs(
            input_ids,
            attention_mask,
            completions,
            num_samples=num_samples,
            temperature=temperature,
            return_entropy=True,
        )


# ---------------------------------------------------------------- collapse guard


@dataclass
class CollapseGuard:
    """Running averages of format rate, reward and KL, and the incoherence test of the module docstring."""

    warmup: int = 10
    patience: int = 3
    format_drop: float = 0.5
    reward_drop: float = 0.5
    kl_spike: float = 10.0
    kl_min: float = 0.5
    min_gap: float = 0.2
    ema: float = 0.9
    healthy_steps: int = 0  # steps folded into the averages
    avg: dict = field(default_factory=dict)  # running averages of format, reward, kl
    streak: list = field(default_factory=list)  # the current episode: (step, reasons) per incoherent step

    def judge(self, row: dict) -> list[str]:
        """Reasons why this step is incoherent (empty if healthy)."""
        reasons = []
        if not math.isfinite(row["loss/total"]):
            reasons.append("non-finite loss")
        if self.healthy_steps < self.warmup:
            return reasons
        fmt, rew = row["rate/format"], row["reward/total"]
        if fmt < (1 - self.format_drop) * self.avg["format"] and self.avg["format"] - fmt >= self.min_gap:
            reasons.append(f"format rate {row['rate/format']:.3f} << running {self.avg['format']:.3f}")
        if rew < (1 - self.reward_drop) * self.avg["reward"] and self.avg["reward"] - rew >= self.min_gap:
            reasons.append(f"reward {row['reward/total']:.3f} << running {self.avg['reward']:.3f}")
        kl = row["grpo/kl"]
        if kl > max(self.kl_min, self.kl_spike * self.avg["kl"]):
            reasons.append(f"KL spike {kl:.4f} >> running {self.avg['kl']:.4f}")
        return reasons

    def observe(self, row: dict) -> None:
        """Fold a healthy step into the running averages."""
        now = {"format": row["rate/format"], "reward": row["reward/total"], "kl": row["grpo/kl"]}
        for k, v in now.items():
            self.avg[k] = v if k not in self.avg else self.ema * self.avg[k] + (1 - self.ema) * v
        self.healthy_steps += 1

    def state_dict(self) -> dict:
        return {"healthy_steps": self.healthy_steps, "avg": dict(self.avg), "streak": [list(s) for s in self.streak]}

    def load_state_dict(self, state: dict) -> None:
        self.healthy_steps, self.avg = state["healthy_steps"], dict(state["avg"])
        self.streak = [tuple(s) for s in state["streak"]]


# ---------------------------------------------------------------- the trainer


StepCallback = Callable[["GRPOTrainer", dict], None]


class GRPOTrainer:
    """GRPO on the hierarchy tasks; ``train()`` runs ``cfg.steps`` steps into ``out``.

    ``ref_model`` is the frozen π_ref of the KL term (a copy is taken; default: ``model`` as given,
    i.e. the warm-started policy). ``eval_splits`` are the held-out splits evaluated every
    ``eval_every`` steps. ``callbacks`` are called as ``cb(trainer, row)`` after each step, before
    the collapse guard looks at the row (tests use them to force a collapse).
    """

    def __init__(
        self,
        model: HyperR1ForConditionalGeneration,
        tokenizer,
        train_examples: Sequence[TaskExample],
        hierarchy: Hierarchy,
        cfg: GRPOConfig,
        out: str | Path,
        *,
        ref_model: HyperR1ForConditionalGeneration | None = None,
        eval_splits: dict[str, Sequence[TaskExample]] | None = None,
        callbacks: Sequence[StepCallback] = (),
        progress: bool = True,
    ):
        cfg.validate()
        self.rank, self.world_size = world()
        if cfg.prompts_per_step % self.world_size:
            raise ValueError(f"prompts_per_step={cfg.prompts_per_step} is not divisible by {self.world_size} ranks")
        if not train_examples:
            raise ValueError("no training examples")
        self.model, self.tokenizer, self.h, self.cfg = model, tokenizer, hierarchy, cfg
        self.out = Path(out)
        self.examples = list(train_examples)
        self.eval_splits = {
            name: [ex for ex in exs if ex.hops >= cfg.eval_min_hops] for name, exs in (eval_splits or {}).items()
        }
        self.callbacks, self.progress = list(callbacks), progress
        self.ref_model = None
        if cfg.beta > 0:
            self.ref_model = copy.deepcopy(ref_model if ref_model is not None else model)  # ours to freeze
            self.ref_model.eval().requires_grad_(False)
        self.optimizer = riemannian_optimizer(model, name="adam", lr=cfg.lr, manifold_lr=cfg.manifold_lr)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.lr_scale = 1.0
        logprob_module = _CompletionLogprobs(model)
        self.logprob_fn = nn.parallel.DistributedDataParallel(logprob_module) if self.world_size > 1 else logprob_module
        self.reward_total = composite_reward(cfg.reward_weights, hierarchy)
        self.reward_fns = {"accuracy": accuracy_reward, "format": format_reward, "tag_count": tag_count_reward}
        if cfg.w_faithfulness > 0:
            self.reward_fns["faithfulness"] = make_faithfulness_reward(hierarchy)
        self.curriculum = HopCurriculum.from_examples(
            self.examples, max_hops=cfg.curriculum_start_hops, threshold=cfg.curriculum_threshold
        )
        self.recent_accuracy: deque = deque(maxlen=cfg.curriculum_window)
        self.guard = CollapseGuard(
            warmup=cfg.guard_warmup,
            patience=cfg.guard_patience,
            format_drop=cfg.guard_format_drop,
            reward_drop=cfg.guard_reward_drop,
            kl_spike=cfg.guard_kl_spike,
            kl_min=cfg.guard_kl_min,
            min_gap=cfg.guard_min_gap,
            ema=cfg.guard_ema,
        )
        self.rollbacks, self.episodes = 0, 0
        self.step_count = 0
        self.rng = random.Random(cfg.seed)  # prompt choice: identical on every rank
        self.generator = torch.Generator(model.device).manual_seed(cfg.seed * 1_000_003 + self.rank)  # per rank
        self.tb = _tensorboard(self.out) if self.rank == 0 else None

    # ------------------------------------------------------------ the algorithm

    def _prompts(self) -> list[TaskExample]:
        """This rank's share of B prompts drawn from the curriculum's current range."""
        pool = self.curriculum.select(self.examples) or self.examples
        chosen = [pool[self.rng.randrange(len(pool))] for _ in range(self.cfg.prompts_per_step)]
        return chosen[self.rank :: self.world_size]

    def step(self) -> dict:
        """One GRPO iteration; returns its metrics row (averaged over ranks)."""
        cfg, model, G = self.cfg, self.model, self.cfg.num_generations
        t0 = time.perf_counter()
        if not self._finite():
            return {"loss/total": float("nan"), "rate/format": 0.0, "reward/total": 0.0, "grpo/kl": float("nan")}
        batch = self._prompts()
        ids, amask = encode_prompts(self.tokenizer, [ex.prompt for ex in batch], model.device)  # (B, S)

        model.eval()
        sample = model.sample(
            ids,
            amask,
            num_samples=G,
            max_new_tokens=cfg.max_completion_length,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            generator=self.generator,
        )
        tokens, mask = sample.tokens, sample.mask  # (N, T), N = B·G
        t_sample = time.perf_counter() - t0
        texts = decode_completions(self.tokenizer, tokens, mask)
        columns = {"answers": [ex.answers for ex in batch for _ in range(G)]}
        per_fn = {name: torch.tensor(fn(texts, **columns)) for name, fn in self.reward_fns.items()}
        rewards = torch.tensor(self.reward_total(texts, **columns), device=model.device)  # (N,)

        all_rewards = _gather(rewards)  # group statistics over whole groups; "batch" std over all ranks
        adv_all, zero_std_all = group_advantages(all_rewards, G, scale_rewards=cfg.scale_rewards)
        n = rewards.numel()
        advantages = adv_all[self.rank * n : (self.rank + 1) * n].to(model.device)  # (N,)
        num_items = _mean_across_ranks({"n": float(mask.sum())})["n"]  # DAPO: global tokens / ranks

        ref_logp = None
        if self.ref_model is not None:
            with torch.no_grad():
                ref_logp = self.ref_model.completion_logprobs(
                    ids, amask, tokens, num_samples=G, temperature=cfg.temperature
                )  # (N, T)
        old_logp = None
        if cfg.mu > 1:
            with torch.no_grad():
                old_logp = model.completion_logprobs(ids, amask, tokens, num_samples=G, temperature=cfg.temperature)

        model.train()
        for _ in range(cfg.mu):
            logp, entropy = self.logprob_fn(ids, amask, tokens, G, cfg.temperature)  # (N, T) each
            terms = grpo_loss(
                logp,
                logp.detach() if old_logp is None else old_logp,
                advantages,
                mask,
                ref_logprobs=ref_logp,
                beta=cfg.beta,
                epsilon_low=cfg.epsilon_low,
                epsilon_high=cfg.epsilon_high,
                loss_type=cfg.loss_type,
                max_completion_length=cfg.max_completion_length,
                num_items=num_items,
            )
            self.optimizer.zero_grad(set_to_none=True)
            # every rank must take the same branch: DDP's backward is a collective
            finite = _mean_across_ranks({"finite": float(torch.isfinite(terms.loss))})["finite"] == 1.0
            if finite:
                terms.loss.backward()
                grad_norm = (
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    if cfg.grad_clip > 0
                    else torch.zeros(())
                )
                self.optimizer.step()
            else:
                grad_norm = torch.tensor(float("nan"))

        fmask = mask.float()
        lengths = fmask.sum(1)  # (N,)
        wait_id = self.tokenizer.convert_tokens_to_ids(WAIT)
        row = {
            "loss/total": terms.loss.item(),
            "loss/policy": terms.policy_loss.item(),
            "loss/kl": terms.kl.item(),
            "reward/total": rewards.mean().item(),
            "reward/total_std": rewards.std().item(),
            **{f"reward/{k}": v.mean().item() for k, v in per_fn.items()},
            **{f"reward/{k}_std": v.std().item() for k, v in per_fn.items()},
            "grpo/zero_std_frac": zero_std_all.float().mean().item(),
            "grpo/kl": ((terms.per_token_kl * fmask).sum() / fmask.sum()).item(),
            "grpo/clip_frac": terms.clip_fraction.item(),
            "grpo/clip_low_frac": terms.low_clip_fraction.item(),
            "grpo/clip_high_frac": terms.high_clip_fraction.item(),
            "completion/length": lengths.mean().item(),
            "completion/truncated_frac": (tokens[:, -1].ne(self.tokenizer.eos_token_id) & mask[:, -1])
            .float()
            .mean()
            .item(),
            "policy/entropy": ((entropy.detach() * fmask).sum() / fmask.sum()).item(),
            "rate/format": per_fn["format"].mean().item(),
            "rate/reflection": ((tokens == wait_id) & mask).any(1).float().mean().item(),
            "optim/grad_norm": float(grad_norm),
        }
        row = _mean_across_ranks(row)
        row["curriculum/max_hops"] = self.curriculum.max_hops
        row["optim/lr"] = self.optimizer.param_groups[-1]["lr"]
        row["time/sample_s"] = t_sample
        row["time/step_s"] = time.perf_counter() - t0
        return row

    def _finite(self) -> bool:
        norms = torch._foreach_norm([p.detach() for p in self.model.parameters()])  # one fused call
        return bool(torch.stack(norms).isfinite().all())

    def _update_curriculum(self, accuracy: float) -> None:
        self.recent_accuracy.append(accuracy)
        if len(self.recent_accuracy) == self.recent_accuracy.maxlen:
            if self.curriculum.update(sum(self.recent_accuracy) / len(self.recent_accuracy)):
                self.recent_accuracy.clear()

    # ------------------------------------------------------------ evaluation

    def evaluate(self) -> dict:
        """Greedy held-out metrics (rank 0 computes, every rank receives them)."""
        if not self.eval_splits:
            return {}
        flat = {}
        if self.rank == 0:
            splits = {name: eval_subset(exs, self.cfg.eval_examples) for name, exs in self.eval_splits.items()}
            flat, results = greedy_metrics(
                self.model,
                self.tokenizer,
                splits,
                self.h,
                max_new_tokens=self.cfg.max_completion_length,
                metrics=("accuracy", "format", "faithfulness"),
                per_hops=True,
                n_logged=self.cfg.samples_logged,
            )
            with open(self.out / "samples.jsonl", "a") as f:
                for name, res in results["splits"].items():
                    for s in res.get("samples", []):
                        f.write(json.dumps({"step": self.step_count, "split": name, **s}) + "\n")
        if self.world_size > 1:
            box = [flat]
            dist.broadcast_object_list(box, src=0)
            flat = box[0]
        return flat

    # ------------------------------------------------------------ checkpoints

    def checkpoint_dir(self, step: int) -> Path:
        return self.out / "checkpoints" / f"step_{step:06d}"

    def latest_checkpoint(self) -> Path | None:
        ckpts = sorted((self.out / "checkpoints").glob("step_*"))
        ckpts = [c for c in ckpts if (c / "state.json").exists()]
        return ckpts[-1] if ckpts else None

    def save_checkpoint(self) -> Path:
        """Model (safetensors), optimizer, RNG states, curriculum, guard and step, written atomically."""
        path = self.checkpoint_dir(self.step_count)
        tmp = path.with_name(path.name + ".tmp")
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_policy(self.model, tmp / "model")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            state = {
                "step": self.step_count,
                "lr_scale": self.lr_scale,
                "rollbacks": self.rollbacks,
                "episodes": self.episodes,
                "curriculum": self.curriculum.state_dict(),
                "recent_accuracy": list(self.recent_accuracy),
                "guard": self.guard.state_dict(),
                "python_rng": _jsonable(self.rng.getstate()),
            }
        self._barrier()
        torch.save(
            {"torch": torch.get_rng_state(), "sampler": self.generator.get_state()}, tmp / f"rng_rank{self.rank}.pt"
        )
        self._barrier()
        if self.rank == 0:
            (tmp / "state.json").write_text(json.dumps(state) + "\n")  # written last: marks it complete
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
            for old in sorted((self.out / "checkpoints").glob("step_*"))[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self._barrier()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (tensors via safetensors / weights_only)."""
        path = Path(path)
        if not (path / "state.json").exists():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no state.json)")
        self.model.load_weights(path / "model")
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        for st in self.optimizer.state.values():  # geoopt counts steps in a Python int; torch's loader
            if torch.is_tensor(st.get("step")):  # makes it a float32 tensor, which changes Adam's bias
                st["step"] = int(st["step"].item())  # correction in the 8th digit: resume would drift
        state = json.loads((path / "state.json").read_text())
        rng = torch.load(path / f"rng_rank{self.rank}.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["sampler"])
        self.step_count = state["step"]
        self.lr_scale, self.rollbacks, self.episodes = state["lr_scale"], state["rollbacks"], state["episodes"]
        self.curriculum.load_state_dict(state["curriculum"])
        self.recent_accuracy = deque(state["recent_accuracy"], maxlen=self.cfg.curriculum_window)
        self.guard.load_state_dict(state["guard"])
        self.rng.setstate(_tuples(state["python_rng"]))
        self._apply_lr_scale()

    def _apply_lr_scale(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.lr_scale

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    # ------------------------------------------------------------ the loop

    def train(self, *, resume: bool = False) -> list[dict]:
        """Run to ``cfg.steps``; with ``resume`` continue from the newest checkpoint in ``out``.

        Returns the metrics rows of the run (those of ``metrics.jsonl``).
        """
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out / "metrics.jsonl"
        if resume and (latest := self.latest_checkpoint()) is not None:
            self.load_checkpoint(latest)
            rows = _read_rows(metrics_path, upto=self.step_count)
            if self.rank == 0:  # samples logged after the checkpoint will be logged again
                _write_rows(self.out / "samples.jsonl", _read_rows(self.out / "samples.jsonl", upto=self.step_count))
        else:
            if resume:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.out / 'checkpoints'}")
            rows = []
            if self.rank == 0:  # a fresh run: nothing of an earlier run in this directory survives
                shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
                for name in ("metrics.jsonl", "samples.jsonl", "collapses.jsonl"):
                    (self.out / name).write_text("")
            self._barrier()
            self.save_checkpoint()
        if self.rank == 0:
            _write_rows(metrics_path, rows)
        bar = tqdm(total=cfg.steps, initial=self.step_count, desc="grpo", disable=not self.progress or self.rank != 0)
        while self.step_count < cfg.steps:
            row = self.step()
            self.step_count += 1
            row = {"step": self.step_count, **row}
            for cb in self.callbacks:
                cb(self, row)
            if cfg.guard and self._guard(row, rows, bar):
                continue
            if not math.isfinite(row["loss/total"]):
                raise FloatingPointError(
                    f"non-finite loss or weights at step {self.step_count} (the collapse guard is off)"
                )
            self._update_curriculum(row["reward/accuracy"])
            if self.step_count == cfg.steps or (cfg.eval_every and self.step_count % cfg.eval_every == 0):
                row.update(self.evaluate())
            row["guard/episodes"], row["guard/rollbacks"] = self.episodes, self.rollbacks
            rows.append(row)
            if self.rank == 0:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if self.tb is not None:
                    for k, v in row.items():
                        if k != "step":
                            self.tb.add_scalar(k, v, self.step_count)
            due = self.step_count % cfg.checkpoint_every == 0 or self.step_count == cfg.steps
            if due and not self.guard.streak and self._finite():  # checkpoints are good states only
                self.save_checkpoint()
            bar.update(1)
            bar.set_postfix(
                reward=f"{row['reward/total']:.3f}",
                acc=f"{row['reward/accuracy']:.2f}",
                fmt=f"{row['rate/format']:.2f}",
            )
        bar.close()
        if self.tb is not None:
            self.tb.flush()
        return rows

    def _guard(self, row: dict, rows: list[dict], bar) -> bool:
        """Judge the step; True when it was rolled back (the caller then drops it)."""
        reasons = self.guard.judge(row)
        if not reasons:
            if self.guard.streak:  # the episode ended by itself
                self.episodes += 1
                self._record_episode(self.guard.streak, rolled_back_to=None)
                self.guard.streak = []
            self.guard.observe(row)
            return False
        self.guard.streak.append((row["step"], reasons))
        if len(self.guard.streak) < self.guard.patience and "non-finite loss" not in reasons:
            return False  # incoherent but within patience: the step stands
        streak, episodes, rollbacks = self.guard.streak, self.episodes + 1, self.rollbacks + 1
        if rollbacks > self.cfg.guard_max_rollbacks:
            self._record_episode(streak, rolled_back_to=None)
            raise RuntimeError(
                f"collapse guard: {rollbacks - 1} rollbacks did not stop the collapse at step {row['step']} "
                f"({'; '.join(reasons)}); see {self.out / 'collapses.jsonl'}"
            )
        lr_scale = self.lr_scale * self.cfg.guard_lr_factor
        self.load_checkpoint(self._rollback_target(streak[0][0]))  # also resets the guard's averages and streak
        self.episodes, self.rollbacks, self.lr_scale = episodes, rollbacks, lr_scale
        self._apply_lr_scale()
        self._record_episode(streak, rolled_back_to=self.step_count)
        del rows[self.step_count :]  # rows[i] is step i + 1
        if self.rank == 0:
            _write_rows(self.out / "metrics.jsonl", rows)
        bar.n = self.step_count
        bar.refresh()
        return True

    def _rollback_target(self, first_bad_step: int) -> Path:
        """The newest checkpoint of parameters that produced a healthy step.

        The row of step s is computed from samples of θ_{s−1}, so an episode whose first incoherent
        step is s condemns θ_{s−1} and everything after it; the checkpoint of step s−1 (if any) is
        skipped. Falls back to the oldest checkpoint on disk.
        """
        ckpts = [c for c in sorted((self.out / "checkpoints").glob("step_*")) if (c / "state.json").exists()]
        good = [c for c in ckpts if int(c.name.split("_")[1]) <= first_bad_step - 2]
        return good[-1] if good else ckpts[0]

    def _record_episode(self, streak: list, *, rolled_back_to: int | None) -> None:
        """Append one incoherence episode to ``collapses.jsonl``."""
        if self.rank != 0:
            return
        episode = {
            "episode": self.episodes,
            "start_step": streak[0][0],
            "end_step": streak[-1][0],
            "length": len(streak),
            "reasons": sorted({_reason_kind(r) for _, rs in streak for r in rs}),
            "detail": [r for _, rs in streak for r in rs],
            "rolled_back_to": rolled_back_to,
            "lr_scale": self.lr_scale,
        }
        with open(self.out / "collapses.jsonl", "a") as f:
            f.write(json.dumps(episode) + "\n")


# ---------------------------------------------------------------- small helpers


def _reason_kind(reason: str) -> str:
    """The kind of an incoherence reason: "non-finite loss", "format rate", "reward" or "KL spike"."""
    for kind in ("non-finite loss", "format rate", "reward", "KL spike"):
        if reason.startswith(kind):
            return kind
    return reason


def greedy_metrics(
    model: HyperR1ForConditionalGeneration,
    tokenizer,
    splits: dict[str, Sequence[TaskExample]],
    h: Hierarchy,
    *,
    max_new_tokens: int,
    metrics: Sequence[str],
    per_hops: bool,
    n_logged: int = 0,
) -> tuple[dict[str, float], dict]:
    """Greedy evaluation of ``model`` on ``splits``: the flat ``eval/<split>/<metric>`` values of
    ``metrics`` (overall, and per hop count with ``per_hops``) and the full results."""
    policy = TextPolicy(model, tokenizer, max_new_tokens=max_new_tokens)
    results = evaluate(policy, splits, h, EvalConfig(k=0, n_logged=n_logged))
    flat = {}
    for key, value in flat_metrics(results).items():
        name, _, group = key.rsplit("/", 1)[-1].partition("@")
        if name in metrics and (not group or (per_hops and group.startswith("hops="))):
            flat[key] = value
    return flat, results


def eval_subset(examples: list, k: int) -> list:
    """A fixed random subset of ``k`` examples in their original order (all of them for k = 0)."""
    if not k or k >= len(examples):
        return examples
    keep = sorted(random.Random(0).sample(range(len(examples)), k))
    return [examples[i] for i in keep]


def _read_rows(path: Path, upto: int | None = None) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if upto is None or r.get("step", 0) <= upto]


def _write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def _jsonable(obj):
    return [_jsonable(x) for x in obj] if isinstance(obj, tuple | list) else obj


def _tuples(obj):
    return tuple(_tuples(x) for x in obj) if isinstance(obj, list) else obj


def _tensorboard(out: Path):
    """A SummaryWriter when tensorboard is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


__all__ = ["CollapseGuard", "GRPOConfig", "GRPOTrainer", "init_distributed", "world"]
