"""The policy: lean path = Hugging Face path, sampler = teacher forcing, checkpoints, generate()."""

import geoopt
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from hyperr1 import native
from hyperr1.decoding import TextPolicy, decode_completions, filter_logits
from hyperr1.model import (
    HyperR1Config,
    HyperR1ForConditionalGeneration,
    build_policy,
    count_parameters,
)

V = 50
HEADS = ["poincare", "euclidean"]


def tiny(head: str, seed: int = 0, **kw) -> HyperR1ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = dict(d_model=32, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64)
    return build_policy(V, head=head, head_dim=4, **{**cfg, **kw}).eval()


def prompts(b: int = 3, s: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, s - 2 :] = 0  # right padding on the first prompt
    ids[0, s - 2 :] = 0
    return ids, mask


@pytest.mark.parametrize("head", HEADS)
def test_lean_decoder_matches_the_hugging_face_forward(head):
    model = tiny(head)
    ids, mask = prompts()
    completions = torch.randint(4, V, (3 * 2, 6))
    lean = model.completion_logprobs(ids, mask, completions, num_samples=2)
    dec_in = torch.cat(
        [torch.full_like(completions[:, :1], model.config.decoder_start_token_id), completions[:, :-1]], 1
    )
    hf = model(
        input_ids=ids.repeat_interleave(2, 0), attention_mask=mask.repeat_interleave(2, 0), decoder_input_ids=dec_in
    ).logits.log_softmax(-1)
    hf = hf.gather(-1, completions[..., None]).squeeze(-1)
    torch.testing.assert_close(lean, hf, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_equal_teacher_forcing(head, temperature):
    """The key/value cache gives the same log-probabilities as a full forward of the sampled tokens."""
    model = tiny(head)
    ids, mask = prompts()
    out = model.sample(
        ids, mask, num_samples=4, max_new_tokens=9, temperature=temperature, generator=torch.Generator().manual_seed(1)
    )
    assert out.tokens.shape == out.logprobs.shape == out.mask.shape == (12, 9)
    tf = model.completion_logprobs(ids, mask, out.tokens, num_samples=4, temperature=temperature)
    torch.testing.assert_close(tf[out.mask], out.logprobs[out.mask], atol=2e-5, rtol=1e-5)
    assert (out.logprobs[~out.mask] == 0).all()


@pytest.mark.parametrize("head", HEADS)
def test_greedy_sampler_matches_generate(head):
    model = tiny(head)
    ids, mask = prompts()
    ours = model.sample(ids, mask, greedy=True, max_new_tokens=8)
    theirs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)[:, 1:]
    n = ours.tokens.shape[1]
    assert torch.equal(ours.tokens[ours.mask], theirs[:, :n][ours.mask])


def test_sequences_stop_at_end_of_sequence():
    model = tiny("poincare")
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.head.bias[eos] = 1e4  # every first token is </s>
    ids, mask = prompts()
    out = model.sample(ids, mask, num_samples=2, max_new_tokens=10)
    assert out.tokens.shape == (6, 1) and (out.tokens == eos).all() and out.mask.all()


def test_sampling_is_reproducible_and_masks_after_eos():
    model = tiny("euclidean")
    ids, mask = prompts()
    a = model.sample(ids, mask, num_samples=3, max_new_tokens=12, generator=torch.Generator().manual_seed(5))
    b = model.sample(ids, mask, num_samples=3, max_new_tokens=12, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    eos = model.config.eos_token_id
    for row, m in zip(a.tokens, a.mask, strict=True):
        hits = (row == eos).nonzero()
        if len(hits):  # everything after the first </s> is padding outside the mask
            first = int(hits[0])
            assert m[: first + 1].all() and not m[first + 1 :].any()
            assert (row[first + 1 :] == model.config.pad_token_id).all()


def test_filter_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.equal(filter_logits(logits), logits)
    top2 = filter_logits(logits, top_k=2)
    assert torch.isfinite(top2).tolist() == [[True, True, False, False]]
    p = logits.softmax(-1)[0]  # 0.644, 0.237, 0.087, 0.032
    nucleus = filter_logits(logits, top_p=float(p[0] + p[1]) - 1e-3)
    assert torch.isfinite(nucleus).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=1e-6)).tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("head", HEADS)
def test_save_and_load_round_trip(tmp_path, head):
    model = tiny(head, learn_curvature=True, curvature=0.7) if head == "poincare" else tiny(head)
    if head == "poincare":
        with torch.no_grad():  # push prototypes towards the boundary so the check is not trivial
            model.head.prototypes.copy_(model.head.ball.projx(model.head.prototypes * 300))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert isinstance(loaded, HyperR1ForConditionalGeneration)
    differing = {k for k, v in model.config.to_dict().items() if loaded.config.to_dict().get(k) != v}
    assert differing <= {"_name_or_path"}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    if head == "poincare":
        protos = loaded.head.prototypes
        assert isinstance(protos, geoopt.ManifoldParameter) and protos.manifold is loaded.head.ball
        assert loaded.projection.ball is loaded.head.ball  # one curvature for projection and head
        assert float(loaded.head.ball.c) == pytest.approx(0.7)
        assert [n for n, p in loaded.named_parameters() if p.requires_grad] == [
            n for n, p in model.named_parameters() if p.requires_grad
        ]
        assert bool(protos.manifold.check_point_on_manifold(protos))
    ids, mask = prompts()
    torch.testing.assert_close(
        loaded.sample(ids, mask, greedy=True, max_new_tokens=5).tokens,
        model.sample(ids, mask, greedy=True, max_new_tokens=5).tokens,
    )


