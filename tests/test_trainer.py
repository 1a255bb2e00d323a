"""GRPO trainer and warm start: learning signal, exact resume, the collapse guard, bad input."""

import copy
import json
import math

import pytest
import torch
from tiny_world import build_tiny_world

from hyperr1.checkpoint import CheckpointError
from hyperr1.decoding import encode_prompts
from hyperr1.sft import encode_completions, sft_loss
from hyperr1.trainer import GRPOConfig, GRPOTrainer

TIMING = ("time/step_s", "time/sample_s")


@pytest.fixture(scope="module")
def world():
    """A 40-node tree, its splits and tokenizer, and a briefly warm-started tiny policy."""
    return build_tiny_world(sft_epochs=8)


def grpo_cfg(**kw) -> GRPOConfig:
    base = dict(
        steps=4,
        prompts_per_step=4,
        num_generations=4,
        max_completion_length=24,
        lr=3e-3,
        eval_every=0,
        eval_examples=8,
        checkpoint_every=2,
        guard_warmup=2,
    )
    return GRPOConfig(**{**base, **kw})


def run(world, out, cfg, *, resume=False, callbacks=(), model=None):
    h, splits, tok, warm, _ = world
    model = model or copy.deepcopy(warm)
    trainer = GRPOTrainer(
        model,
        tok,
        splits["train"],
        h,
        cfg,
        out,
        ref_model=warm,
        eval_splits={"test_unseen_pair": splits["test_unseen_pair"]},
        callbacks=callbacks,
        progress=False,
    )
    return trainer, trainer.train(resume=resume)


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_warm_start_lowers_the_loss_and_learns_the_format(world):
    h, splits, tok, model, history = world
    assert history[-1]["sft/loss"] < 0.5 * history[0]["sft/loss"]
    batch = splits["warm_start"][:16]
    loss, n = sft_loss(model, tok, batch)
    # n counts exactly the target tokens (each completion's words and its </s>) ...
    assert n == sum(len(ex.completion.split()) + 1 for ex in batch)
    # ... and the loss is their mean NLL under the Hugging Face forward with labels (-100 on padding)
    ids, amask = encode_prompts(tok, [ex.prompt for ex in batch])
    targets, tmask = encode_completions(tok, [ex.completion for ex in batch])
    labels = targets.masked_fill(~tmask, -100)
    start = torch.full_like(targets[:, :1], model.config.decoder_start_token_id)
    with torch.no_grad():
        dec_in = torch.cat([start, targets[:, :-1]], 1)
        hf = model(input_ids=ids, attention_mask=amask, decoder_input_ids=dec_in, labels=labels).loss
    assert loss.item() == pytest.approx(hf.item(), rel=1e-5)


def test_grpo_runs_and_logs_every_metric(world, tmp_path):
    trainer, rows = run(world, tmp_path, grpo_cfg(eval_every=2))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    cfg = trainer.cfg
    for r in rows:
        # the composite reward is the mean of accuracy and format (weights 1, 1); format rate = format reward
        assert r["reward/total"] == pytest.approx((r["reward/accuracy"] + r["reward/format"]) / 2, abs=1e-6)
        assert r["rate/format"] == r["reward/format"]
        # fractions over B = 4 groups of G = 4 completions, and over the 16 completions
        assert r["grpo/zero_std_frac"] * cfg.prompts_per_step == pytest.approx(round(r["grpo/zero_std_frac"] * 4))
        assert 0 <= r["grpo/clip_frac"] <= 1 and 0 <= r["rate/reflection"] <= 1
        assert 0 <= r["reflection/good"] <= r["reflection/retractions"]
        assert 1 <= r["completion/length"] <= cfg.max_completion_length
        assert r["policy/entropy"] > 0 and r["loss/kl"] >= 0 and math.isfinite(r["loss/policy"])
        # no rollback in a healthy run: the learning rate and the guard's counters stay put
        assert r["optim/lr"] == cfg.lr and r["guard/episodes"] == 0 and r["guard/rollbacks"] == 0
        assert r["curriculum/max_hops"] >= cfg.curriculum_start_hops
    assert "eval/test_unseen_pair/accuracy" in rows[1] and "eval/test_unseen_pair/accuracy" not in rows[0]
    assert rows[0]["loss/kl"] == pytest.approx(0.0, abs=1e-6)  # π_θ = π_ref before the first update
    on_disk = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert strip(on_disk) == strip(rows)
    assert (tmp_path / "samples.jsonl").read_text().strip()
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step_000002", "step_000004"]  # keep_checkpoints=2


