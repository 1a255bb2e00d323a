"""The GRPO loss as pure tensor functions: group-relative advantages and the clipped surrogate with a k3 KL.

GRPO (Shao et al. 2024, *DeepSeekMath*, eq. 3; used for DeepSeek-R1, DeepSeek-AI 2025) samples a group of
G completions ``o_1..o_G`` per prompt ``q``, scores them with rewards ``r_i`` and maximises

    J(θ) = E[ 1/G Σ_i 1/|o_i| Σ_t ( min( ρ_it Â_i, clip(ρ_it, 1-ε_low, 1+ε_high) Â_i ) - β D_KL[π_θ || π_ref] ) ]

    ρ_it = π_θ(o_it | q, o_i<t) / π_θ_old(o_it | q, o_i<t)                    (the importance ratio)
    Â_i  = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)                    (the group-relative advantage)
    D_KL ≈ π_ref/π_θ - log(π_ref/π_θ) - 1                                     (Schulman's k3 estimator, >= 0)

The variants kept here are the ones a paper defines, with TRL ``GRPOTrainer`` semantics:

- ``scale_rewards="none"`` and ``loss_type="dr_grpo"`` (Liu et al. 2025, *Understanding R1-Zero-Like Training:
  A Critical Perspective*): dividing by the group std favours easy/hard prompts and ``1/|o_i|`` favours long
  wrong answers, so Dr. GRPO drops the std and divides by a constant ``N * max_completion_length``.
- ``scale_rewards="batch"``: the std is taken over the whole batch instead of per group (TRL's option).
- ``loss_type="dapo"`` and ``epsilon_high`` (Yu et al. 2025, *DAPO*): token-level aggregation
  ``Σ_it ℓ_it / Σ_i |o_i|`` and a larger upper clip ("clip-higher") that leaves room for low-probability tokens.

Inner iterations μ are the caller's business: it samples with π_θ_old, stores ``old_logprobs`` and calls
:func:`grpo_loss` μ times as θ moves. With μ = 1 the caller passes ``old_logprobs = logprobs.detach()``, so
ρ = 1, the clip never binds and the gradient is the vanilla policy gradient ``-Â_i ∇ log π_θ(o_it)`` (times the
aggregation weight, ``1 / (N |o_i|)`` for ``"grpo"``).

Shapes: ``N = B * G`` completions (prompt-major: the G samples of one prompt are contiguous), ``T`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo")


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale_rewards: str = "group", eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages ``Â_i = (r_i - mean_group(r)) / (std + eps)`` (Shao et al. 2024, eq. 3).

    ``rewards`` is (N,) with N = B * G, the G samples of one prompt contiguous (``rewards.view(B, G)``).
    The std (unbiased, torch's default, as in TRL) is taken per group for ``"group"``, over all N rewards for
    ``"batch"``, and not applied for ``"none"`` (Dr. GRPO, Liu et al. 2025). The mean is always per group.

    Returns ``(advantages (N,), zero_std (B,) bool)``; ``zero_std[b]`` marks groups whose rewards are all equal,
    whose advantages are exactly 0 and so carry no policy gradient (DAPO's dynamic sampling filters them).
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; expected one of {SCALE_REWARDS}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.numel() % group_size != 0:
        raise ValueError(f"number of rewards N={rewards.numel()} is not divisible by group_size={group_size}")
    if scale_rewards == "group" and group_size < 2:
        raise ValueError("scale_rewards='group' needs group_size >= 2 (the unbiased std of one sample is undefined)")
    if scale_rewards == "batch" and rewards.numel() < 2:
        raise ValueError("scale_rewards='batch' needs N >= 2 (the unbiased std of one sample is undefined)")
    if not rewards.is_floating_point():  # integer/bool rewards: mean and std need a float dtype
        rewards = rewards.to(torch.get_default_dtype())

    grouped = rewards.view(-1, group_size)  # (B, G)
    group_mean = grouped.mean(dim=1, keepdim=True)  # (B, 1)
    advantages = grouped - group_mean  # (B, G)
    # eps: a group whose rewards are all equal has std 0 (and advantages 0, which stay 0)
    if scale_rewards == "group":
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)  # (B, G), unbiased std per group
    elif scale_rewards == "batch":
        advantages = advantages / (rewards.std() + eps)  # (B, G), unbiased std over all N rewards
    zero_std = grouped.amax(dim=1) == grouped.amin(dim=1)  # (B,)
    return advantages.reshape(-1), zero_std


@dataclass
class GRPOLossOutput:
    """One named tensor per term of the GRPO objective; ``loss`` is the one to backpropagate."""

    loss: torch.Tensor  # scalar: policy_loss + β kl
    policy_loss: torch.Tensor  # scalar: aggregated -min(ρ Â, clip(ρ) Â)
    kl: torch.Tensor  # scalar: aggregated k3 KL, same aggregation as the loss (0 without ref_logprobs)
    ratio: torch.Tensor  # (N, T) ρ = exp(logprobs - old_logprobs); 1 on padding
    clipped_ratio: torch.Tensor  # (N, T) clip(ρ, 1 - ε_low, 1 + ε_high); 1 on padding
    per_token_kl: torch.Tensor  # (N, T) k3 estimate of KL(π_θ || π_ref); 0 on padding
    per_token_loss: torch.Tensor  # (N, T) -min(ρ Â, clip(ρ) Â) + β k3; 0 on padding
    clip_fraction: torch.Tensor  # scalar: share of active tokens where the clipped term is the one used
    low_clip_fraction: torch.Tensor  # scalar: share with ρ < 1 - ε_low and Â < 0
    high_clip_fraction: torch.Tensor  # scalar: share with ρ > 1 + ε_high and Â > 0


def aggregate_tokens(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    max_completion_length: int | None,
    num_items: float | torch.Tensor | None,
) -> torch.Tensor:
    """Reduce a masked (N, T) tensor to a scalar as ``loss_type`` prescribes (see :func:`grpo_loss`)."""
    masked_sum = per_token * mask  # (N, T), padding already zero
    if loss_type == "grpo":  # mean over sequences of the per-sequence token mean
        lengths = mask.sum(dim=1).clamp(min=1.0)  # (N,), clamp: an all-padding row contributes 0, not 0/0
        return (masked_sum.sum(dim=1) / lengths).mean()
    if loss_type == "dr_grpo":  # constant normaliser, no length bias
        return masked_sum.sum() / (per_token.shape[0] * max_completion_length)
    if num_items is None:  # "dapo": token-level mean over the active tokens of this batch
        num_items = mask.sum().clamp(min=1.0)  # clamp: an all-padding batch gives 0, not 0/0
    return masked_sum.sum() / num_items


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items: float | torch.Tensor | None = None,
) -> GRPOLossOutput:
    """The GRPO loss ``-J(θ)`` (Shao et al. 2024, eq. 3) on per-token log-probabilities of sampled completions.

    Per token (ρ = exp(logprobs - old_logprobs), Â broadcast over the tokens of its completion)::

        policy_it = -min(ρ_it Â_i, clip(ρ_it, 1 - ε_low, 1 + ε_high) Â_i)
        kl_it     = exp(ref_it - logp_it) - (ref_it - logp_it) - 1            (k3; 0 when logp == ref)
        ℓ_it      = policy_it + β kl_it

    aggregated with m the mask (Σ_t m_it = |o_i|):

    - ``"grpo"`` (DeepSeekMath): ``1/N Σ_i (Σ_t ℓ_it m_it) / max(|o_i|, 1)``;
    - ``"dr_grpo"`` (Liu et al. 2025): ``Σ_it ℓ_it m_it / (N * max_completion_length)``;
    - ``"dapo"`` (Yu et al. 2025): ``Σ_it ℓ_it m_it / num_items``, ``num_items`` defaulting to ``max(Σ m, 1)``;
      a distributed caller passes the global active-token count divided by the world size, so that the
      gradients averaged over ranks equal the global token mean.

    ``max_completion_length`` is read only by ``"dr_grpo"`` and ``num_items`` only by ``"dapo"``. ``kl`` is
    aggregated like the loss, so ``loss = policy_loss + β kl``; it is computed (for logging) whenever
    ``ref_logprobs`` is given, even with β = 0. ``old_logprobs`` and ``ref_logprobs`` are treated as constants
    (detached). With μ = 1, pass ``old_logprobs = logprobs.detach()``: ρ = 1 and the gradient is the vanilla
    policy gradient, ``-Â_i / (N |o_i|)`` per active token of ``logprobs`` for ``"grpo"``.

    Shapes: ``logprobs``, ``old_logprobs``, ``ref_logprobs``, ``mask`` are (N, T), ``mask`` 1 (or True) on
    completion tokens and 0 on padding; ``advantages`` is (N,). Padding positions are inert: whatever they
    hold (even inf or nan), they change neither the loss nor any gradient.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    if epsilon_low < 0 or epsilon_high < 0:
        raise ValueError(f"epsilon_low and epsilon_high must be >= 0, got {epsilon_low} and {epsilon_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError(f"beta={beta} > 0 needs ref_logprobs for the KL term")
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be 2-D (N, T), got shape {tuple(logprobs.shape)}")
    for name, tensor in (("old_logprobs", old_logprobs), ("mask", mask), ("ref_logprobs", ref_logprobs)):
        if tensor is not None and tensor.shape != logprobs.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(logprobs.shape)} (logprobs)")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected ({logprobs.shape[0]},)")
    if loss_type == "dr_grpo" and (max_completion_length is None or max_completion_length < 1):
        raise ValueError(f"loss_type='dr_grpo' needs max_completion_length >= 1, got {max_completion_length}")
    if loss_type == "dapo" and num_items is not None and not num_items > 0:
        raise ValueError(f"num_items must be > 0, got {num_items}")

    active = mask.bool()  # (N, T)
    mask = active.to(logprobs.dtype)  # (N, T) float, for the sums
    # Zero the padding before any exp: inf/nan there would otherwise leak into the sums (0 * inf = nan) and
    # the gradients; masked_fill's backward sends exactly 0 to the padding.
    logprobs = logprobs.masked_fill(~active, 0.0)  # (N, T)
    old_logprobs = old_logprobs.detach().masked_fill(~active, 0.0)  # (N, T), π_θ_old is a constant
    advantages = advantages.detach().unsqueeze(1)  # (N, 1), Â_i for every token of o_i

    ratio = torch.exp(logprobs - old_logprobs)  # (N, T) ρ
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)  # (N, T)
    unclipped_term = ratio * advantages  # (N, T) ρ Â
    clipped_term = clipped_ratio * advantages  # (N, T) clip(ρ) Â
    per_token_policy = -torch.min(unclipped_term, clipped_term)  # (N, T), the pessimistic bound

    if ref_logprobs is not None:
        log_ratio_ref = ref_logprobs.detach().masked_fill(~active, 0.0) - logprobs  # (N, T) log π_ref/π_θ
        per_token_kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1  # (N, T) k3
    else:
        per_token_kl = torch.zeros_like(logprobs)  # (N, T)
    per_token_loss = per_token_policy + beta * per_token_kl if beta != 0 else per_token_policy  # (N, T)

    def aggregate(per_token: torch.Tensor) -> torch.Tensor:
        return aggregate_tokens(per_token, mask, loss_type, max_completion_length, num_items)

    with torch.no_grad():  # clip statistics, TRL's clip_ratio/{low,high,region}_mean
        is_low_clipped = (ratio < 1 - epsilon_low) & (advantages < 0)  # (N, T)
        is_high_clipped = (ratio > 1 + epsilon_high) & (advantages > 0)  # (N, T)
        num_active = mask.sum().clamp(min=1.0)  # clamp: an all-padding batch gives 0, not 0/0
        low_clip_fraction = (is_low_clipped & active).sum() / num_active
        high_clip_fraction = (is_high_clipped & active).sum() / num_active
        clip_fraction = ((is_low_clipped | is_high_clipped) & active).sum() / num_active

    return GRPOLossOutput(
        loss=aggregate(per_token_loss),
        policy_loss=aggregate(per_token_policy),
        kl=aggregate(per_token_kl),
        ratio=ratio,
        clipped_ratio=clipped_ratio,
        per_token_kl=per_token_kl * mask,
        per_token_loss=per_token_loss * mask,
        clip_fraction=clip_fraction,
        low_clip_fraction=low_clip_fraction,
        high_clip_fraction=high_clip_fraction,
    )
