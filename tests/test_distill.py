"""Distillation: the losses' identities, the log-map initialisation, the parameter bound, and one
tiny `hyperr1 distill` end to end (with its resume and its errors)."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_world import write_tiny_config
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hyperr1 import geometry
from hyperr1.cli import main
from hyperr1.distill import (
    distillation_loss,
    forward_kl,
    generalized_jsd,
    init_student_from_teacher,
    reverse_kl,
    sequence_kd_loss,
)
from hyperr1.distill_pipeline import load_student_weights
from hyperr1.model import build_policy, save_policy
from hyperr1.runs import read_jsonl


def log_dists(seed: int, shape=(3, 5, 7), scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=dtype)).log_softmax(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(seed=st.integers(0, 10_000), beta=st.floats(0.0, 1.0))
@settings(max_examples=40, deadline=None)
def test_every_divergence_is_zero_for_equal_distributions_and_positive_otherwise(dtype, seed, beta):
    p, q = log_dists(seed, dtype=dtype), log_dists(seed + 1, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for d in (forward_kl(p, p), reverse_kl(p, p), generalized_jsd(p, p, beta)):
        assert d.abs().max() <= tol
    assert (forward_kl(p, q) > 0).all() and (reverse_kl(p, q) > 0).all()
    if 0 < beta < 1:
        jsd = generalized_jsd(p, q, beta)
        assert (jsd >= -tol).all() and (jsd <= -math.log(min(beta, 1 - beta)) + tol).all()  # bounded, unlike KL
        if 0.05 <= beta <= 0.95:  # away from the endpoints, where JSD -> 0 (below float32's resolution)
            assert (jsd > 0).all()


def test_gkd_endpoints_are_forward_and_reverse_kl_and_beta_mirrors():
    p, q = log_dists(0), log_dists(1)
    assert torch.equal(generalized_jsd(p, q, 0.0), forward_kl(p, q))
    assert torch.equal(generalized_jsd(p, q, 1.0), reverse_kl(p, q))
    torch.testing.assert_close(generalized_jsd(p, q, 0.3), generalized_jsd(q, p, 0.7))  # swap roles, β ↔ 1 − β
    # the mixture formula itself tends to 0 at the endpoints (M → p_S or p_T), which is why GKD
    # *defines* β = 0 and β = 1 as the two KLs
    assert generalized_jsd(p, q, 1e-6).abs().max() < 1e-4


@pytest.mark.parametrize("tau", [1.0, 2.0, 5.0])
def test_tau_squared_keeps_the_gradient_scale(tau):
    """∂/∂z_S of τ²·KL(p_T^τ ‖ p_S^τ) is τ (p_S^τ − p_T^τ) per token (token mean over N·T tokens)."""
    g = torch.Generator().manual_seed(0)
    z_t = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    z_s = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.bool)
    out = distillation_loss((z_t / tau).log_softmax(-1), (z_s / tau).log_softmax(-1), mask, tau=tau, loss_type="dapo")
    out.loss.backward()
    expected = tau * ((z_s / tau).softmax(-1) - (z_t / tau).softmax(-1)) / mask.sum()
    torch.testing.assert_close(z_s.grad, expected.detach())
    assert out.loss.item() == pytest.approx(tau**2 * out.divergence.item())


def test_padding_is_inert():
    t, s = log_dists(0), log_dists(1)
    s = s.clone().requires_grad_(True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    out = distillation_loss(t, s, mask, divergence="jsd", beta=0.4)
    out.loss.backward()
    assert (s.grad[0, 3:] == 0).all() and (out.per_token[0, 3:] == 0).all()
    t2 = t.clone()
    t2[0, 3:] = float("-inf")  # garbage where the mask is off changes nothing
    assert distillation_loss(t2, s.detach(), mask, divergence="jsd", beta=0.4).loss.item() == pytest.approx(
        out.loss.item()
    )
    nll = sequence_kd_loss(torch.full((3, 5), -2.0), mask, loss_type="dapo")
    assert nll.loss.item() == pytest.approx(2.0)


def test_bad_loss_arguments_are_errors():
    t = log_dists(0)
    with pytest.raises(ValueError, match="unknown divergence"):
        distillation_loss(t, t, torch.ones(3, 5), divergence="mse")
    with pytest.raises(ValueError, match="shapes differ"):
        distillation_loss(t, t[:, :4], torch.ones(3, 5))
    with pytest.raises(ValueError, match="beta must be in"):
        generalized_jsd(t, t, 1.5)


@pytest.mark.parametrize("k_student", [4, 2])
def test_logmap_initialisation_returns_the_prototypes(k_student):
    torch.manual_seed(0)
    teacher = build_policy(30, head="poincare", head_dim=4, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64)
    with torch.no_grad():  # prototypes spread over the ball, not only near the origin
        teacher.head.prototypes.copy_(teacher.head.ball.projx(teacher.head.prototypes * 200))
    small = dict(d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32)
    student = build_policy(30, head="euclidean", head_dim=k_student, **small)
    init_student_from_teacher(student, teacher)
    c = teacher.head.ball.c.detach()
    if k_student == 4:  # same dimension: exp₀ of the student's rows gives back the prototypes
        back = geometry.expmap0(student.head.weight.detach().double(), c=c.double())
        torch.testing.assert_close(back.float(), teacher.head.prototypes.detach(), atol=1e-5, rtol=1e-5)
    else:  # smaller: the best rank-2 projection of log₀ p_v, so norms never grow
        tangent = geometry.logmap0(teacher.head.prototypes.detach().double(), c=c.double())
        assert (student.head.weight.double().norm(dim=-1) <= tangent.norm(dim=-1) + 1e-6).all()
    assert torch.equal(student.head.bias, teacher.head.bias)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    cfg, run = write_tiny_config(tmp)
    assert main(["train", "--config", str(cfg), "--quiet"]) == 0
    return run


TINY_OVERRIDES = (
    "max_param_ratio=0.6 student.d_model=16 student.ffn_dim=16 student.layers=1 student.attention_heads=2 "
    "student.head_dim=4 distill.steps=3 distill.prompts_per_step=4 distill.max_completion_length=24 "
    "distill.eval_every=2 distill.eval_examples=8 distill.checkpoint_every=1 distill.lam=0.5 bias_examples=10 "
    "eval.k=0 eval.n_resamples=20"
)
DISTILL_TINY = [arg for item in TINY_OVERRIDES.split() for arg in ("--set", item)]


def test_distill_end_to_end_and_resume(teacher_run, tmp_path, capsys):
    out = ["--out", str(tmp_path), "--name", "student_run", "--teacher", str(teacher_run)]
    assert main(["distill", "--quiet", *out, *DISTILL_TINY]) == 0
    run = tmp_path / "student_run"
    for name in ("config.json", "results.json", "eval_teacher.json", "eval_student.json", "distill/metrics.jsonl"):
        assert (run / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 3 and results["parameters"]["ratio"] <= 0.6
    for split in ("test_unseen_pair", "test_unseen_subject", "distill_seen", "distill_unseen"):
        assert split in results["student_eval"] and split in results["retention"]
    assert set(results["student_confidence"]) <= {"distill_seen", "distill_unseen", "distill_subtree"}
    assert all(0 < v <= 1 for v in results["student_confidence"].values())
    assert set(results["gap_from_seen"]["teacher"]) >= {"distill_unseen", "test_unseen_pair"}
    root = results["bias_subtree"]["root"]
    assert root and results["bias_subtree"]["concepts"] >= 1
    rows = read_jsonl(run / "distill" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss/total"] >= 0 for r in rows)
    assert "eval/test_unseen_pair/accuracy" in rows[1]
    student = AutoModelForSeq2SeqLM.from_pretrained(run / "student")
    assert student.config.head == "euclidean"
    assert (
        AutoTokenizer.from_pretrained(run / "student").get_vocab()
        == AutoTokenizer.from_pretrained(teacher_run / "policy").get_vocab()
    )
    record = json.loads((run / "config.json").read_text())
    assert record["kind"] == "distill" and "git_commit" in record["config"]["teacher_record"]
    assert main(["distill", "--quiet", *out, *DISTILL_TINY, "--set", "distill.steps=5", "--resume"]) == 0
    assert [r["step"] for r in read_jsonl(run / "distill" / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_distill_errors_name_the_problem(teacher_run, tmp_path, capsys):
    base = ["distill", "--quiet", "--out", str(tmp_path)]
    assert main([*base, "--teacher", str(tmp_path / "nope"), *DISTILL_TINY]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--teacher", str(teacher_run), "--set", "max_param_ratio=0.01"]) == 2
    assert "max_param_ratio allows 1.0%" in capsys.readouterr().err
    assert main([*base, "--teacher", str(teacher_run), "--set", "student.head='poincare'"]) == 2
    assert "student.head must be 'euclidean'" in capsys.readouterr().err
    assert main([*base, *DISTILL_TINY]) == 2
    assert "--teacher" in capsys.readouterr().err


def test_a_student_starts_from_a_saved_policy_of_its_shape(tmp_path, teacher_run, capsys):
    shape = dict(head="euclidean", head_dim=4, d_model=16, encoder_layers=1, decoder_layers=1)
    torch.manual_seed(0)
    first = build_policy(40, **shape)
    save_policy(first, tmp_path / "first")
    torch.manual_seed(1)
    student = build_policy(40, **shape)
    assert not torch.equal(student.head.weight, first.head.weight)
    load_student_weights(student, tmp_path / "first")
    pairs = zip(student.state_dict().values(), first.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(ValueError, match="not a policy of the student's shape .*d_model 16 vs 12"):
        load_student_weights(build_policy(40, **{**shape, "d_model": 12}), tmp_path / "first")
    with pytest.raises(ValueError, match="decoder_attention_heads 4 vs 2"):  # same weight shapes
        load_student_weights(build_policy(40, **{**shape, "decoder_attention_heads": 2}), tmp_path / "first")
    with pytest.raises(FileNotFoundError, match="no saved policy"):
        load_student_weights(student, tmp_path)
    base = ["distill", "--quiet", "--out", str(tmp_path), "--teacher", str(teacher_run), *DISTILL_TINY]
    assert main([*base, "--set", "init='checkpoint'"]) == 2
    assert "init_checkpoint" in capsys.readouterr().err


def test_teacher_completions_do_not_depend_on_the_batch(tmp_path):
    """Greedy teacher completions are cached per prompt and decoded alone, so a prompt gets the same
    tokens in any batch (what makes a resumed distillation repeat the uninterrupted one)."""
    from tiny_world import build_tiny_world

    from hyperr1.decoding import encode_prompts, sample
    from hyperr1.distill import DistillConfig, DistillTrainer

    h, splits, tok, teacher, _ = build_tiny_world(sft_epochs=2)
    student = build_policy(len(tok), head="euclidean", head_dim=4, d_model=16, encoder_ffn_dim=16, decoder_ffn_dim=16)
    cfg = DistillConfig(steps=1, prompts_per_step=4, max_completion_length=12)
    trainer = DistillTrainer(student, teacher, tok, splits["train"], h, cfg, tmp_path, progress=False)
    a, b = splits["train"][:3], splits["train"][2:6]
    ids, amask = encode_prompts(tok, [ex.prompt for ex in a])
    tok_a, mask_a = trainer._teacher_completions(a, ids, amask)
    trainer._greedy.clear()
    ids, amask = encode_prompts(tok, [ex.prompt for ex in b])
    tok_b, mask_b = trainer._teacher_completions(b, ids, amask)
    assert torch.equal(tok_a[2][mask_a[2]], tok_b[0][mask_b[0]])  # the shared prompt, in two batches
    alone_ids, alone_mask = encode_prompts(tok, [a[0].prompt])
    alone = sample(teacher, alone_ids, alone_mask, max_new_tokens=12, greedy=True)
    assert torch.equal(tok_a[0][mask_a[0]], alone.tokens[0][alone.mask[0]])


def test_held_out_subtree_choice_and_prompt_pools():
    from hyperr1.distill_pipeline import held_out_subtree, prompt_pools
    from hyperr1.hierarchy import Hierarchy
    from hyperr1.splits import TasksConfig, build_splits

    h = Hierarchy.balanced_tree(3, 3)  # 40 nodes: the auto subtree is nearest 2 concepts, a depth-2 node's 4
    root = held_out_subtree(h, "auto")
    assert h.parents(root) and abs(len(h.descendants(root)) + 1 - 0.05 * len(h)) <= 2
    assert held_out_subtree(h, "") is None
    assert held_out_subtree(h, root) == root
    with pytest.raises(ValueError, match="not a concept"):
        held_out_subtree(h, "no_such_concept")
    # no distillation prompt names a concept of the subtree; its queries are about one
    splits, _ = build_splits(h, TasksConfig(n_train_is_a=200, n_train_ancestor_k=100, n_train_lca=100, n_test=20))
    inside = h.descendants(root) | {root}
    seen, unseen, subtree = prompt_pools(splits["train"], inside, 0.5, seed=1)
    assert seen and unseen and subtree
    assert not any(inside.intersection(ex.args) for ex in seen + unseen)
    assert all(ex.args[0] in inside for ex in subtree)
    assert {ex.key for ex in seen}.isdisjoint(ex.key for ex in unseen)
    assert prompt_pools(splits["train"], inside, 0.5, seed=1)[0] == seen  # the seed fixes the share


def test_hard_targets_add_the_gold_nll_with_their_weights(tmp_path):
    """L = α_KD · τ² D + α_CE · NLL(gold): one step from the same student and seed gives the KD term
    of the (1, 0) run and the gold NLL of the (0, 1) run, weighted; a missing pool is an error."""
    import copy

    from tiny_world import build_tiny_world

    from hyperr1.distill import DistillConfig, DistillTrainer

    h, splits, tok, teacher, _ = build_tiny_world(sft_epochs=2)
    torch.manual_seed(0)
    student = build_policy(len(tok), head="euclidean", head_dim=4, d_model=16, encoder_ffn_dim=16, decoder_ffn_dim=16)

    def first_step(alpha_kd, alpha_ce, name):
        cfg = DistillConfig(
            steps=1, prompts_per_step=4, max_completion_length=12, gold_per_step=3, alpha_kd=alpha_kd, alpha_ce=alpha_ce
        )
        trainer = DistillTrainer(
            copy.deepcopy(student), teacher, tok, splits["train"], h, cfg, tmp_path / name,
            gold=splits["warm_start"], progress=False,
        )  # fmt: skip
        return trainer.step()

    kd, hard, both = first_step(1.0, 0.0, "kd"), first_step(0.0, 1.0, "ce"), first_step(2.0, 3.0, "both")
    assert math.isnan(kd["distill/hard_nll"]) and hard["distill/hard_nll"] > 0
    assert hard["loss/total"] == pytest.approx(hard["distill/hard_nll"], rel=1e-6)
    assert both["distill/divergence"] == pytest.approx(kd["distill/divergence"], rel=1e-6)
    assert both["distill/hard_nll"] == pytest.approx(hard["distill/hard_nll"], rel=1e-6)
    assert both["loss/total"] == pytest.approx(2 * kd["loss/total"] + 3 * hard["loss/total"], rel=1e-5)
    cfg = DistillConfig(steps=1, alpha_ce=1.0)
    with pytest.raises(ValueError, match="alpha_ce > 0 needs gold completions"):
        DistillTrainer(copy.deepcopy(student), teacher, tok, splits["train"], h, cfg, tmp_path / "x", progress=False)
    for bad in (dict(alpha_kd=0.0, alpha_ce=0.0), dict(alpha_ce=-1.0), dict(gold_pool="all")):
        with pytest.raises(ValueError, match="alpha|gold_pool"):
            DistillConfig(**bad).validate()


def test_gold_only_step_is_a_warm_start_step(tmp_path):
    """With the teacher's term off (α_KD = 0, α_CE = 1) a distillation step is a warm-start step on
    the gold examples it draws: three steps of each from the same student give the same weights.
    The two paths differ only in which examples a step sees (epochs vs draws with replacement;
    experiments/warm_start_order.py measures what that does)."""
    import copy
    import random

    from tiny_world import build_tiny_world

    from hyperr1.distill import DistillConfig, DistillTrainer
    from hyperr1.sft import SFTConfig, train_sft

    h, splits, tok, teacher, _ = build_tiny_world(sft_epochs=2)
    torch.manual_seed(0)
    student = build_policy(len(tok), head="euclidean", head_dim=4, d_model=16, encoder_ffn_dim=16, decoder_ffn_dim=16)
    cfg = DistillConfig(
        steps=3, prompts_per_step=4, max_completion_length=12, gold_per_step=5, alpha_kd=0.0, alpha_ce=1.0, lr=1e-2
    )
    gold = splits["warm_start"]
    trainer = DistillTrainer(
        copy.deepcopy(student), teacher, tok, splits["train"], h, cfg, tmp_path / "d", gold=gold, progress=False
    )
    replay = random.Random()
    replay.setstate(trainer.rng.getstate())
    drawn = []  # the gold examples of each step, in the order DistillTrainer.step draws them
    for _ in range(cfg.steps):
        [replay.randrange(len(trainer.prompts)) for _ in range(cfg.prompts_per_step)]
        replay.random()
        drawn += [gold[replay.randrange(len(gold))] for _ in range(cfg.gold_per_step)]
        trainer.step()

    sft = SFTConfig(epochs=1, batch_size=cfg.gold_per_step, lr=cfg.lr, eval_every=0, checkpoint_every=0, seed=3)
    order = list(range(len(drawn)))
    random.Random(sft.seed).shuffle(order)  # train_sft's shuffle: place the draws where it will read them
    arranged = [None] * len(drawn)
    for position, index in enumerate(order):
        arranged[index] = drawn[position]
    warm = copy.deepcopy(student)
    train_sft(warm, tok, arranged, sft, progress=False)
    moved = 0.0
    for (name, a), b, s in zip(trainer.model.named_parameters(), warm.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, float((a - s).detach().abs().max()))
    assert moved > 1e-3  # the steps did move the student