def test_one_grpo_step_moves_probability_towards_positive_advantages(world, tmp_path, monkeypatch):
    """With μ = 1 and β = 0 the update is the policy gradient: Σ_i Â_i Δ log π(o_i) > 0 after one step."""
    import hyperr1.trainer as trainer_module

    h, splits, tok, warm, _ = world
    model = copy.deepcopy(warm)
    trainer = GRPOTrainer(model, tok, splits["train"], h, grpo_cfg(beta=0.0, lr=3e-3), tmp_path, progress=False)
    seen = {}
    real_forward, real_loss = trainer.logprob_fn.forward, trainer_module.grpo_loss

    def spy_forward(ids, amask, tokens, g, temperature):
        seen.update(ids=ids, amask=amask, tokens=tokens, g=g)
        return real_forward(ids, amask, tokens, g, temperature)

    def spy_loss(logprobs, old, advantages, mask, **kw):
        seen.update(before=logprobs.detach(), advantages=advantages, mask=mask.float())
        return real_loss(logprobs, old, advantages, mask, **kw)

    trainer.logprob_fn.forward = spy_forward
    monkeypatch.setattr(trainer_module, "grpo_loss", spy_loss)
    for _ in range(10):  # the first step whose batch has a learning signal (not every group tied)
        trainer.step()
        adv = seen["advantages"]
        if adv.abs().sum() > 0:
            break
    assert adv.abs().sum() > 0, "ten batches without a learning signal"
    with torch.no_grad():
        after = model.completion_logprobs(seen["ids"], seen["amask"], seen["tokens"], num_samples=seen["g"])
    delta = ((after - seen["before"]) * seen["mask"]).sum(1)  # Δ log π(o_i), (N,)
    assert float((adv * delta).sum()) > 0


class Interrupt(Exception):
    pass


def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(world, tmp_path):
    """Kill a run during step 4 (rows 1-3 on disk, last checkpoint at step 2), resume it: the rows
    after the checkpoint are recomputed and every metric equals the uninterrupted run's."""
    cfg = grpo_cfg(steps=5, checkpoint_every=2, eval_every=2)
    _, full = run(world, tmp_path / "full", cfg)

    def crash(trainer, row):
        if row["step"] == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(world, tmp_path / "cut", cfg, callbacks=[crash])
    on_disk = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in on_disk] == [1, 2, 3]
    _, resumed = run(world, tmp_path / "cut", cfg, resume=True)
    assert strip(resumed) == strip(full)
    on_disk = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert strip(on_disk) == strip(full)


