"""The sampler's C draw (native.sample_rows) against the inverse CDF it implements, and in the sampler."""

import pytest
import torch
from test_model import prompts, tiny

from hyperr1 import native
from hyperr1.decoding import sample, sample_categorical

pytestmark = pytest.mark.skipif(not native.sample_available(), reason="no C compiler for the native sampler")


def reference_draw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """First j with Σ_{i ≤ j} softmax(x)_i > u, in float64."""
    cdf = logits.double().softmax(-1).cumsum(-1)
    return torch.searchsorted(cdf, (u.double() * cdf[:, -1])[:, None], right=True).squeeze(-1)


@pytest.mark.parametrize(
    "n, v, scale, seed", [(64, 1203, 3.0, 0), (5, 17, 1.0, 1), (3, 40_000, 10.0, 2), (1, 1, 1.0, 3)]
)
def test_draws_invert_the_softmax_cdf_and_log_probabilities_are_the_log_softmax(n, v, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, v, generator=g) * scale
    u = torch.rand(n, generator=g)
    tokens, logp = native.sample_rows(x, u)
    assert torch.equal(tokens, reference_draw(x, u))
    torch.testing.assert_close(logp, x.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1), rtol=0, atol=2e-6)


def test_the_same_uniforms_give_the_eager_samplers_tokens():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(32, 500, generator=g) * 4
    eager = sample_categorical(x.log_softmax(-1).exp(), torch.Generator().manual_seed(9))
    u = torch.rand(32, 1, generator=torch.Generator().manual_seed(9)).squeeze(1)  # the draws sample_categorical made
    assert torch.equal(native.sample_rows(x, u)[0], eager)


def test_greedy_takes_the_first_argmax():
    x = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, -1.0, 5.0, 5.0]])
    tokens, logp = native.sample_rows(x, None)
    assert tokens.tolist() == [1, 0]
    torch.testing.assert_close(logp, x.log_softmax(-1).max(-1).values)


def test_masked_tokens_are_never_drawn_and_bad_rows_show_up_as_nan():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(5))
    x[0, 3:] = float("-inf")  # only tokens 0..2 have mass
    x[1, 10] = float("nan")
    x[2, 7] = float("inf")
    x[3, :] = float("-inf")  # no mass at all
    for u in (0.0, 0.5, 1 - 2**-24):
        tokens, logp = native.sample_rows(x, torch.full((4,), u))
        assert 0 <= tokens[0] <= 2 and torch.isfinite(logp[0])
        assert tokens[1:].tolist() == [63, 63, 63] and logp[1:].isnan().all()


def test_the_draw_does_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(6)
    x, u = torch.randn(256, 3000, generator=g), torch.rand(256, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.sample_rows(x, u)
        torch.set_num_threads(2)
        two = native.sample_rows(x, u)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="float32"):
        native.sample_rows(torch.zeros(2, 3, dtype=torch.float64), None)
    with pytest.raises(ValueError, match="uniforms"):
        native.sample_rows(torch.zeros(2, 3), torch.zeros(3))


@pytest.mark.parametrize("head", ["poincare", "euclidean"])
@pytest.mark.parametrize("greedy", [False, True])
def test_the_sampler_gives_the_same_completions_with_either_kernel(head, greedy):
    model = tiny(head)
    ids, mask = prompts()
    out = {}
    for kernel in ("eager", "native"):
        gen = torch.Generator().manual_seed(3)
        out[kernel] = sample(model, ids, mask, num_samples=4, max_new_tokens=12, greedy=greedy, generator=gen,
                             kernel=kernel)  # fmt: skip
    assert torch.equal(out["eager"].tokens, out["native"].tokens)
    assert torch.equal(out["eager"].mask, out["native"].mask)
    torch.testing.assert_close(out["eager"].logprobs, out["native"].logprobs, rtol=0, atol=2e-6)


def test_the_sampler_refuses_a_kernel_it_cannot_use():
    model = tiny("poincare")
    ids, mask = prompts()
    with pytest.raises(ValueError, match="unknown sampling kernel"):
        sample(model, ids, mask, kernel="cuda")
    with pytest.raises(ValueError, match="without top-k/top-p"):
        sample(model, ids, mask, top_p=0.9, kernel="native")
