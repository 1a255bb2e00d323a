"""Warm start: teacher-forced cross-entropy on the partial warm-start curriculum.

R1-style pipelines start reinforcement learning from a policy that already writes the format
some of the time ("cold start" data). Here that is the ``warm_start`` split of
:mod:`hyperr1.splits`: short chains only (≤ ``warm_max_hops``) and a share of targets without the
think block, so the warm-started policy is deliberately imperfect on both accuracy and format.

The loss is the token-level negative log-likelihood of the target completion (plus ``</s>``)::

    L(θ) = − Σ_i Σ_t log π_θ(y_it | x_i, y_i<t) / Σ_i |y_i|

optimised with Riemannian Adam (geoopt), the ball's prototypes at their own learning rate.

Both learning rates follow one multiplier over the ``S = epochs · ⌈N / batch⌉`` optimizer steps:
``warmup_steps = W`` ramps it linearly, ``η_s = η · s / W`` for ``s ≤ W`` (Goyal et al. 2017), and
``schedule = "cosine"`` then decays it toward zero, ``η_s = η · ½ (1 + cos(π (s − W − 1) / (S − W)))``
(Loshchilov & Hutter 2017, SGDR without restarts). The defaults (``W = 0``, ``"constant"``) keep η
fixed.

The example order alone moves a small student's warm start by tens of points of held-out accuracy
(``experiments/warm_start_order.py``), and the final gold NLL ranks the orders as the held-out
accuracy does. ``restarts = R`` uses that: R warm starts from the same initial weights in R orders,
keeping the one whose weights give the training set the lowest NLL — model selection on training
data alone, as random restarts are chosen by training objective (no held-out query is looked at).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperr1.allocator import keep_freed_memory
from hyperr1.decoding import encode_prompts
from hyperr1.faults import crash_point
from hyperr1.model import HyperR1ForConditionalGeneration, save_policy
from hyperr1.optim import riemannian_optimizer
from hyperr1.runs import append_jsonl, write_json, write_record
from hyperr1.tasks import TaskExample

SCHEDULES = ("constant", "cosine")
ORDER_STRIDE = 1000  # restart r of a warm start shuffles with seed + ORDER_STRIDE · r


@dataclass
class SFTConfig:
    """Warm start (supervised fine-tuning) hyperparameters."""

    epochs: int = 30  # passes over the warm-start set
    batch_size: int = 64  # examples per optimizer step
    lr: float = 3e-3  # η of the Euclidean parameters (Adam)
    manifold_lr: float | None = 3e-2  # η of the ball's prototypes (Riemannian Adam); None: lr
    weight_decay: float = 0.0  # decoupled weight decay of the Euclidean parameters
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    eval_every: int = 10  # epochs between evaluations (0: only at the end)
    checkpoint_every: int = 10  # epochs between saves to <out>/checkpoint (the final model goes to <out>/model)
    seed: int = 0  # seed of the example order
    warmup_steps: int = 0  # W: optimizer steps of linear learning-rate warmup from 0
    schedule: str = "constant"  # after warmup: "constant" η, or "cosine" decay from η toward 0 at the last step
    restarts: int = 1  # R: warm starts from the same initial weights in R orders; keep the lowest gold NLL

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"need weight_decay >= 0 and grad_clip >= 0, got {self.weight_decay}, {self.grad_clip}")
        if self.lr <= 0 or (self.manifold_lr is not None and self.manifold_lr <= 0):
            raise ValueError(f"learning rates must be > 0, got lr={self.lr}, manifold_lr={self.manifold_lr}")
        if self.restarts < 1:
            raise ValueError(f"need restarts >= 1, got {self.restarts}")
        if self.warmup_steps < 0 or self.schedule not in SCHEDULES:
            raise ValueError(
                f"need warmup_steps >= 0 and schedule in {SCHEDULES}, got {self.warmup_steps}, {self.schedule!r}"
            )

    def lr_factor(self, step: int, total: int) -> float:
        """The multiplier of both learning rates at optimizer step ``step`` (1-based) of ``total``."""
        if step <= self.warmup_steps:
            return step / self.warmup_steps
        if self.schedule == "constant" or total <= self.warmup_steps:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup_steps - 1) / (total - self.warmup_steps)))


def encode_completions(tokenizer, completions: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Target ids (B, T) of ``completion </s>``, padded with ``<pad>``, and the mask of real tokens."""
    eos = tokenizer.eos_token
    enc = tokenizer([f"{c} {eos}" for c in completions], padding=True, return_tensors="pt")
    return enc.input_ids.to(device), enc.attention_mask.bool().to(device)


def sft_loss(
    model: HyperR1ForConditionalGeneration, tokenizer, examples: Sequence[TaskExample]
) -> tuple[torch.Tensor, int]:
    """(mean token NLL of the targets, number of target tokens) on one batch."""
    device = model.device
    ids, amask = encode_prompts(tokenizer, [ex.prompt for ex in examples], device)
    targets, tmask = encode_completions(tokenizer, [ex.completion for ex in examples], device)
    logp = model.completion_logprobs(ids, amask, targets)  # (B, T)
    n_tokens = int(tmask.sum())
    return -(logp * tmask).sum() / max(n_tokens, 1), n_tokens


