"""GRPO on the hierarchy tasks: the algorithm, with every piece of plumbing elsewhere.

One iteration (Shao et al. 2024, DeepSeekMath Alg. 1; DeepSeek-R1 §2.2), :meth:`GRPOTrainer.step`::

    sample B prompts from the hop curriculum                     (sharded across ranks)
    rollout = G completions each from π_θold, rewards, Â         hyperr1.rollout.collect_rollout
    log π_ref(o) of the frozen reference                         (if β > 0)
    for μ iterations:
        loss = grpo_loss(log π_θ(o), log π_θold(o), Â, mask, log π_ref(o))   hyperr1.grpo
        θ ← optimizer step on ∇loss (Riemannian Adam for the ball's prototypes)

The loop around it — resume, evaluation and checkpoint cadence, ``metrics.jsonl`` /
TensorBoard / progress, the collapse guard — is :class:`hyperr1.loop.RunLoop`; checkpoints are
:mod:`hyperr1.checkpoint`, collectives and DDP :mod:`hyperr1.distributed`.

**Metrics** (one row per step in ``metrics.jsonl``; every name is listed in the README):
``loss/{total,policy,kl}``, ``reward/total``, ``reward/total_std``, ``reward/<fn>`` and
``reward/<fn>_std`` for each reward function, ``grpo/{zero_std_frac,kl,clip_frac,clip_low_frac,
clip_high_frac}``, ``completion/{length,truncated_frac}``, ``policy/entropy``,
``rate/{format,reflection}``, ``reflection/{retractions,good}`` (per completion: retractions, and
retractions that withdraw a wrong step for a parent edge), ``curriculum/max_hops``, ``optim/{lr,grad_norm}``,
``time/{step_s,sample_s}``, ``guard/{episodes,rollbacks}``, and at evaluations
``eval/<split>/<metric>[@hops=k]`` from :func:`hyperr1.evaluate.flat_metrics`.
"""

from __future__ import annotations

import copy
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from hyperr1.decoding import TextPolicy
from hyperr1.distributed import all_ranks_agree, broadcast_object, ddp, mean_across_ranks
from hyperr1.evaluate import EvalConfig, evaluate, flat_metrics
from hyperr1.grpo import LOSS_TYPES, SCALE_REWARDS, GRPOLossOutput, grpo_loss
from hyperr1.hierarchy import Hierarchy
from hyperr1.loop import LoopConfig, RunLoop
from hyperr1.model import HyperR1ForConditionalGeneration
from hyperr1.optim import riemannian_optimizer
from hyperr1.rewards import RewardWeights, good_retractions, parse_completion, score_completions
from hyperr1.rollout import Rollout, SamplingConfig, collect_rollout
from hyperr1.tasks import WAIT, HopCurriculum, TaskExample


