"""Distillation of the Poincaré-head teacher into a small Euclidean-head student.

**Losses** (pure functions of log-distributions; one named tensor per term). With teacher and
student next-token distributions at temperature τ, p^τ = softmax(z / τ), at every completion
token (masked and aggregated like the GRPO loss, :func:`hyperr1.grpo.aggregate_tokens`):

- word-level KD (Hinton et al. 2015; DistilBERT uses τ = 2)::

      ℓ_t = τ² · KL(p_T^τ ‖ p_S^τ) = τ² Σ_v p_T^τ(v) (log p_T^τ(v) − log p_S^τ(v))

  The τ² keeps the gradient's scale independent of τ: ∂ℓ_t/∂z_S = τ (p_S^τ − p_T^τ).
- reverse KL, KL(p_S ‖ p_T), and the generalized Jensen–Shannon divergence of GKD
  (Agarwal et al. 2024) with M = β p_T + (1 − β) p_S::

      JSD(β) = β KL(p_T ‖ M) + (1 − β) KL(p_S ‖ M),   JSD(0) := KL(p_T ‖ p_S),  JSD(1) := KL(p_S ‖ p_T)

- sequence-level KD (Kim & Rush 2016): ``−log p_S(y)`` on the teacher's own (greedy) completions.

**Hard targets** (Hinton et al. 2015, §2: "a weighted average of two different objective
functions"; DistilBERT's L = α_ce L_ce + α_mlm L_mlm): with α_CE > 0 each step adds the token NLL of
gold completions, drawn from a pool the pipeline names (:attr:`DistillConfig.gold_pool`)::

    L = α_KD · τ² · D(p_T^τ, p_S^τ) + α_CE · (−1/|y| Σ_t log p_S(y_t | x, y_<t)),   y gold

**On-policy distillation** (GKD): with probability λ a step's completions are sampled from the
student itself (the fast sampler) and scored with the teacher's full distribution; otherwise they
are the teacher's greedy completions.

**Initialisation from the teacher** ("extracting the learned weights from the trained teacher model
and using these weights to initialise the student"): the student's Euclidean output rows are the
teacher's prototypes through the log map at the origin, u_v = P log₀(p_v), with P the best rank-k_S
projection through the origin (the top right singular vectors of [log₀ p_v]_v) when the student's
head is smaller, the identity otherwise; the output bias is the teacher's; the token embeddings are
the teacher's projected the same way to the student's width. Everything else is random.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hyperr1 import geometry
from hyperr1.decoding import encode_prompts, sample
from hyperr1.grpo import LOSS_TYPES, aggregate_tokens
from hyperr1.loop import LoopConfig, RunLoop
from hyperr1.model import HyperR1ForConditionalGeneration
from hyperr1.optim import riemannian_optimizer
from hyperr1.sft import sft_loss
from hyperr1.tasks import TaskExample
from hyperr1.trainer import eval_subset, greedy_metrics

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "seq_kd")
GOLD_POOLS = ("warm_start", "seen")
"""Gold completions of the hard-target term: the student's warm-start data (every training query, as
setups 1–2 see) or only the distillation prompts' own."""
INITS = ("logmap", "random", "checkpoint")
"""Student initialisations: from the teacher's prototypes, random, or a saved policy of the student's shape."""


# ---------------------------------------------------------------- losses (pure)


