"""The warm start (hyperr1.sft): warmup and cosine decay of both η; restarts chosen by gold NLL."""

import copy
import json
import math

import pytest
import torch
from tiny_world import SMALL_MODEL, build_tiny_world

import hyperr1.sft as sft_module
from hyperr1.model import build_policy
from hyperr1.sft import ORDER_STRIDE, SFTConfig, gold_nll, train_sft


def test_lr_factor_known_values():
    cfg = SFTConfig(warmup_steps=4, schedule="cosine")
    total = 12
    assert [cfg.lr_factor(s, total) for s in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]
    assert cfg.lr_factor(5, total) == 1.0  # the first step after warmup runs at full η
    assert cfg.lr_factor(9, total) == pytest.approx(0.5)  # halfway through the decay
    decay = [cfg.lr_factor(s, total) for s in range(5, total + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))  # small, and not zero
    assert all(SFTConfig().lr_factor(s, total) == 1.0 for s in range(1, total + 1))
    assert SFTConfig(warmup_steps=3).lr_factor(10, total) == 1.0  # warmup, then constant


@pytest.mark.parametrize(
    "bad", [dict(warmup_steps=-1), dict(schedule="linear"), dict(schedule="Cosine"), dict(restarts=0)]
)
def test_bad_schedules_are_refused(bad):
    with pytest.raises(ValueError, match="warmup_steps|schedule|restarts"):
        SFTConfig(**bad).validate()


def _recorded_lrs(monkeypatch, cfg, model, tok, examples):
    """Each optimizer step's learning rates (one per parameter group) during ``train_sft``."""
    seen = []
    build = sft_module.riemannian_optimizer

    def spying(*args, **kwargs):
        opt = build(*args, **kwargs)
        step = opt.step

        def recording_step(*a, **k):
            seen.append([group["lr"] for group in opt.param_groups])
            return step(*a, **k)

        opt.step = recording_step
        return opt

    monkeypatch.setattr(sft_module, "riemannian_optimizer", spying)
    train_sft(model, tok, examples, cfg, progress=False)
    return seen


def test_every_step_runs_at_the_scheduled_rates(monkeypatch):
    h, splits, tok, _, _ = build_tiny_world(sft_epochs=0)
    torch.manual_seed(0)
    model = build_policy(len(tok), **SMALL_MODEL)  # a Poincaré head: a manifold group and a Euclidean one
    examples = list(splits["warm_start"])[:40]
    cfg = SFTConfig(epochs=3, batch_size=16, lr=1e-2, manifold_lr=3e-2, warmup_steps=2, schedule="cosine")
    seen = _recorded_lrs(monkeypatch, cfg, model, tok, examples)
    total = 3 * math.ceil(40 / 16)
    assert len(seen) == total
    for s, lrs in enumerate(seen, start=1):
        assert lrs == pytest.approx([3e-2 * cfg.lr_factor(s, total), 1e-2 * cfg.lr_factor(s, total)])
    plain = _recorded_lrs(
        monkeypatch, SFTConfig(epochs=1, batch_size=16, lr=1e-2, manifold_lr=3e-2), model, tok, examples
    )
    assert plain == [[3e-2, 1e-2]] * 3  # the default leaves η alone


def test_a_warmup_step_is_a_step_at_the_reduced_rate():
    """One step at warmup factor 1/4 moves the weights as one constant step at η/4, on both groups."""
    h, splits, tok, _, _ = build_tiny_world(sft_epochs=0)
    torch.manual_seed(0)
    start = build_policy(len(tok), **SMALL_MODEL)
    batch = list(splits["warm_start"])[:16]
    scheduled, constant = copy.deepcopy(start), copy.deepcopy(start)
    train_sft(
        scheduled,
        tok,
        batch,
        SFTConfig(epochs=1, batch_size=16, lr=1e-2, manifold_lr=4e-2, warmup_steps=4),
        progress=False,
    )
    train_sft(constant, tok, batch, SFTConfig(epochs=1, batch_size=16, lr=2.5e-3, manifold_lr=1e-2), progress=False)
    full = copy.deepcopy(start)
    train_sft(full, tok, batch, SFTConfig(epochs=1, batch_size=16, lr=1e-2, manifold_lr=4e-2), progress=False)
    far = 0.0
    for (name, a), b, c in zip(scheduled.named_parameters(), constant.parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
        far = max(far, float((a - c).detach().abs().max()))
    assert far > 1e-4  # and not as the full-rate step


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_restarts_keep_the_order_of_lowest_gold_nll(tmp_path):
    """R restarts from one set of initial weights: restart r is the single warm start shuffled by
    seed + ORDER_STRIDE·r, every restart's NLL is recorded, and the model keeps the lowest."""
    h, splits, tok, _, _ = build_tiny_world(sft_epochs=0)
    torch.manual_seed(0)
    start = build_policy(len(tok), **SMALL_MODEL)
    examples = list(splits["warm_start"])[:48]
    base = dict(epochs=2, batch_size=16, lr=1e-2, manifold_lr=3e-2, seed=3)
    chosen = copy.deepcopy(start)
    history = train_sft(chosen, tok, examples, SFTConfig(**base, restarts=3), out=tmp_path / "ws", progress=False)
    done = json.loads((tmp_path / "ws" / "done.json").read_text())
    assert [r["order_seed"] for r in done["restarts"]] == [3, 3 + ORDER_STRIDE, 3 + 2 * ORDER_STRIDE]
    singles = []
    for r in done["restarts"]:
        single = copy.deepcopy(start)
        train_sft(single, tok, examples, SFTConfig(**{**base, "seed": r["order_seed"]}), progress=False)
        assert gold_nll(single, tok, examples, 16) == pytest.approx(r["gold_nll"], rel=1e-6)
        singles.append(single)
    nlls = [r["gold_nll"] for r in done["restarts"]]
    assert len(set(nlls)) == 3  # the orders differ
    assert done["chosen"] == nlls.index(min(nlls))
    assert _same_weights(chosen, singles[done["chosen"]])
    assert [(r["restart"], r["epoch"]) for r in history] == [(r, e) for r in range(3) for e in (1, 2)]
    rows = [json.loads(line) for line in (tmp_path / "ws" / "metrics.jsonl").read_text().splitlines()]
    assert rows == history


def test_one_restart_is_the_plain_warm_start(tmp_path):
    h, splits, tok, _, _ = build_tiny_world(sft_epochs=0)
    torch.manual_seed(0)
    start = build_policy(len(tok), **SMALL_MODEL)
    examples = list(splits["warm_start"])[:32]
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    train_sft(a, tok, examples, SFTConfig(epochs=1, batch_size=16, seed=5), out=tmp_path, progress=False)
    train_sft(b, tok, examples, SFTConfig(epochs=1, batch_size=16, seed=5, restarts=1), progress=False)
    assert _same_weights(a, b)
    assert json.loads((tmp_path / "done.json").read_text()) == {"epochs": 1}
    assert "restart" not in json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
