"""The sampler's C kernels against what they implement (native.sample_rows: the inverse CDF;
native.attend: scaled_dot_product_attention of one query row), and in the sampler."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
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


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 5), g=st.integers(1, 4), h=st.integers(1, 4), d=st.integers(1, 33),
    len_max=st.integers(1, 70), data=st.data(),
)  # fmt: skip
def test_attend_is_sdpa_of_single_query_rows(b, g, h, d, len_max, data):
    length = data.draw(st.integers(1, len_max))
    seed = data.draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    k, v = torch.randn(2, b, h, len_max, d, generator=gen)
    q = torch.randn(b * g, 2 * h * d, generator=gen)[:, h * d :]  # row stride 2·h·d, as in the fused q|k|v
    mask = torch.rand(b, len_max, generator=gen) > 0.4
    mask[:, 0] = True
    q4 = q.reshape(b, g, h, d).transpose(1, 2)  # (B, H, G, d)
    for m in (None, mask):
        sdpa_mask = None if m is None else m[:, None, None, :length]
        ref = F.scaled_dot_product_attention(q4, k[..., :length, :], v[..., :length, :], attn_mask=sdpa_mask)
        out = native.attend(q, k.transpose(-1, -2).contiguous(), v, length, m)  # keys transposed
        torch.testing.assert_close(out, ref.transpose(1, 2).reshape(b * g, h * d), rtol=1e-5, atol=2e-6)


def test_attend_does_not_depend_on_the_thread_count_and_gives_nan_without_keys():
    g = torch.Generator().manual_seed(7)
    kt, v = torch.randn(64, 4, 16, 80, generator=g), torch.randn(64, 4, 80, 16, generator=g)
    q = torch.randn(64, 64, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.attend(q, kt, v, 80)
        torch.set_num_threads(2)
        two = native.attend(q, kt, v, 80)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    mask = torch.ones(64, 80, dtype=torch.bool)
    mask[3] = False  # row 3 has no key to attend: NaN, as scaled_dot_product_attention gives
    out = native.attend(q, kt, v, 80, mask)
    assert out[3].isnan().all() and not out[[0, 4]].isnan().any()


def test_attend_refuses_what_it_cannot_read():
    kt, v = torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 5, 4)
    with pytest.raises(ValueError, match="float32"):
        native.attend(torch.zeros(2, 12, dtype=torch.float64), kt, v, 5)
    with pytest.raises(ValueError, match="query rows"):
        native.attend(torch.zeros(2, 10), kt, v, 5)
    with pytest.raises(ValueError, match="length"):
        native.attend(torch.zeros(2, 12), kt, v, 6)
    with pytest.raises(ValueError, match="transposed keys"):
        native.attend(torch.zeros(2, 12), v, v, 5)  # keys not transposed
    with pytest.raises(ValueError, match="transposed keys"):
        native.attend(torch.zeros(2, 12), kt.transpose(2, 3).contiguous().transpose(2, 3), v, 5)
    with pytest.raises(ValueError, match="bool mask"):
        native.attend(torch.zeros(2, 12), kt, v, 5, torch.ones(2, 4, dtype=torch.bool))


# ---------------------------------------------------------------- the fused decoding step


def step_by_step(model, ids, mask, num_samples, tokens, kernel_positions=16):
    """(fused step output, decode() output) at every position of ``tokens`` (N, T), the same cache filled."""
    from hyperr1 import decoding

    cross, enc_mask = decoding.prepare(model, ids, mask, num_samples)
    cross, enc_mask = decoding._blocked_cross(cross, enc_mask)
    n, h = tokens.shape[0], model.config.decoder_attention_heads
    d_h = model.config.d_model // h
    cache = [(torch.zeros(n, h, d_h, kernel_positions), torch.zeros(n, h, kernel_positions, d_h))
             for _ in range(model.config.decoder_layers)]  # fmt: skip
    step = decoding.native_decoder(model, cross, enc_mask, num_samples, kernel_positions)
    pairs = []
    for t in range(tokens.shape[1]):
        ref = decoding.decode(model, tokens[:, t : t + 1], t, cross, enc_mask, cache, native_attention=True)[:, -1]
        pairs.append((step(tokens[:, t].contiguous(), t).clone(), ref))
    return pairs


@pytest.mark.parametrize(
    "head, cfg",
    [
        ("poincare", {}),  # width 32, 4 heads of 8
        ("euclidean", {"d_model": 14, "decoder_attention_heads": 2, "encoder_attention_heads": 2,
                       "decoder_ffn_dim": 28, "decoder_layers": 3}),  # a head width (7) outside ATTEND_WIDTHS
    ],
)  # fmt: skip
def test_the_fused_decoder_step_is_decode_of_one_token(head, cfg):
    model = tiny(head, **cfg)
    with torch.no_grad():  # GELU inputs over a wide range, so that both sides of the erfc fit are used
        for layer in model.model.decoder.layers:
            layer.fc1.weight.mul_(20.0)
    ids, mask = prompts()  # 3 prompts x 3 samples: 9 rows, a partial block of ROWS = 8
    tokens = torch.randint(0, model.config.vocab_size, (9, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for got, ref in step_by_step(model, ids, mask, 3, tokens):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=2e-5)


def test_the_fused_decoder_step_does_not_depend_on_the_thread_count_and_checks_tokens():
    model = tiny("poincare")
    ids, mask = prompts()
    tokens = torch.randint(0, model.config.vocab_size, (6, 5), generator=torch.Generator().manual_seed(2))
    before, outs = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                outs.append([got for got, _ in step_by_step(model, ids, mask, 2, tokens)])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))
    from hyperr1 import decoding

    with torch.inference_mode():
        cross, enc_mask = decoding._blocked_cross(*decoding.prepare(model, ids, mask, 2))
        step = decoding.native_decoder(model, cross, enc_mask, 2, 16)
        with pytest.raises(IndexError, match="out of range"):
            step(torch.full((6,), model.config.vocab_size), 0)
        with pytest.raises(ValueError, match="position"):
            step(tokens[:, 0].contiguous(), 16)
        with pytest.raises(ValueError, match="int64 tokens"):
            step(tokens[:3, 0].contiguous(), 0)


def test_a_decoder_the_fused_step_does_not_implement_keeps_the_per_op_path():
    from hyperr1 import decoding

    model = tiny("poincare", activation_function="relu")
    ids, mask = prompts()
    with torch.inference_mode():
        cross, enc_mask = decoding._blocked_cross(*decoding.prepare(model, ids, mask, 2))
        assert decoding.native_decoder(model, cross, enc_mask, 2, 16) is None
    gen = [torch.Generator().manual_seed(0) for _ in range(2)]
    native_out = sample(model, ids, mask, num_samples=2, max_new_tokens=6, generator=gen[0], kernel="native")
    eager_out = sample(model, ids, mask, num_samples=2, max_new_tokens=6, generator=gen[1], kernel="eager")
    assert torch.equal(native_out.tokens, eager_out.tokens)


# ---------------------------------------------------------------- attention of whole sequences (teacher forcing)


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 4), h=st.integers(1, 3), lq=st.integers(1, 20), lk=st.integers(1, 20),
    d=st.sampled_from([1, 5, 8, 12, 16, 33]), causal=st.booleans(), masked=st.booleans(), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_attention_has_the_values_and_gradients_of_sdpa(b, h, lq, lk, d, causal, masked, seed):
    from hyperr1.decoding import attention

    if causal:
        lk = lq  # causal attention of a sequence over itself
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=gen, dtype=torch.float64)
    k, v = torch.randn(2, b, h, lk, d, generator=gen, dtype=torch.float64)
    mask = None
    if masked:
        mask = torch.rand(b, lk, generator=gen) > 0.4
        mask[:, 0] = True  # every query keeps a key
    leaves64 = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*leaves64, attn_mask=None if mask is None else mask[:, None, None, :],
                                         is_causal=causal)  # fmt: skip
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, leaves64, grad)
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    out = attention(*leaves, mask=mask, causal=causal, kernel="native")
    grads = torch.autograd.grad(out, leaves, grad.float())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=2e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_attention_does_not_depend_on_the_thread_count_and_gives_nan_without_keys():
    g = torch.Generator().manual_seed(5)
    q, k, v = torch.randn(3, 64, 4, 16, 12, generator=g)
    before, results = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            o, p = native.attention_forward(q, k, v, None, True)
            results.append((o, p, *native.attention_backward(q, k, v, o, p, torch.ones_like(o))))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
    mask = torch.ones(64, 16, dtype=torch.bool)
    mask[3] = False  # batch 3 has no key to attend: NaN there, as scaled_dot_product_attention gives
    o, _ = native.attention_forward(q, k, v, mask, False)
    assert o[3].isnan().all() and not o[[0, 4]].isnan().any()


def test_attention_refuses_what_it_cannot_read():
    from hyperr1.decoding import attention

    q, k = torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 6, 5)
    with pytest.raises(ValueError, match="float32"):
        native.attention_forward(q.double(), k, k, None, False)
    with pytest.raises(ValueError, match="shape"):
        native.attention_forward(q, k[:, :, :, :4], k, None, False)
    with pytest.raises(ValueError, match="bool mask"):
        native.attention_forward(q, k, k, torch.ones(2, 5, dtype=torch.bool), False)
    with pytest.raises(ValueError, match="unknown attention kernel"):
        attention(q, k, k, kernel="cuda")
    with pytest.raises(ValueError, match="float32 on the CPU"):
        attention(q.double(), k.double(), k.double(), kernel="native")


@pytest.mark.parametrize("head", ["poincare", "euclidean"])
def test_the_lean_encoder_is_the_hugging_face_encoder(head):
    from hyperr1.decoding import encode

    model = tiny(head)
    ids, mask = prompts()
    for mode in (model.train, model.eval):
        mode()
        ref = model.encode(ids, mask)
        for kernel in ("native", "eager"):
            torch.testing.assert_close(encode(model, ids, mask, kernel), ref, rtol=1e-5, atol=2e-6)


# ---------------------------------------------------------------- the fused head and draw


@pytest.mark.parametrize("head", ["poincare", "euclidean"])
@pytest.mark.parametrize("greedy, temperature", [(False, 1.0), (False, 0.7), (True, 1.0)])
def test_the_fused_head_draws_what_the_head_and_sample_rows_draw(head, greedy, temperature):
    from hyperr1 import decoding

    model = tiny(head)
    with torch.no_grad():  # spread the prototypes so that the logits are not flat
        if head == "poincare":
            model.head.prototypes.copy_(model.head.ball.projx(torch.randn_like(model.head.prototypes) * 0.5))
    n, steps = 10, 4
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(steps, n, model.config.d_model, generator=gen)
    u = torch.rand(steps, n, generator=gen)
    fused = decoding.native_head(model, n, temperature)
    tokens = torch.zeros(n, steps, dtype=torch.int64)
    logprobs, mask = torch.zeros(n, steps), torch.zeros(n, steps, dtype=torch.bool)
    done = torch.zeros(n, dtype=torch.bool)
    done[3] = True  # a row that finished before: pad, log p 0, mask 0
    eos, pad = 2, 0
    ref_done = done.clone()
    with torch.inference_mode():
        for t in range(steps):
            logits = model.logits(hidden[t]) / (1.0 if greedy else temperature)
            want_tok, want_logp = native.sample_rows(logits, None if greedy else u[t])
            want_tok = want_tok.masked_fill(ref_done, pad)
            finished = fused(hidden[t], None if greedy else u[t], done, tokens, logprobs, mask, t, pad=pad, eos=eos)
            assert torch.equal(tokens[:, t], want_tok) and torch.equal(fused.next, want_tok)
            torch.testing.assert_close(logprobs[:, t], want_logp.masked_fill(ref_done, 0.0), rtol=1e-5, atol=2e-5)
            assert torch.equal(mask[:, t], ~ref_done)
            ref_done |= want_tok == eos
            assert torch.equal(done, ref_done) and finished == int(ref_done.sum())


def test_heads_the_fused_draw_does_not_implement_keep_the_per_op_path():
    from hyperr1 import decoding

    assert decoding.native_head(tiny("poincare", clip_r=None), 4, 1.0) is None  # exp₀ without clipping
    assert decoding.native_head(tiny("poincare", clip_r=5.0), 4, 1.0) is None  # can reach the float margin
    assert decoding.native_head(tiny("poincare", head_kernel="eager"), 4, 1.0) is None  # PyTorch ops asked for
    assert decoding.native_head(tiny("poincare"), 4, 1.0) is not None
    ids, mask = prompts()
    model = tiny("poincare", clip_r=None)
    outs = [sample(model, ids, mask, num_samples=2, max_new_tokens=6, generator=torch.Generator().manual_seed(0),
                   kernel=kernel) for kernel in ("native", "eager")]  # fmt: skip
    assert torch.equal(outs[0].tokens, outs[1].tokens)
    with pytest.raises(ValueError, match="temperature"):
        decoding.native_head(tiny("euclidean"), 4, 0.0)


def test_native_token_logprobs_backward_refuses_what_it_cannot_read():
    p = torch.full((3, 5), 0.2)
    with pytest.raises(IndexError, match="out of range"):
        native.token_logprobs_backward(p, torch.tensor([0, 5, 1]), torch.ones(3))
    with pytest.raises(ValueError, match="token ids"):
        native.token_logprobs_backward(p, torch.zeros(3, dtype=torch.int32), torch.ones(3))
    with pytest.raises(ValueError, match="grad"):
        native.token_logprobs_backward(p, torch.zeros(3, dtype=torch.int64), torch.ones(4))


def test_the_lean_encoder_leaves_dropout_to_the_hugging_face_encoder():
    from hyperr1.decoding import encode

    model = tiny("poincare", dropout=0.3).train()
    ids, mask = prompts()
    torch.manual_seed(0)
    ref = model.encode(ids, mask)
    torch.manual_seed(0)
    torch.testing.assert_close(encode(model, ids, mask), ref, rtol=0, atol=0)  # the same dropout masks
    model.eval()
    torch.testing.assert_close(encode(model, ids, mask), model.encode(ids, mask), rtol=1e-5, atol=2e-6)


def test_the_native_kernels_write_float32_whatever_the_default_dtype():
    from hyperr1.decoding import attention

    before = torch.get_default_dtype()
    q = torch.randn(2, 3, 5, 4)
    try:
        torch.set_default_dtype(torch.float64)
        out = attention(q, q, q, causal=True, kernel="native")
    finally:
        torch.set_default_dtype(before)
    assert out.dtype == torch.float32
    ref = F.scaled_dot_product_attention(q, q, q, is_causal=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-6)