def gold_nll(
    model: HyperR1ForConditionalGeneration, tokenizer, examples: Sequence[TaskExample], batch_size: int
) -> float:
    """Mean token NLL of ``examples``' gold completions under ``model`` (eval mode, no gradient):
    the warm-start loss of the weights as they are, independent of any example order."""
    was_training, total, tokens = model.training, 0.0, 0
    model.eval()
    with torch.no_grad():
        for s in range(0, len(examples), batch_size):
            loss, n = sft_loss(model, tokenizer, examples[s : s + batch_size])
            total, tokens = total + loss.item() * n, tokens + n
    model.train(was_training)
    return total / max(tokens, 1)


def train_sft(
    model: HyperR1ForConditionalGeneration,
    tokenizer,
    examples: Sequence[TaskExample],
    cfg: SFTConfig,
    *,
    out: str | Path | None = None,
    evaluate_fn: Callable[[HyperR1ForConditionalGeneration], dict] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Warm-start ``model`` in place; returns one metrics row per epoch (also ``out/metrics.jsonl``).

    ``evaluate_fn(model) -> dict`` runs every ``eval_every`` epochs and after the last; its
    values join that epoch's row. With ``out`` the model is saved to ``out/checkpoint`` every
    ``checkpoint_every`` epochs, and when training ends to ``out/model`` with ``out/done.json``.

    With ``restarts = R > 1`` the warm start is trained R times from ``model``'s initial weights,
    restart r shuffling with seed ``seed + ORDER_STRIDE · r`` (each with a fresh optimizer), and the
    model keeps the restart of the lowest :func:`gold_nll` on ``examples``; the rows carry
    ``restart``, and ``out/done.json`` lists every restart's order seed and NLL and the chosen one.
    ``evaluate_fn``'s values are logged for every restart and play no part in the choice.
    """
    cfg.validate()
    if not examples and cfg.epochs > 0:
        raise ValueError("no warm-start examples to train on")
    keep_freed_memory()  # each batch's buffers reuse the last batch's pages (hyperr1.allocator)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_record(out, asdict(cfg), kind="warm_start")
        (out / "metrics.jsonl").write_text("")
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    bar = tqdm(total=cfg.restarts * cfg.epochs * steps_per_epoch, desc="warm start", disable=not progress, leave=False)
    start = copy.deepcopy(model.state_dict()) if cfg.restarts > 1 else None
    history, tried, best = [], [], None
    for restart in range(cfg.restarts):
        if restart:
            model.load_state_dict(start)
        order_seed = cfg.seed + ORDER_STRIDE * restart
        tag = {"restart": restart} if cfg.restarts > 1 else {}
        rows = _train_once(model, tokenizer, examples, cfg, order_seed, tag, out, evaluate_fn, bar)
        if cfg.restarts > 1:
            nll = gold_nll(model, tokenizer, examples, cfg.batch_size)
            tried.append({"restart": restart, "order_seed": order_seed, "gold_nll": nll})
            if best is None or nll < best[0] or not math.isfinite(best[0]):  # a NaN NLL is never kept
                best = (nll, restart, copy.deepcopy(model.state_dict()))
        history += rows
    bar.close()
    done = {"epochs": cfg.epochs}
    if best is not None:
        model.load_state_dict(best[2])
        done |= {"restarts": tried, "chosen": best[1]}
    if out is not None:  # the final model, then the marker that says the warm start is complete
        save_policy(model, out / "model")
        crash_point("sft/saved")
        write_json(out / "done.json", done)
    return history


def _train_once(
    model, tokenizer, examples, cfg: SFTConfig, order_seed: int, tag: dict, out, evaluate_fn, bar
) -> list[dict]:
    """One warm start: ``cfg.epochs`` passes shuffled by ``order_seed``; ``tag`` joins every row."""
    opt = riemannian_optimizer(
        model, name="adam", lr=cfg.lr, manifold_lr=cfg.manifold_lr, weight_decay=cfg.weight_decay
    )
    rng = random.Random(order_seed)
    order = list(range(len(examples)))
    history = []
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total_steps, step = cfg.epochs * steps_per_epoch, 0
    scheduled = cfg.warmup_steps > 0 or cfg.schedule != "constant"
    base_lrs = [group["lr"] for group in opt.param_groups]
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        rng.shuffle(order)
        total, tokens = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            batch = [examples[i] for i in order[s : s + cfg.batch_size]]
            loss, n = sft_loss(model, tokenizer, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite warm-start loss at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            step += 1
            if scheduled:
                for group, base in zip(opt.param_groups, base_lrs, strict=True):
                    group["lr"] = base * cfg.lr_factor(step, total_steps)
            opt.step()
            total, tokens = total + loss.item() * n, tokens + n
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
        row = {**tag, "epoch": epoch, "sft/loss": total / tokens, "time/elapsed_s": time.perf_counter() - t0}
        if evaluate_fn is not None and (epoch == cfg.epochs or (cfg.eval_every and epoch % cfg.eval_every == 0)):
            row.update(evaluate_fn(model))
        history.append(row)
        if out is not None:
            append_jsonl(out / "metrics.jsonl", row)
            crash_point("sft/epoch")
            if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs:
                save_policy(model, out / "checkpoint")
    return history
