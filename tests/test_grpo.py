"""GRPO loss: hand-worked values from the formulas, gradient signs, clipping, aggregation, padding and errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperr1.grpo import LOSS_TYPES, SCALE_REWARDS, GRPOLossOutput, group_advantages, grpo_loss

DTYPES = [torch.float32, torch.float64]
EPS = 1e-4  # group_advantages' default eps


def close(actual, expected, dtype):
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=dtype), torch.as_tensor(expected, dtype=dtype), rtol=tol, atol=tol
    )


def grad_of(fn, logprobs):
    """d fn(logprobs) / d logprobs."""
    logprobs = logprobs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(logprobs), logprobs)
    return grad


# --- group_advantages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_advantages_group_scaling_by_hand(dtype):
    # groups [0, 1, 2] (mean 1, unbiased std 1), [0, 2, 4] (mean 2, std 2), [5, 5, 5] (mean 5, std 0)
    rewards = torch.tensor([0.0, 1.0, 2.0, 0.0, 2.0, 4.0, 5.0, 5.0, 5.0], dtype=dtype)
    advantages, zero_std = group_advantages(rewards, 3)
    expected = [-1 / (1 + EPS), 0, 1 / (1 + EPS), -2 / (2 + EPS), 0, 2 / (2 + EPS), 0, 0, 0]
    close(advantages, expected, dtype)
    assert advantages.dtype == dtype
    assert zero_std.tolist() == [False, False, True]


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_advantages_batch_scaling_by_hand(dtype):
    # batch mean 3, deviations -3 -2 -1 2 2 2, unbiased var 26 / 5; group means 1 and 5
    rewards = torch.tensor([0.0, 1.0, 2.0, 5.0, 5.0, 5.0], dtype=dtype)
    advantages, zero_std = group_advantages(rewards, 3, scale_rewards="batch")
    std = math.sqrt(26 / 5)
    close(advantages, [-1 / (std + EPS), 0, 1 / (std + EPS), 0, 0, 0], dtype)
    assert zero_std.tolist() == [False, True]


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_advantages_no_scaling_by_hand(dtype):
    rewards = torch.tensor([0.0, 1.0, 2.0, 0.0, 2.0, 4.0], dtype=dtype)
    advantages, zero_std = group_advantages(rewards, 3, scale_rewards="none")
    close(advantages, [-1, 0, 1, -2, 0, 2], dtype)
    assert zero_std.tolist() == [False, False]


@pytest.mark.parametrize("scale_rewards", SCALE_REWARDS)
def test_equal_rewards_give_zero_advantage_and_zero_std(scale_rewards):
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.3, 0.3, 0.3, 0.3])
    advantages, zero_std = group_advantages(rewards, 4, scale_rewards=scale_rewards)
    assert torch.equal(advantages, torch.zeros(8))
    assert zero_std.tolist() == [True, True]


def test_group_advantages_casts_integer_rewards():
    advantages, _ = group_advantages(torch.tensor([1, 0, 0, 1]), 2, scale_rewards="none")
    assert advantages.is_floating_point()
    assert advantages.tolist() == [0.5, -0.5, -0.5, 0.5]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    num_groups=st.integers(1, 4),
    group_size=st.integers(2, 5),
    scale_rewards=st.sampled_from(SCALE_REWARDS),
)
def test_advantages_sum_to_zero_in_every_group(seed, num_groups, group_size, scale_rewards):
    rewards = torch.randn(num_groups * group_size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    advantages, _ = group_advantages(rewards, group_size, scale_rewards=scale_rewards)
    close(advantages.view(num_groups, group_size).sum(dim=1), torch.zeros(num_groups), torch.float64)


# --- grpo_loss: policy term and gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("advantage, sign", [(1.5, -1.0), (-0.7, 1.0)])
def test_gradient_sign_follows_advantage(dtype, advantage, sign):
    # a positive advantage lowers the loss as log π of the sampled tokens rises: d loss / d logp < 0
    logprobs = torch.log(torch.tensor([[0.3, 0.6, 0.9]], dtype=dtype))
    advantages = torch.tensor([advantage], dtype=dtype)
    mask = torch.ones(1, 3, dtype=dtype)
    grad = grad_of(lambda lp: grpo_loss(lp, lp.detach(), advantages, mask).loss, logprobs)
    assert torch.all(torch.sign(grad) == sign)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mu_one_gradient_is_vanilla_policy_gradient(dtype):
    # ρ = 1: loss = 1/N Σ_i 1/|o_i| Σ_t -Â_i ρ_it, so d loss / d logp_it = -Â_i / (N |o_i|) on active tokens
    logprobs = torch.log(torch.tensor([[0.5, 0.2, 0.7], [0.4, 0.9, 0.1]], dtype=dtype))
    advantages = torch.tensor([2.0, -3.0], dtype=dtype)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=dtype)
    out = grpo_loss(logprobs, logprobs, advantages, mask)
    close(out.ratio, torch.ones(2, 3), dtype)
    close(out.loss, (-2.0 + 3.0) / 2, dtype)
    grad = grad_of(lambda lp: grpo_loss(lp, lp.detach(), advantages, mask).loss, logprobs)
    close(grad, [[-2 / (2 * 3)] * 3, [3 / (2 * 2), 3 / (2 * 2), 0.0]], dtype)

    # N = 1: -Â / |o|
    grad = grad_of(lambda lp: grpo_loss(lp, lp.detach(), advantages[:1], mask[:1]).loss, logprobs[:1])
    close(grad, [[-2 / 3] * 3], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipping_only_outside_trust_region(dtype):
    # ε = 0.2; per token (ρ, Â): inside (1.1, +), high-clipped (1.5, +), pessimistic-unclipped (0.5, +),
    # row 2: inside (0.9, -), low-clipped (0.5, -), pessimistic-unclipped (1.5, -)
    ratios = torch.tensor([[1.1, 1.5, 0.5], [0.9, 0.5, 1.5]], dtype=dtype)
    old = torch.log(torch.full((2, 3), 0.4, dtype=dtype))
    logprobs = old + torch.log(ratios)
    advantages = torch.tensor([1.0, -1.0], dtype=dtype)
    mask = torch.ones(2, 3, dtype=dtype)
    out = grpo_loss(logprobs, old, advantages, mask)
    close(out.ratio, ratios, dtype)
    close(out.clipped_ratio, [[1.1, 1.2, 0.8], [0.9, 0.8, 1.2]], dtype)
    # -min(ρ Â, clip(ρ) Â)
    close(out.per_token_loss, [[-1.1, -1.2, -0.5], [0.9, 0.8, 1.5]], dtype)
    close(out.clip_fraction, 2 / 6, dtype)
    close(out.low_clip_fraction, 1 / 6, dtype)
    close(out.high_clip_fraction, 1 / 6, dtype)
    # d(-ρ Â)/d logp = -ρ Â / 3 tokens / 2 sequences where unclipped, 0 where the clipped term is used
    grad = grad_of(lambda lp: grpo_loss(lp, old, advantages, mask).loss, logprobs)
    close(grad, [[-1.1 / 6, 0.0, -0.5 / 6], [0.9 / 6, 0.0, 1.5 / 6]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_asymmetric_clip_higher(dtype):
    # ε_low = 0.2, ε_high = 0.28: ρ = 1.25 with Â > 0 is inside [0.8, 1.28]; ρ = 0.75 with Â < 0 is low-clipped
    ratios = torch.tensor([[1.25], [0.75]], dtype=dtype)
    logprobs = torch.log(ratios)
    old = torch.zeros(2, 1, dtype=dtype)
    advantages = torch.tensor([1.0, -1.0], dtype=dtype)
    mask = torch.ones(2, 1, dtype=dtype)

    def loss(lp, **kw):
        return grpo_loss(lp, old, advantages, mask, epsilon_low=0.2, **kw).loss

    close(grad_of(lambda lp: loss(lp, epsilon_high=0.28), logprobs), [[-1.25 / 2], [0.0]], dtype)
    close(grad_of(loss, logprobs), [[0.0], [0.0]], dtype)  # symmetric ε = 0.2 clips both
    out = grpo_loss(logprobs, old, advantages, mask, epsilon_high=0.28)
    close(out.clipped_ratio, [[1.25], [0.8]], dtype)
    close(out.high_clip_fraction, 0.0, dtype)
    close(out.low_clip_fraction, 0.5, dtype)


# --- grpo_loss: KL -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_k3_kl_by_hand(dtype):
    # logp = log 0.5, ref = log 0.25: exp(-log 2) + log 2 - 1
    logprobs = torch.log(torch.tensor([[0.5]], dtype=dtype))
    ref = torch.log(torch.tensor([[0.25]], dtype=dtype))
    mask = torch.ones(1, 1, dtype=dtype)
    out = grpo_loss(logprobs, logprobs, torch.zeros(1, dtype=dtype), mask, ref_logprobs=ref, beta=0.1)
    k3 = 0.5 + math.log(2) - 1
    close(out.per_token_kl, [[k3]], dtype)
    close(out.kl, k3, dtype)
    close(out.loss, 0.1 * k3, dtype)
    # d k3 / d logp = 1 - exp(ref - logp) = 1/2, times β
    grad = grad_of(
        lambda lp: grpo_loss(lp, lp.detach(), torch.zeros(1, dtype=dtype), mask, ref_logprobs=ref, beta=0.1).loss,
        logprobs,
    )
    close(grad, [[0.1 * 0.5]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_zero_when_policy_equals_reference(dtype):
    logprobs = torch.log(torch.tensor([[0.1, 0.7], [0.3, 0.5]], dtype=dtype))
    mask = torch.ones(2, 2, dtype=dtype)
    advantages = torch.tensor([1.0, -1.0], dtype=dtype)
    out = grpo_loss(logprobs, logprobs, advantages, mask, ref_logprobs=logprobs.clone(), beta=0.5)
    assert torch.equal(out.per_token_kl, torch.zeros(2, 2, dtype=dtype))
    assert out.kl.item() == 0.0
    close(out.loss, out.policy_loss, dtype)


def test_kl_without_reference_is_zero_and_logged_with_beta_zero():
    logprobs = torch.log(torch.tensor([[0.5]]))
    mask = torch.ones(1, 1)
    out = grpo_loss(logprobs, logprobs, torch.ones(1), mask)
    assert out.kl.item() == 0.0 and torch.equal(out.per_token_kl, torch.zeros(1, 1))
    out = grpo_loss(logprobs, logprobs, torch.ones(1), mask, ref_logprobs=torch.log(torch.tensor([[0.25]])))
    close(out.kl, 0.5 + math.log(2) - 1, torch.float32)
    close(out.loss, out.policy_loss, torch.float32)


# --- grpo_loss: aggregation and padding ----------------------------------------------------------------------------


def padded_example(dtype):
    """2x3, row 2 padded at t=2; ratios inside the clip range, so per-token losses are -ρ Â:
    row 1 (Â = 1):  ρ = 1.1, 0.9, 1.0 -> -1.1, -0.9, -1.0 (sum -3.0, |o| = 3)
    row 2 (Â = -2): ρ = 1.0, 1.1, pad -> 2.0, 2.2, 0 (sum 4.2, |o| = 2)"""
    old = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.4]], dtype=dtype))
    logprobs = old + torch.log(torch.tensor([[1.1, 0.9, 1.0], [1.0, 1.1, 1.7]], dtype=dtype))
    advantages = torch.tensor([1.0, -2.0], dtype=dtype)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return logprobs, old, advantages, mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "loss_type, kwargs, expected",
    [
        ("grpo", {}, (-3.0 / 3 + 4.2 / 2) / 2),  # 0.55
        ("dr_grpo", {"max_completion_length": 4}, (-3.0 + 4.2) / (2 * 4)),  # 0.15
        ("dapo", {}, (-3.0 + 4.2) / 5),  # 0.24
        ("dapo", {"num_items": 2}, (-3.0 + 4.2) / 2),  # 0.6
    ],
)
def test_aggregation_by_hand(dtype, loss_type, kwargs, expected):
    logprobs, old, advantages, mask = padded_example(dtype)
    out = grpo_loss(logprobs, old, advantages, mask, loss_type=loss_type, **kwargs)
    assert isinstance(out, GRPOLossOutput)
    close(out.per_token_loss, [[-1.1, -0.9, -1.0], [2.0, 2.2, 0.0]], dtype)
    close(out.loss, expected, dtype)
    close(out.policy_loss, expected, dtype)
    assert out.loss.dtype == dtype and out.loss.shape == ()


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_is_policy_plus_beta_kl(loss_type):
    logprobs, old, advantages, mask = padded_example(torch.float64)
    ref = torch.log(torch.tensor([[0.3, 0.3, 0.3], [0.5, 0.2, 0.9]], dtype=torch.float64))
    out = grpo_loss(
        logprobs, old, advantages, mask, ref_logprobs=ref, beta=0.04, loss_type=loss_type, max_completion_length=3
    )
    assert out.kl > 0
    close(out.loss, out.policy_loss + 0.04 * out.kl, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("padding_value", [-3.0, 0.0, float("-inf"), float("nan")])
def test_padding_contributes_nothing(dtype, loss_type, padding_value):
    logprobs, old, advantages, mask = padded_example(dtype)
    ref = torch.log(torch.tensor([[0.3, 0.3, 0.3], [0.5, 0.2, 0.9]], dtype=dtype))
    kwargs = dict(ref_logprobs=ref, beta=0.1, loss_type=loss_type, max_completion_length=3)
    changed = logprobs.clone()
    changed[1, 2] = padding_value
    changed_old, changed_ref = old.clone(), ref.clone()
    changed_old[1, 2], changed_ref[1, 2] = padding_value, padding_value

    def loss(lp, old_lp, ref_lp):
        return grpo_loss(lp, old_lp, advantages, mask, **{**kwargs, "ref_logprobs": ref_lp}).loss

    close(loss(changed, changed_old, changed_ref), loss(logprobs, old, ref), dtype)
    grad = grad_of(lambda lp: loss(lp, old, ref), logprobs)
    changed_grad = grad_of(lambda lp: loss(lp, changed_old, changed_ref), changed)
    close(changed_grad, grad, dtype)
    assert grad[1, 2].item() == 0.0


def test_all_padding_row_gives_zero_not_nan():
    logprobs = torch.zeros(2, 2)
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    out = grpo_loss(logprobs, logprobs, torch.tensor([1.0, 5.0]), mask)
    close(out.loss, -1.0 / 2, torch.float32)
    out = grpo_loss(logprobs, logprobs, torch.ones(2), torch.zeros(2, 2), loss_type="dapo")
    assert out.loss.item() == 0.0 and out.clip_fraction.item() == 0.0


# --- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale_rewards": "std"}, "unknown scale_rewards"),
        ({"group_size": 0}, "group_size must be >= 1"),
        ({"group_size": 4}, "not divisible by group_size"),
        ({"group_size": 1}, "group_size >= 2"),
        ({"rewards": torch.zeros(2, 3)}, "1-D"),
        ({"rewards": torch.zeros(1), "group_size": 1, "scale_rewards": "batch"}, "N >= 2"),
    ],
)
def test_group_advantages_errors(kwargs, match):
    kwargs = {"rewards": torch.zeros(6), "group_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        group_advantages(kwargs.pop("rewards"), kwargs.pop("group_size"), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss_type": "bnpo"}, "unknown loss_type"),
        ({"epsilon_low": -0.1}, "epsilon_low and epsilon_high must be >= 0"),
        ({"epsilon_high": -0.1}, "epsilon_low and epsilon_high must be >= 0"),
        ({"beta": -1.0, "ref_logprobs": torch.zeros(2, 3)}, "beta must be >= 0"),
        ({"beta": 0.04}, "needs ref_logprobs"),
        ({"loss_type": "dr_grpo"}, "needs max_completion_length"),
        ({"loss_type": "dapo", "num_items": 0}, "num_items must be > 0"),
        ({"old_logprobs": torch.zeros(2, 4)}, "old_logprobs has shape"),
        ({"mask": torch.ones(3, 3)}, "mask has shape"),
        ({"ref_logprobs": torch.zeros(2, 2)}, "ref_logprobs has shape"),
        ({"advantages": torch.zeros(3)}, "advantages has shape"),
        ({"advantages": torch.zeros(2, 1)}, "advantages has shape"),
        ({"logprobs": torch.zeros(6), "old_logprobs": torch.zeros(6), "mask": torch.ones(6)}, "2-D"),
    ],
)
def test_grpo_loss_errors(kwargs, match):
    args = {"logprobs": torch.zeros(2, 3), "old_logprobs": torch.zeros(2, 3), "advantages": torch.zeros(2)}
    args["mask"] = torch.ones(2, 3)
    args.update(kwargs)
    positional = [args.pop(name) for name in ("logprobs", "old_logprobs", "advantages", "mask")]
    with pytest.raises(ValueError, match=match):
        grpo_loss(*positional, **args)