def forward_kl(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """KL(p_T ‖ p_S) per position (N, T) from log-distributions (N, T, V)."""
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


def reverse_kl(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """KL(p_S ‖ p_T) per position (N, T) from log-distributions (N, T, V)."""
    return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)


def generalized_jsd(teacher_logp: torch.Tensor, student_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """β KL(p_T ‖ M) + (1 − β) KL(p_S ‖ M), M = β p_T + (1 − β) p_S, per position (N, T); β = 0 and
    β = 1 are defined as the forward and the reverse KL (Agarwal et al. 2024)."""
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0:
        return forward_kl(teacher_logp, student_logp)
    if beta == 1:
        return reverse_kl(teacher_logp, student_logp)
    log_m = torch.logsumexp(  # log M in log space: no underflow of small probabilities
        torch.stack([teacher_logp + math.log(beta), student_logp + math.log(1 - beta)]), dim=0
    )  # (N, T, V)
    return beta * forward_kl(teacher_logp, log_m) + (1 - beta) * forward_kl(student_logp, log_m)


@dataclass
class DistillLossOutput:
    """One named tensor per term; ``loss`` is the one to backpropagate."""

    loss: torch.Tensor  # scalar: τ² · aggregated divergence (or the aggregated NLL for seq_kd)
    divergence: torch.Tensor  # scalar: the aggregated divergence without the τ² factor
    per_token: torch.Tensor  # (N, T) divergence per completion token; 0 on padding


def distillation_loss(
    teacher_logp: torch.Tensor,
    student_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    tau: float = 1.0,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
) -> DistillLossOutput:
    """τ² · D(p_T^τ, p_S^τ) over the completion tokens, D one of forward_kl | reverse_kl | jsd(β).

    ``teacher_logp`` and ``student_logp`` are log softmax(z / τ) (N, T, V); ``mask`` (N, T) marks
    completion tokens. The teacher is a constant (detached).
    """
    if divergence not in ("forward_kl", "reverse_kl", "jsd"):
        raise ValueError(f"unknown divergence {divergence!r}; known: forward_kl, reverse_kl, jsd")
    if teacher_logp.shape != student_logp.shape or teacher_logp.shape[:2] != mask.shape:
        raise ValueError(
            f"shapes differ: teacher {tuple(teacher_logp.shape)}, student {tuple(student_logp.shape)}, "
            f"mask {tuple(mask.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    teacher_logp = teacher_logp.detach()
    beta = {"forward_kl": 0.0, "reverse_kl": 1.0}.get(divergence, beta)
    active = mask.bool()
    per_token = generalized_jsd(teacher_logp, student_logp, beta).masked_fill(~active, 0.0)  # (N, T)
    agg = aggregate_tokens(per_token, active.to(per_token.dtype), loss_type, max_completion_length, None)
    return DistillLossOutput(loss=tau**2 * agg, divergence=agg, per_token=per_token)


def sequence_kd_loss(
    student_token_logp: torch.Tensor, mask: torch.Tensor, *, loss_type: str = "grpo", max_completion_length=None
) -> DistillLossOutput:
    """Sequence-level KD (Kim & Rush 2016): the NLL −log p_S(y_t | x, y_<t) (N, T) of the teacher's
    completions y, aggregated like the GRPO loss."""
    active = mask.bool()
    nll = (-student_token_logp).masked_fill(~active, 0.0)  # (N, T)
    agg = aggregate_tokens(nll, active.to(nll.dtype), loss_type, max_completion_length, None)
    return DistillLossOutput(loss=agg, divergence=agg, per_token=nll)


# ---------------------------------------------------------------- the config


@dataclass
class DistillConfig(LoopConfig):
    """Distillation hyperparameters (symbols of Hinton et al. 2015 and GKD, Agarwal et al. 2024)."""

    guard: bool = False  # the collapse guard watches RL rewards; distillation has none
    divergence: str = "forward_kl"  # D: "forward_kl" (word-level KD) | "reverse_kl" | "jsd" | "seq_kd"
    tau: float = 2.0  # τ: temperature of both distributions (DistilBERT: 2); seq_kd ignores it
    beta: float = 0.5  # β of the generalized JSD (0: forward KL, 1: reverse KL)
    lam: float = 0.0  # λ: share of steps on on-policy student samples (GKD); the rest use teacher outputs
    prompts_per_step: int = 32  # B: prompts per step
    max_completion_length: int = 64  # longest completion in tokens, </s> included
    temperature: float = 1.0  # sampling temperature of the student's on-policy completions
    alpha_kd: float = 1.0  # α_KD: weight of the teacher's term (soft targets)
    alpha_ce: float = 0.0  # α_CE: weight of the NLL of gold completions (hard targets; 0: off)
    gold_pool: str = "warm_start"  # α_CE > 0: the gold completions, one of GOLD_POOLS
    gold_per_step: int = 32  # gold completions per step when α_CE > 0
    lr: float = 3e-3  # η of the student (Adam)
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    loss_type: str = "grpo"  # token aggregation, as in hyperr1.grpo: "grpo" | "dr_grpo" | "dapo"
    eval_examples: int = 200  # held-out examples per split at periodic evaluations (0: all)
    eval_min_hops: int = 3  # evaluate on held-out queries with at least this many hops

    def validate(self) -> None:
        self.validate_loop()
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {self.divergence!r}; known: {list(DIVERGENCES)}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; known: {list(LOSS_TYPES)}")
        if not self.tau > 0 or not 0 <= self.beta <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"need tau > 0, beta and lam in [0, 1]; got {self.tau}, {self.beta}, {self.lam}")
        if self.prompts_per_step < 1 or self.max_completion_length < 1 or not self.temperature > 0:
            raise ValueError("need prompts_per_step >= 1, max_completion_length >= 1 and temperature > 0")
        if self.alpha_kd < 0 or self.alpha_ce < 0 or self.alpha_kd + self.alpha_ce == 0:
            raise ValueError(f"need alpha_kd, alpha_ce >= 0, not both 0; got {self.alpha_kd}, {self.alpha_ce}")
        if self.gold_pool not in GOLD_POOLS or self.gold_per_step < 1:
            raise ValueError(f"need gold_pool in {list(GOLD_POOLS)} and gold_per_step >= 1")
        if not self.lr > 0 or self.grad_clip < 0:
            raise ValueError(f"need lr > 0 and grad_clip >= 0, got {self.lr}, {self.grad_clip}")


# ---------------------------------------------------------------- initialisation from the teacher


def _projection(rows: torch.Tensor, k: int) -> torch.Tensor:
    """(k_in, k) matrix of the best rank-k linear map through the origin of ``rows`` (V, k_in): the
    top right singular vectors; the identity when k equals k_in. k > k_in pads with zero columns."""
    k_in = rows.shape[1]
    if k == k_in:
        return torch.eye(k_in, dtype=rows.dtype)
    _, _, vh = torch.linalg.svd(rows.double(), full_matrices=False)  # vh: (min(V, k_in), k_in)
    basis = vh[:k].T.to(rows.dtype)  # (k_in, ≤ k)
    return torch.nn.functional.pad(basis, (0, k - basis.shape[1]))


@torch.no_grad()
def init_student_from_teacher(student: HyperR1ForConditionalGeneration, teacher: HyperR1ForConditionalGeneration):
    """Set the student's output rows to P log₀(p_v), its output bias to the teacher's and its token
    embeddings to the teacher's projected to its width (module docstring); in place."""
    if teacher.config.head != "poincare" or student.config.head != "euclidean":
        raise ValueError("log-map initialisation maps a Poincaré-head teacher to a Euclidean-head student")
    if teacher.config.vocab_size != student.config.vocab_size:
        sizes = (teacher.config.vocab_size, student.config.vocab_size)
        raise ValueError(f"vocabularies differ (teacher, student): {sizes}")
    head = teacher.head
    tangent = geometry.logmap0(head.prototypes.detach().double(), c=head.ball.c.detach().double())  # (V, k_T)
    rows = tangent @ _projection(tangent, student.config.head_dim).double()  # (V, k_S)
    student.head.weight.copy_(rows.to(student.head.weight.dtype))
    student.head.bias.copy_(head.bias.detach())
    emb = teacher.get_input_embeddings().weight.detach()  # (V, D_T)
    student.get_input_embeddings().weight.copy_(emb @ _projection(emb, student.config.d_model))


# ---------------------------------------------------------------- the trainer


class DistillTrainer(RunLoop):
    """Distil ``teacher`` into ``student`` on ``prompts``; ``train()`` runs ``cfg.steps`` steps into ``out``.

    Each step: B prompts; completions from the student (probability λ) or the teacher's greedy
    decoding; the teacher's full next-token distributions on them; one update of α_KD times the
    loss of ``cfg.divergence`` plus, when α_CE > 0, α_CE times the NLL of ``gold_per_step`` of the
    ``gold`` completions (hard targets, module docstring).
    """

    name = "distill"

    def __init__(
        self,
        student: HyperR1ForConditionalGeneration,
        teacher: HyperR1ForConditionalGeneration,
        tokenizer,
        prompts: Sequence[TaskExample],
        hierarchy,
        cfg: DistillConfig,
        out: str | Path,
        *,
        eval_splits: dict[str, Sequence[TaskExample]] | None = None,
        gold: Sequence[TaskExample] = (),
        config: dict | None = None,
        callbacks=(),
        progress: bool = True,
    ):
        cfg.validate()
        if not prompts:
            raise ValueError("no distillation prompts")
        if cfg.alpha_ce > 0 and not gold:
            raise ValueError("alpha_ce > 0 needs gold completions (the hard-target term); none were given")
        if teacher.config.vocab_size != student.config.vocab_size:
            raise ValueError("teacher and student must share the tokenizer (vocabularies differ)")
        optimizer = riemannian_optimizer(student, name="adam", lr=cfg.lr)
        config = config or asdict(cfg)
        super().__init__(student, optimizer, out, cfg, config=config, callbacks=callbacks, progress=progress)
        self.teacher = teacher.eval().requires_grad_(False)
        self.tokenizer, self.h, self.cfg, self.prompts = tokenizer, hierarchy, cfg, list(prompts)
        self.gold = list(gold)
        self.eval_splits = {
            name: [ex for ex in exs if ex.hops >= cfg.eval_min_hops] for name, exs in (eval_splits or {}).items()
        }
        self._greedy: dict[str, torch.Tensor] = {}  # prompt → the teacher's greedy completion (T_i,)

    def step(self) -> dict:
        """One distillation update (the class docstring); returns its metrics row."""
        cfg, t0 = self.cfg, time.perf_counter()
        batch = [self.prompts[self.rng.randrange(len(self.prompts))] for _ in range(cfg.prompts_per_step)]
        on_policy = self.rng.random() < cfg.lam
        ids, amask = encode_prompts(self.tokenizer, [ex.prompt for ex in batch], self.model.device)  # (B, S)
        self.model.eval()
        if on_policy:  # o ~ π_S: the student's own samples
            out = sample(
                self.model, ids, amask, max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                generator=self.generator,
            )
            tokens, mask = out.tokens, out.mask  # (B, T)
        else:  # the teacher's greedy completions (deterministic: decoded once per prompt, then cached)
            tokens, mask = self._teacher_completions(batch, ids, amask)  # (B, T)
        length = cfg.max_completion_length
        self.model.train()
        if cfg.divergence == "seq_kd":
            logp = self.model.completion_logprobs(ids, amask, tokens)  # (B, T)
            terms = sequence_kd_loss(logp, mask, loss_type=cfg.loss_type, max_completion_length=length)
            agreement = torch.tensor(float("nan"))
        else:
            with torch.no_grad():
                t_logp = self.teacher.completion_log_distribution(ids, amask, tokens, temperature=cfg.tau)
            s_logp = self.model.completion_log_distribution(ids, amask, tokens, temperature=cfg.tau)  # (B, T, V)
            terms = distillation_loss(
                t_logp, s_logp, mask, divergence=cfg.divergence, beta=cfg.beta, tau=cfg.tau,
                loss_type=cfg.loss_type, max_completion_length=length,
            )
            same = (t_logp.argmax(-1) == s_logp.detach().argmax(-1)) & mask
            agreement = same.sum() / mask.sum().clamp(min=1)
        loss = cfg.alpha_kd * terms.loss
        hard = torch.tensor(float("nan"))
        if cfg.alpha_ce > 0:  # hard targets: the NLL of gold completions
            gold = [self.gold[self.rng.randrange(len(self.gold))] for _ in range(cfg.gold_per_step)]
            hard = sft_loss(self.model, self.tokenizer, gold)[0]
            loss = loss + cfg.alpha_ce * hard
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip) if cfg.grad_clip else 0.0
        self.optimizer.step()
        return {
            "loss/total": loss.item(),
            "distill/divergence": terms.divergence.item(),
            "distill/hard_nll": hard.item(),
            "distill/on_policy": float(on_policy),
            "distill/top1_agreement": float(agreement),
            "completion/length": mask.float().sum(1).mean().item(),
            "optim/lr": self.optimizer.param_groups[0]["lr"],
            "optim/grad_norm": float(grad_norm),
            "time/step_s": time.perf_counter() - t0,
        }

    def _teacher_completions(self, batch, ids, amask) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's greedy completions of ``batch`` (B, T) and their mask. Each prompt is decoded
        once, alone (so its completion is a function of the prompt only, whatever batch it first
        came in: a resumed run gets the same tokens), and cached."""
        max_new = self.cfg.max_completion_length
        for i, ex in enumerate(batch):
            if ex.prompt not in self._greedy:
                n = int(amask[i].sum())  # the prompt without its right padding
                prompt, prompt_mask = ids[i : i + 1, :n], amask[i : i + 1, :n]
                out = sample(self.teacher, prompt, prompt_mask, max_new_tokens=max_new, greedy=True)
                self._greedy[ex.prompt] = out.tokens[0][out.mask[0]]
        rows = [self._greedy[ex.prompt] for ex in batch]
        pad = self.model.config.pad_token_id
        tokens = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long, device=ids.device)
        mask = torch.zeros(tokens.shape, dtype=torch.bool, device=ids.device)
        for i, r in enumerate(rows):
            tokens[i, : len(r)], mask[i, : len(r)] = r, True
        return tokens, mask

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss/total']:.3f}"}

    def evaluate(self) -> dict:
        """Greedy held-out accuracy and format of the student."""
        if not self.eval_splits or self.rank != 0:
            return {}
        splits = {name: eval_subset(exs, self.cfg.eval_examples) for name, exs in self.eval_splits.items()}
        length = self.cfg.max_completion_length
        metrics = ("accuracy", "format")
        return greedy_metrics(
            self.model, self.tokenizer, splits, self.h, max_new_tokens=length, metrics=metrics, per_hops=False
        )[0]


__all__ = [
    "DIVERGENCES",
    "DistillConfig",
    "DistillLossOutput",
    "DistillTrainer",
    "GOLD_POOLS",
    "distillation_loss",
    "forward_kl",
    "generalized_jsd",
    "init_student_from_teacher",
    "reverse_kl",
    "sequence_kd_loss",
]