def test_resume_without_a_checkpoint_is_an_error(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(world, tmp_path, grpo_cfg(), resume=True)


def test_corrupt_checkpoint_is_a_clear_error(world, tmp_path):
    trainer, _ = run(world, tmp_path, grpo_cfg(steps=2))
    ckpt = trainer.latest_checkpoint()
    (ckpt / "state.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint: no state.json"):
        trainer.load_checkpoint(ckpt)


def test_collapse_guard_rolls_back_a_forced_collapse(world, tmp_path):
    """At step 3 the policy is broken (every completion becomes `</s>`): the KL to the reference jumps
    (and the format rate falls), the guard records an episode of `patience` steps, rolls back to the
    step-2 checkpoint and halves the learning rate; the run then finishes normally."""
    fired = []

    def break_the_policy(trainer, row):
        if row["step"] == 3 and not fired:
            fired.append(True)
            with torch.no_grad():
                trainer.model.head.bias[trainer.tokenizer.eos_token_id] += 1e4

    cfg = grpo_cfg(steps=6, guard_patience=2, guard_warmup=1, guard_lr_factor=0.5)
    trainer, rows = run(world, tmp_path, cfg, callbacks=[break_the_policy])
    episodes = [json.loads(line) for line in (tmp_path / "collapses.jsonl").read_text().splitlines()]
    assert len(episodes) == 1
    ep = episodes[0]
    assert ep["start_step"] == 4 and ep["length"] == 2 and ep["rolled_back_to"] == 2
    assert any("KL spike" in r for r in ep["reasons"]) and ep["lr_scale"] == 0.5
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["guard/rollbacks"] == 1
    assert trainer.optimizer.param_groups[-1]["lr"] == pytest.approx(cfg.lr * 0.5)
    assert rows[-1]["rate/format"] > 0


def test_non_finite_weights_roll_back_at_once(world, tmp_path):
    fired = []

    def poison(trainer, row):
        if row["step"] == 2 and not fired:
            fired.append(True)
            with torch.no_grad():
                trainer.model.projection.linear.weight[0, 0] = float("nan")

    trainer, rows = run(world, tmp_path, grpo_cfg(steps=4, checkpoint_every=1), callbacks=[poison])
    episodes = [json.loads(line) for line in (tmp_path / "collapses.jsonl").read_text().splitlines()]
    assert len(episodes) == 1 and episodes[0]["length"] == 1 and "non-finite loss" in episodes[0]["reasons"]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_bad_configs_are_rejected(world, tmp_path):
    for bad, match in [
        (dict(loss_type="ppo"), "unknown loss_type"),
        (dict(scale_rewards="max"), "unknown scale_rewards"),
        (dict(num_generations=1), "num_generations"),
        (dict(temperature=0.0), "temperature"),
    ]:
        with pytest.raises(ValueError, match=match):
            run(world, tmp_path, grpo_cfg(**bad))


def test_retraction_rates_count_good_and_bad_withdrawals(world, tmp_path):
    """A retraction is good when the withdrawn step is not a parent edge and its replacement is."""
    trainer, _ = run(world, tmp_path, grpo_cfg(steps=1))
    h = trainer.h
    child, parent = next(iter(h.graph.edges()))
    wrong = next(n for n in h.graph.nodes if n != parent and not h.graph.has_edge(child, n))
    good = f"<think> {child} -> {wrong} wait {parent} </think> <answer> yes </answer>"
    bad = f"<think> {child} -> {parent} wait {wrong} </think> <answer> yes </answer>"
    plain = f"<think> {child} -> {parent} </think> <answer> yes </answer>"
    rates = trainer._retraction_rates([good, bad, plain, "no tags at all"])
    assert rates == {"reflection/retractions": 2 / 4, "reflection/good": 1 / 4}


def test_prompts_follow_the_curriculum_as_it_widens(world, tmp_path):
    """The trainer keeps the filtered prompt pool between steps; a widened (or restored) range must
    still change what is drawn."""
    h, splits, tok, warm, _ = world
    trainer = GRPOTrainer(
        copy.deepcopy(warm), tok, splits["train"], h, grpo_cfg(prompts_per_step=64, curriculum_start_hops=1),
        tmp_path, progress=False,
    )  # fmt: skip
    assert max(ex.hops for ex in trainer._prompts()) == 1
    trainer.curriculum.update(1.0)  # the monitored accuracy reached τ: h_max 1 → 2
    assert max(ex.hops for ex in trainer._prompts()) == 2
    trainer.curriculum.load_state_dict({**trainer.curriculum.state_dict(), "max_hops": 1})  # as a resume does
    assert max(ex.hops for ex in trainer._prompts()) == 1
