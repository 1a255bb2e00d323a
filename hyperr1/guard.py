"""The collapse guard: pure decisions from metric rows (no I/O); the run loop acts on them.

A step is *incoherent* when its loss is not finite, or — after ``warmup`` healthy steps — its
format rate or mean reward falls below ``(1 − drop)`` times its running average (and at least
``min_gap`` below it), or its KL exceeds ``kl_spike`` times its running average (and ``kl_min``).
Running averages are exponential with decay ``ema`` and only fold in healthy steps.

Consecutive incoherent steps form an *episode*. :meth:`CollapseGuard.update` returns what the
loop should do with each row:

- ``"healthy"``: fold it in; if an episode just ended by itself, :attr:`Decision.episode` holds it
  (to be recorded);
- ``"incoherent"``: the step stands, the episode grows (within ``patience``);
- ``"rollback"``: the episode reached ``patience`` steps (a non-finite loss at once): roll back to
  the last checkpoint of healthy parameters and scale the learning rates by ``lr_factor``;
- ``"give_up"``: the rollback budget ``max_rollbacks`` is spent: stop the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

NON_FINITE = "non-finite loss"
REASON_KINDS = (NON_FINITE, "format rate", "reward", "KL spike")


@dataclass(frozen=True)
class Decision:
    """What the loop should do with one metrics row (see the module docstring)."""

    action: str  # "healthy" | "incoherent" | "rollback" | "give_up"
    reasons: tuple[str, ...] = ()  # why this step is incoherent
    episode: tuple[tuple[int, tuple[str, ...]], ...] = ()  # (step, reasons) of an episode to record


@dataclass
class CollapseGuard:
    """Running averages of format rate, reward and KL, the incoherence test, and the episode streak."""

    warmup: int = 10
    patience: int = 3
    format_drop: float = 0.5
    reward_drop: float = 0.5
    kl_spike: float = 10.0
    kl_min: float = 0.5
    min_gap: float = 0.2
    ema: float = 0.9
    max_rollbacks: int = 5
    healthy_steps: int = 0  # steps folded into the averages
    avg: dict = field(default_factory=dict)  # running averages of format, reward, kl
    streak: list = field(default_factory=list)  # the current episode: (step, reasons) per incoherent step

    def judge(self, row: dict) -> list[str]:
        """Reasons why this step is incoherent (empty if healthy)."""
        if not math.isfinite(row["loss/total"]):
            return [NON_FINITE]
        if self.healthy_steps < self.warmup:
            return []
        reasons = []
        fmt, rew, kl = row["rate/format"], row["reward/total"], row["grpo/kl"]
        if fmt < (1 - self.format_drop) * self.avg["format"] and self.avg["format"] - fmt >= self.min_gap:
            reasons.append(f"format rate {fmt:.3f} << running {self.avg['format']:.3f}")
        if rew < (1 - self.reward_drop) * self.avg["reward"] and self.avg["reward"] - rew >= self.min_gap:
            reasons.append(f"reward {rew:.3f} << running {self.avg['reward']:.3f}")
        if kl > max(self.kl_min, self.kl_spike * self.avg["kl"]):
            reasons.append(f"KL spike {kl:.4f} >> running {self.avg['kl']:.4f}")
        return reasons

    def observe(self, row: dict) -> None:
        """Fold a healthy step into the running averages."""
        now = {"format": row["rate/format"], "reward": row["reward/total"], "kl": row["grpo/kl"]}
        for k, v in now.items():
            self.avg[k] = v if k not in self.avg else self.ema * self.avg[k] + (1 - self.ema) * v
        self.healthy_steps += 1

    def update(self, row: dict, *, rollbacks_so_far: int) -> Decision:
        """Judge one row and say what to do with it (see the module docstring)."""
        reasons = tuple(self.judge(row))
        if not reasons:
            ended, self.streak = tuple(self.streak), []
            self.observe(row)
            return Decision("healthy", episode=ended)
        self.streak.append((row["step"], reasons))
        if len(self.streak) < self.patience and NON_FINITE not in reasons:
            return Decision("incoherent", reasons)
        action = "give_up" if rollbacks_so_far + 1 > self.max_rollbacks else "rollback"
        return Decision(action, reasons, tuple(self.streak))

    def open_episode(self) -> tuple:
        """The episode still open (incoherent steps not yet resolved), e.g. when the run ends."""
        return tuple(self.streak)

    def state_dict(self) -> dict:
        return {"healthy_steps": self.healthy_steps, "avg": dict(self.avg), "streak": [list(s) for s in self.streak]}

    def load_state_dict(self, state: dict) -> None:
        self.healthy_steps, self.avg = state["healthy_steps"], dict(state["avg"])
        self.streak = [(s[0], tuple(s[1])) for s in state["streak"]]


def reason_kind(reason: str) -> str:
    """The kind of an incoherence reason: one of :data:`REASON_KINDS`."""
    return next((kind for kind in REASON_KINDS if reason.startswith(kind)), reason)


def episode_record(episode, *, number: int, rolled_back_to: int | None, lr_scale: float, open_: bool = False) -> dict:
    """The ``collapses.jsonl`` row of one episode."""
    return {
        "episode": number,
        "start_step": episode[0][0],
        "end_step": episode[-1][0],
        "length": len(episode),
        "reasons": sorted({reason_kind(r) for _, rs in episode for r in rs}),
        "detail": [r for _, rs in episode for r in rs],
        "rolled_back_to": rolled_back_to,
        "lr_scale": lr_scale,
        "open": open_,
    }


__all__ = ["CollapseGuard", "Decision", "episode_record", "reason_kind"]