def test_config_errors_and_size():
    with pytest.raises(ValueError, match="unknown head"):
        HyperR1Config(head="lorentz")
    with pytest.raises(ValueError, match="head_dim"):
        HyperR1Config(head_dim=0)
    with pytest.raises(ValueError, match="divisible"):
        HyperR1Config(d_model=30, encoder_attention_heads=4)
    assert count_parameters(build_policy(1255)) < 1_000_000  # the default policy is well under 1 M
    model = tiny("poincare")
    ids, mask = prompts()
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.sample(ids, mask, max_new_tokens=10_000)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(ids, mask, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        model.sample(ids, mask, top_p=0.0)
    with pytest.raises(ValueError, match=r"expected \(6, T\) completions"):
        model.completion_logprobs(ids, mask, torch.zeros(5, 4, dtype=torch.long), num_samples=2)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model.completion_logprobs(ids, mask, torch.zeros(3, 1000, dtype=torch.long))


def test_text_policy_and_decoding():
    from hyperr1.hierarchy import Hierarchy
    from hyperr1.tokenizer import build_tokenizer

    tok = build_tokenizer(Hierarchy.balanced_tree(2, 2))
    model = build_policy(len(tok), d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64).eval()
    policy = TextPolicy(model, tok, max_new_tokens=6)
    out = policy(["user : is a b ? assistant :", "user : x ? assistant :"], num_samples=3, greedy=False)
    assert len(out) == 2 and all(len(o) == 3 and all(isinstance(s, str) for s in o) for o in out)
    ids = torch.tensor([[tok.convert_tokens_to_ids("<think>"), tok.eos_token_id, 0]])
    assert decode_completions(tok, ids, torch.tensor([[True, True, False]])) == ["<think>"]
    tok.add_tokens(["zebra_fish"])  # the tokens by id are kept per tokenizer: an added one must still decode
    added = torch.tensor([[tok.convert_tokens_to_ids("zebra_fish"), tok.eos_token_id]])
    assert decode_completions(tok, added, torch.tensor([[True, True]])) == ["zebra_fish"]


def _tamper(path, edit):
    """Rewrite ``model.safetensors`` under ``path`` with ``edit(state_dict)`` applied."""
    from safetensors.torch import load_file, save_file

    state = load_file(path / "model.safetensors")
    edit(state)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("head.prototypes"), r"missing keys: \['head.prototypes'\]"),
        (lambda s: s.update(extra=torch.zeros(3)), r"unexpected keys: \['extra'\]"),
        (lambda s: s["head.bias"].__setitem__(0, float("nan")), "tensor 'head.bias' has non-finite values"),
        (lambda s: s["head.prototypes"].__setitem__(7, 2.0), "'head.prototypes' row 7 lies outside the Poincaré ball"),
        (lambda s: s.update({"head.prototypes": torch.zeros(V, 3)}), "mismatched keys"),
    ],
)
def test_weights_that_do_not_fit_are_an_error_naming_the_tensor(tmp_path, edit, message):
    tiny("poincare").save_pretrained(tmp_path)
    _tamper(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError):  # the in-place loader of checkpoints is as strict
        tiny("poincare").load_weights(tmp_path)


def test_a_head_that_differs_from_the_weights_is_an_error(tmp_path):
    import json

    tiny("poincare").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "head": "euclidean"}))
    with pytest.raises(ValueError, match="do not fit a euclidean-head .*(missing|unexpected) keys"):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)


def test_full_distributions_gather_to_the_logprobs(head="poincare"):
    model = tiny(head)
    ids, mask = prompts()
    completions = torch.randint(4, V, (3 * 2, 6))
    for temperature in (1.0, 0.7):
        dist = model.completion_log_distribution(ids, mask, completions, num_samples=2, temperature=temperature)
        assert dist.shape == (6, 6, V)
        torch.testing.assert_close(dist.exp().sum(-1), torch.ones(6, 6))  # a distribution at every position
        logp = model.completion_logprobs(ids, mask, completions, num_samples=2, temperature=temperature)
        gathered = dist.gather(-1, completions[..., None]).squeeze(-1)  # the same numbers, to float rounding
        torch.testing.assert_close(gathered, logp, rtol=0, atol=2e-6)


