"""Rollout collection: sample G completions per prompt, score them, group advantages.

The first half of a GRPO iteration (Shao et al. 2024, Alg. 1, lines 5–8), shared by GRPO and
on-policy distillation::

    B prompts                                   this rank's share
    o_1..o_G ~ π_θold(· | q) per prompt         tokens (N, T), N = B·G, prompt-major
    r_i = Σ_j w_j r_j(o_i) / Σ_j w_j            one parse per completion (hyperr1.rewards)
    Â_i = (r_i − mean(r_group)) / std(r_group)  hyperr1.grpo.group_advantages over whole groups

Under ``torchrun`` the rewards of all ranks are gathered before normalising, so "batch" scaling
uses every completion and each rank keeps the advantages of its own rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hyperr1.decoding import decode_completions, encode_prompts, sample
from hyperr1.distributed import gather, world
from hyperr1.grpo import group_advantages
from hyperr1.tasks import TaskExample

# score(texts, answers) -> (composite reward per completion, {reward name: value per completion})
ScoreFn = Callable[[list[str], list], tuple[list[float], dict[str, list[float]]]]


@dataclass
class SamplingConfig:
    """How π_θold is sampled during a rollout."""

    num_generations: int = 8  # G: completions per prompt
    max_new_tokens: int = 64  # longest completion, </s> included
    temperature: float = 1.0  # T of softmax(logits / T)
    top_p: float = 1.0  # nucleus mass (1: off)
    top_k: int = 0  # top-k (0: off)


@dataclass
class Rollout:
    """One batch of sampled, scored completions of this rank."""

    prompts: list[TaskExample]  # B prompts of this rank
    input_ids: torch.Tensor  # (B, S) prompt ids, right-padded
    attention_mask: torch.Tensor  # (B, S)
    tokens: torch.Tensor  # (N, T) completion ids, N = B·G, pad after </s>
    mask: torch.Tensor  # (N, T) bool, True on completion tokens (</s> included)
    texts: list[str]  # N decoded completions
    rewards: torch.Tensor  # (N,) composite reward r_i
    per_reward: dict[str, torch.Tensor]  # name → (N,) each reward function's value
    advantages: torch.Tensor  # (N,) Â_i of this rank's rows
    zero_std: torch.Tensor  # (B_all,) groups of all ranks whose rewards are all equal
    num_generations: int  # G
    sample_seconds: float  # wall time of the sampler


def collect_rollout(
    model,
    tokenizer,
    prompts: Sequence[TaskExample],
    score: ScoreFn,
    cfg: SamplingConfig,
    *,
    generator: torch.Generator,
    scale_rewards: str = "group",
) -> Rollout:
    """Sample ``cfg.num_generations`` completions of each prompt from ``model`` (π_θold), score
    them with ``score`` and normalise the rewards within each group."""
    G, device = cfg.num_generations, model.device
    t0 = time.perf_counter()
    ids, amask = encode_prompts(tokenizer, [ex.prompt for ex in prompts], device)  # (B, S)
    model.eval()
    out = sample(
        model,
        ids,
        amask,
        num_samples=G,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        generator=generator,
    )
    sample_seconds = time.perf_counter() - t0
    texts = decode_completions(tokenizer, out.tokens, out.mask)
    total, per_fn = score(texts, [ex.answers for ex in prompts for _ in range(G)])
    rewards = torch.tensor(total, device=device)  # (N,)
    advantages_all, zero_std = group_advantages(gather(rewards), G, scale_rewards=scale_rewards)
    rank, n = world()[0], rewards.numel()
    return Rollout(
        prompts=list(prompts),
        input_ids=ids,
        attention_mask=amask,
        tokens=out.tokens,
        mask=out.mask,
        texts=texts,
        rewards=rewards,
        per_reward={name: torch.tensor(v) for name, v in per_fn.items()},
        advantages=advantages_all[rank * n : (rank + 1) * n].to(device),
        zero_std=zero_std,
        num_generations=G,
        sample_seconds=sample_seconds,
    )


__all__ = ["Rollout", "SamplingConfig", "ScoreFn", "collect_rollout"]