@dataclass
class GRPOConfig(LoopConfig):
    """GRPO hyperparameters (symbols of DeepSeekMath eq. 3 and the R1 report), plus the loop's."""

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
    eval_examples: int = 200  # held-out examples per split at periodic evaluations (0: all)
    eval_min_hops: int = 3  # evaluate on held-out queries with at least this many hops
    samples_logged: int = 4  # completions written to samples.jsonl at each evaluation

    def validate(self) -> None:
        self.validate_loop()
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; known: {list(LOSS_TYPES)}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"unknown scale_rewards {self.scale_rewards!r}; known: {list(SCALE_REWARDS)}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations (G) must be >= 2 for group advantages, got {self.num_generations}")
        if min(self.prompts_per_step, self.max_completion_length, self.mu) < 1:
            raise ValueError("prompts_per_step, max_completion_length and mu must be >= 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            got = (self.temperature, self.top_p, self.top_k)
            raise ValueError(f"need temperature > 0, top_p in (0, 1] and top_k >= 0, got {got}")
        if self.lr <= 0 or (self.manifold_lr is not None and self.manifold_lr <= 0):
            raise ValueError(f"learning rates must be > 0, got lr={self.lr}, manifold_lr={self.manifold_lr}")
        if self.beta < 0 or self.epsilon_low < 0 or (self.epsilon_high is not None and self.epsilon_high < 0):
            got = (self.beta, self.epsilon_low, self.epsilon_high)
            raise ValueError(f"need beta, epsilon_low and epsilon_high >= 0, got {got}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if self.curriculum_window < 1 or not 0 <= self.curriculum_threshold <= 1:
            raise ValueError("need curriculum_window >= 1 and curriculum_threshold in [0, 1]")
        if self.curriculum_start_hops < 1 or self.eval_examples < 0 or self.samples_logged < 0:
            raise ValueError("need curriculum_start_hops >= 1, eval_examples >= 0 and samples_logged >= 0")
        weights = (self.w_accuracy, self.w_format, self.w_tag_count, self.w_faithfulness)
        if not all(w >= 0 for w in weights) or not sum(weights) > 0:
            raise ValueError(f"reward weights w_* must be >= 0 with a positive sum, got {weights}")

    @property
    def reward_weights(self) -> RewardWeights:
        return RewardWeights(
            accuracy=self.w_accuracy, format=self.w_format, tag_count=self.w_tag_count, faithfulness=self.w_faithfulness
        )

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            num_generations=self.num_generations,
            max_new_tokens=self.max_completion_length,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
        )


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


StepCallback = Callable[["GRPOTrainer", dict], None]


class GRPOTrainer(RunLoop):
    """GRPO on the hierarchy tasks; ``train()`` runs ``cfg.steps`` steps into ``out``.

    ``ref_model`` is the frozen π_ref of the KL term (a copy is taken; default: ``model`` as given,
    i.e. the warm-started policy). ``eval_splits`` are the held-out splits evaluated every
    ``eval_every`` steps. ``callbacks`` are called as ``cb(trainer, row)`` after each step, before
    the collapse guard looks at the row (tests use them to force a collapse). ``config`` is the
    resolved run config saved in every checkpoint (default: ``cfg``).
    """

    name = "grpo"

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
        config: dict | None = None,
    ):
        cfg.validate()
        if not train_examples:
            raise ValueError("no training examples")
        optimizer = riemannian_optimizer(model, name="adam", lr=cfg.lr, manifold_lr=cfg.manifold_lr)
        config = config or asdict(cfg)
        super().__init__(model, optimizer, out, cfg, config=config, callbacks=callbacks, progress=progress)
        if cfg.prompts_per_step % self.world_size:
            raise ValueError(f"prompts_per_step={cfg.prompts_per_step} is not divisible by {self.world_size} ranks")
        if cfg.max_completion_length > model.config.max_position_embeddings:
            limit = model.config.max_position_embeddings
            length = cfg.max_completion_length
            raise ValueError(f"grpo.max_completion_length={length} exceeds max_position_embeddings={limit}")
        self.tokenizer, self.h, self.cfg = tokenizer, hierarchy, cfg
        self.examples = list(train_examples)
        self.eval_splits = {
            name: [ex for ex in exs if ex.hops >= cfg.eval_min_hops] for name, exs in (eval_splits or {}).items()
        }
        self.ref_model = None
        if cfg.beta > 0:
            self.ref_model = copy.deepcopy(ref_model if ref_model is not None else model)  # ours to freeze
            self.ref_model.eval().requires_grad_(False)
        self.logprob_fn = ddp(_CompletionLogprobs(model))
        self.curriculum = HopCurriculum.from_examples(
            self.examples, max_hops=cfg.curriculum_start_hops, threshold=cfg.curriculum_threshold
        )
        self.recent_accuracy: deque = deque(maxlen=cfg.curriculum_window)
        self._pool, self._pool_hops = self.examples, None  # the prompts in the curriculum's range, per h_max
        self.wait_id = tokenizer.convert_tokens_to_ids(WAIT)

    # ------------------------------------------------------------ the algorithm

    def score(self, texts: list[str], answers: list) -> tuple[list[float], dict[str, list[float]]]:
        """Composite reward r_i and each reward's value (faithfulness only when weighted), one parse
        per completion."""
        h = self.h if self.cfg.w_faithfulness > 0 else None  # without it the chains are never read
        scores = score_completions(texts, answers, self.cfg.reward_weights, h)
        return scores.total, scores.per_fn

    def _prompts(self) -> list[TaskExample]:
        """This rank's share of B prompts drawn from the curriculum's current range."""
        if self._pool_hops != self.curriculum.max_hops:  # the range moved (or was restored): filter again
            self._pool = self.curriculum.select(self.examples) or self.examples
            self._pool_hops = self.curriculum.max_hops
        pool = self._pool
        chosen = [pool[self.rng.randrange(len(pool))] for _ in range(self.cfg.prompts_per_step)]
        return chosen[self.rank :: self.world_size]

    def step(self) -> dict:
        """One GRPO iteration (the module docstring's algorithm); returns its metrics row."""
        cfg, t0 = self.cfg, time.perf_counter()
        prompts = self._prompts()
        rollout = collect_rollout(
            self.model,
            self.tokenizer,
            prompts,
            self.score,
            cfg.sampling,
            generator=self.generator,
            scale_rewards=cfg.scale_rewards,
        )
        ref_logp = self._frozen_logprobs(self.ref_model, rollout)  # log π_ref(o), (N, T) or None
        old_logp = self._frozen_logprobs(self.model, rollout) if cfg.mu > 1 else None  # log π_θold(o)
        self.model.train()
        for _ in range(cfg.mu):
            terms, entropy, grad_norm = self._update(rollout, old_logp, ref_logp)
        return self._metrics(rollout, terms, entropy, grad_norm, seconds=time.perf_counter() - t0)

    def _frozen_logprobs(self, model, rollout: Rollout) -> torch.Tensor | None:
        if model is None:
            return None
        with torch.no_grad():
            return model.completion_logprobs(
                rollout.input_ids,
                rollout.attention_mask,
                rollout.tokens,
                num_samples=rollout.num_generations,
                temperature=self.cfg.temperature,
            )

    def _update(self, rollout: Rollout, old_logp, ref_logp) -> tuple[GRPOLossOutput, torch.Tensor, torch.Tensor]:
        """One policy update on the rollout: the GRPO loss, its gradient, one optimizer step."""
        cfg = self.cfg
        logp, entropy = self.logprob_fn(
            rollout.input_ids, rollout.attention_mask, rollout.tokens, rollout.num_generations, cfg.temperature
        )  # (N, T) each
        terms = grpo_loss(
            logp,
            logp.detach() if old_logp is None else old_logp,
            rollout.advantages,
            rollout.mask,
            ref_logprobs=ref_logp,
            beta=cfg.beta,
            epsilon_low=cfg.epsilon_low,
            epsilon_high=cfg.epsilon_high,
            loss_type=cfg.loss_type,
            max_completion_length=cfg.max_completion_length,
            num_items=mean_across_ranks({"n": float(rollout.mask.sum())})["n"],  # DAPO: global tokens / ranks
        )
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = torch.tensor(float("nan"))
        if all_ranks_agree(bool(torch.isfinite(terms.loss))):  # DDP's backward is a collective
            terms.loss.backward()
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            else:
                grad_norm = torch.zeros(())
            self.optimizer.step()
        return terms, entropy, grad_norm

    # ------------------------------------------------------------ plumbing of the algorithm

    def _metrics(self, r: Rollout, terms: GRPOLossOutput, entropy, grad_norm, *, seconds: float) -> dict:
        """The step's metrics row, averaged over ranks (names in the module docstring)."""
        fmask, tokens = r.mask.float(), r.tokens
        eos = self.tokenizer.eos_token_id
        row = {
            "loss/total": terms.loss.item(),
            "loss/policy": terms.policy_loss.item(),
            "loss/kl": terms.kl.item(),
            "reward/total": r.rewards.mean().item(),
            "reward/total_std": r.rewards.std().item(),
            **{f"reward/{k}": v.mean().item() for k, v in r.per_reward.items()},
            **{f"reward/{k}_std": v.std().item() for k, v in r.per_reward.items()},
            "grpo/zero_std_frac": r.zero_std.float().mean().item(),
            "grpo/kl": ((terms.per_token_kl * fmask).sum() / fmask.sum()).item(),
            "grpo/clip_frac": terms.clip_fraction.item(),
            "grpo/clip_low_frac": terms.low_clip_fraction.item(),
            "grpo/clip_high_frac": terms.high_clip_fraction.item(),
            "completion/length": fmask.sum(1).mean().item(),
            "completion/truncated_frac": (tokens[:, -1].ne(eos) & r.mask[:, -1]).float().mean().item(),
            "policy/entropy": ((entropy.detach() * fmask).sum() / fmask.sum()).item(),
            "rate/format": r.per_reward["format"].mean().item(),
            "rate/reflection": ((tokens == self.wait_id) & r.mask).any(1).float().mean().item(),
            **self._retraction_rates(r.texts),
            "optim/grad_norm": float(grad_norm),
        }
        row = mean_across_ranks(row)
        row["curriculum/max_hops"] = self.curriculum.max_hops
        row["optim/lr"] = self.optimizer.param_groups[-1]["lr"]
        row["time/sample_s"] = r.sample_seconds
        row["time/step_s"] = seconds
        return row

    def _retraction_rates(self, texts: list[str]) -> dict:
        """Per completion, the mean number of retractions and of good ones (a withdrawn step that is
        not a parent edge replaced by one that is); only completions holding ``wait`` are parsed."""
        total = good = 0
        for text in texts:
            if WAIT in text:
                parsed = parse_completion(text)
                total += len(parsed.retractions)
                good += good_retractions(parsed, self.h)
        n = max(len(texts), 1)
        return {"reflection/retractions": total / n, "reflection/good": good / n}

    def after_step(self, row: dict) -> None:
        """Widen the hop curriculum when the rolling training accuracy reaches τ."""
        self.recent_accuracy.append(row["reward/accuracy"])
        if len(self.recent_accuracy) == self.recent_accuracy.maxlen:
            if self.curriculum.update(sum(self.recent_accuracy) / len(self.recent_accuracy)):
                self.recent_accuracy.clear()

    def postfix(self, row: dict) -> dict:
        return {
            "reward": f"{row['reward/total']:.3f}",
            "acc": f"{row['reward/accuracy']:.2f}",
            "fmt": f"{row['rate/format']:.2f}",
        }

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
            logged = results["splits"].items()
            self.log_samples([{"split": name, **s} for name, res in logged for s in res.get("samples", [])])
        return broadcast_object(flat)

    # ------------------------------------------------------------ checkpointed state

    def algorithm_state(self) -> dict:
        return {"curriculum": self.curriculum.state_dict(), "recent_accuracy": list(self.recent_accuracy)}

    def load_algorithm_state(self, state: dict) -> None:
        self.curriculum.load_state_dict(state["curriculum"])
        self.recent_accuracy = deque(state["recent_accuracy"], maxlen=self.cfg.curriculum_window)


# ---------------------------------------------------------------- evaluation helpers


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


__all__ = ["GRPOConfig", "GRPOTrainer", "eval_subset", "greedy_metrics"]