@pytest.mark.parametrize("entropy", [True, False])
def test_token_logprobs_entropy_and_gradient_are_those_of_log_softmax(entropy):
    """TokenLogProbs against log_softmax + gather and −Σ p log p, values and gradients (float64)."""
    from hyperr1.decoding import TokenLogProbs

    g = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(3, 5, 11, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, 11, (3, 5), generator=g)
    logp, ent = TokenLogProbs.apply(z, y, entropy)
    ref_all = z.log_softmax(-1)
    ref = ref_all.gather(-1, y[..., None]).squeeze(-1)
    torch.testing.assert_close(logp, ref)
    expected = -(ref_all.exp() * ref_all).sum(-1) if entropy else torch.zeros(3, 5, dtype=torch.float64)
    torch.testing.assert_close(ent, expected.detach())
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((logp * w).sum(), z)
    (ref_grad,) = torch.autograd.grad((ref * w).sum(), z)
    torch.testing.assert_close(grad, ref_grad)
    assert torch.autograd.gradcheck(lambda t: TokenLogProbs.apply(t, y, entropy)[0], (z,))


def test_native_token_logprobs_match_the_float64_definition():
    """The C forward of TokenLogProbs (float32 CPU): values and gradients of float64 log_softmax to
    float32 rounding, masked (−inf) logits counted as zero mass, a diverged row NaN throughout, and
    an out-of-range token refused."""
    from hyperr1.decoding import TokenLogProbs

    if not native.sample_available():
        pytest.skip("the sampler kernels do not build here")
    g = torch.Generator().manual_seed(1)
    z = 4 * torch.randn(4, 6, 37, generator=g)
    z[0, 1, :9] = float("-inf")  # masked tokens
    z[1, 2, 5] = 1e4  # one token with all the mass
    y = torch.randint(9, 37, (4, 6), generator=g)
    z = z.requires_grad_()
    logp, ent = TokenLogProbs.apply(z, y, True)
    ref_all = z.detach().double().log_softmax(-1)
    torch.testing.assert_close(logp.double(), ref_all.gather(-1, y[..., None]).squeeze(-1), rtol=1e-6, atol=1e-5)
    p = ref_all.exp()
    torch.testing.assert_close(ent.double(), -torch.special.xlogy(p, p).sum(-1), rtol=0, atol=1e-5)
    w = torch.randn(4, 6, generator=g)
    (grad,) = torch.autograd.grad((logp * w).sum(), z)
    zz = z.detach().double().requires_grad_()
    (ref_grad,) = torch.autograd.grad((zz.log_softmax(-1).gather(-1, y[..., None]).squeeze(-1) * w).sum(), zz)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=1e-6)

    bad = torch.randn(3, 7)
    bad[1, 2] = float("nan")
    bad[2] = float("-inf")
    p, logp, ent = native.token_logprobs(bad, torch.tensor([0, 1, 2]))
    assert torch.isfinite(logp[0]) and torch.isfinite(ent[0]) and torch.isfinite(p[0]).all()
    assert logp[1:].isnan().all() and ent[1:].isnan().all() and p[1:].isnan().all()
    with pytest.raises(IndexError, match="out of range"):
        native.token_logprobs(torch.randn(2, 7), torch.tensor([0, 7]))


def test_a_seed_gives_both_heads_the_same_initial_trunk():
    """The head comparison pairs runs by seed: the trunk is built before the head, so the same seed
    gives the Poincaré and the Euclidean policy bit-identical initial trunk weights."""
    trunks = {head: tiny(head, seed=3).model.state_dict() for head in ("poincare", "euclidean")}
    assert trunks["poincare"].keys() == trunks["euclidean"].keys()
    assert all(torch.equal(trunks["poincare"][k], trunks["euclidean"][k]) for k in trunks["poincare"])
    other = tiny("poincare", seed=4).model.state_dict()
    assert not all(torch.equal(other[k], trunks["poincare"][k]) for k in other)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_teacher_forced_log_probabilities_from_the_fused_head_match_the_logits_path(temperature, monkeypatch):
    """completion_logprobs through dispatch.distance_logprobs (no N·T·V logits) gives the log-probabilities,
    entropies and gradients of log_softmax over model.logits."""
    from hyperr1 import decoding

    model = tiny("poincare").train()
    with torch.no_grad():
        model.head.prototypes.copy_(model.head.ball.projx(torch.randn_like(model.head.prototypes) * 0.4))
    ids, mask = prompts()
    completions = torch.randint(4, V, (6, 5), generator=torch.Generator().manual_seed(2))
    weights = torch.linspace(-1, 1, completions.numel()).view(completions.shape)
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(decoding, "_distance_logprobs", lambda *args, **kwargs: None)
        model.zero_grad()
        logp, ent = model.completion_logprobs(ids, mask, completions, num_samples=2, temperature=temperature,
                                              return_entropy=True)  # fmt: skip
        (logp * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logp.detach(), ent, grads))
    (logp_f, ent_f, grads_f), (logp_r, ent_r, grads_r) = results
    torch.testing.assert_close(logp_f, logp_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent_f, ent_r, rtol=1e-5, atol=1e-5)
    assert grads_f.keys() == grads_r.keys()
    for name, g in grads_r.items():  # relative to each tensor's largest entry (k_proj biases: exactly 0 + rounding)
        torch.testing.assert_close(grads_f[name], g, rtol=0, atol=1e-4 * float(g.abs().max()) + 1e-9, msg=name)
