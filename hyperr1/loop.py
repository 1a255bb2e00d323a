"""The run loop every trainer reuses: resume, cadence, logs, checkpoints, the collapse guard.

A trainer subclasses :class:`RunLoop` and supplies the algorithm: :meth:`~RunLoop.step` (one
update, returning its metrics row), and optionally :meth:`~RunLoop.evaluate`,
:meth:`~RunLoop.after_step` and its own state and RNG streams for checkpoints. ``train()`` then
does the rest::

    lock <out>; fresh start (step-0 checkpoint) or resume from the newest intact checkpoint
    while step < steps:
        row = step()                     (NaN row if the weights are already non-finite)
        collapse guard → keep / roll back to the last healthy checkpoint with lr × factor / stop
        after_step(row); evaluate() every eval_every steps and at the end
        append the row to metrics.jsonl (and TensorBoard); checkpoint every checkpoint_every steps

**Files in** ``out``: ``metrics.jsonl`` (one row per kept step), ``samples.jsonl`` (completions
logged at evaluations), ``collapses.jsonl`` (one row per incoherence episode, including one still
open when the run ends), ``checkpoints/step_NNNNNN/`` (:mod:`hyperr1.checkpoint`), ``tensorboard/``
(when installed; the scalars of metrics.jsonl under the same names), ``.lock``.

**Resume** continues the same run: the checkpoint restores the parameters, optimizer, RNG
streams, guard and the trainer's state, the logs are cut back to the checkpoint's step (a torn
last line is repaired), and the steps after it are recomputed, so an interrupted run ends with
the rows of an uninterrupted one. Without a usable checkpoint ``--resume`` is an error, never a
silent restart; a fresh start in a directory that holds files is refused unless ``overwrite``.
"""

from __future__ import annotations

import math
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperr1 import checkpoint
from hyperr1.allocator import keep_freed_memory
from hyperr1.distributed import barrier, broadcast_object, world
from hyperr1.faults import crash_point
from hyperr1.guard import CollapseGuard, episode_record
from hyperr1.runs import (
    RunLock,
    append_jsonl,
    clear_directory,
    holds_other_files,
    read_jsonl,
    write_jsonl,
)

METRICS, SAMPLES, COLLAPSES = "metrics.jsonl", "samples.jsonl", "collapses.jsonl"


@dataclass
class LoopConfig:
    """Cadence, checkpoints and the collapse guard of a run loop (shared by every trainer)."""

    steps: int = 200  # optimizer steps (outer iterations)
    eval_every: int = 50  # steps between held-out evaluations (0: only at the end)
    checkpoint_every: int = 50  # steps between checkpoints (step 0 is always saved)
    keep_checkpoints: int = 2  # checkpoints kept on disk (the newest)
    guard: bool = True  # run the collapse guard
    guard_warmup: int = 10  # healthy steps before the guard starts judging
    guard_patience: int = 3  # consecutive incoherent steps that trigger a rollback
    guard_format_drop: float = 0.5  # incoherent if format rate < (1 − drop) · running average
    guard_reward_drop: float = 0.5  # incoherent if mean reward < (1 − drop) · running average
    guard_kl_spike: float = 10.0  # incoherent if KL > spike · running average and > guard_kl_min
    guard_kl_min: float = 0.5  # KL below this is never a spike
    guard_min_gap: float = 0.2  # format / reward drops smaller than this (absolute) are never incoherent
    guard_ema: float = 0.9  # decay of the running averages
    guard_lr_factor: float = 0.5  # learning rates are multiplied by this at each rollback
    guard_max_rollbacks: int = 5  # stop the run after this many rollbacks
    seed: int = 0  # seed of the trainer's random streams

    def validate_loop(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every and keep_checkpoints must be >= 1")
        if self.guard_patience < 1 or not 0 < self.guard_lr_factor <= 1:
            raise ValueError("need guard_patience >= 1 and guard_lr_factor in (0, 1]")
        if self.guard_warmup < 0 or self.guard_max_rollbacks < 0 or not 0 <= self.guard_ema < 1:
            raise ValueError("need guard_warmup >= 0, guard_max_rollbacks >= 0 and guard_ema in [0, 1)")

    def make_guard(self) -> CollapseGuard:
        return CollapseGuard(
            warmup=self.guard_warmup,
            patience=self.guard_patience,
            format_drop=self.guard_format_drop,
            reward_drop=self.guard_reward_drop,
            kl_spike=self.guard_kl_spike,
            kl_min=self.guard_kl_min,
            min_gap=self.guard_min_gap,
            ema=self.guard_ema,
            max_rollbacks=self.guard_max_rollbacks,
        )


class RunLoop:
    """The plumbing of a training run (see the module docstring); subclasses define the algorithm.

    ``config`` is the resolved config saved in every checkpoint (default: ``loop_cfg`` as a dict).
    ``callbacks`` are called as ``cb(trainer, row)`` after each step, before the guard sees it.
    """

    name = "train"  # the progress bar's label

    def __init__(self, model, optimizer, out, loop_cfg: LoopConfig, *, config=None, callbacks=(), progress=True):
        loop_cfg.validate_loop()
        keep_freed_memory()  # a step's large buffers reuse the last step's pages (hyperr1.allocator)
        self.model, self.optimizer, self.loop_cfg = model, optimizer, loop_cfg
        self.out = Path(out)
        self.run_config = config if config is not None else _asdict(loop_cfg)
        self.callbacks, self.progress = list(callbacks), progress
        self.rank, self.world_size = world()
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.lr_scale = 1.0
        self.guard = loop_cfg.make_guard()
        self.rollbacks = self.episodes = self.step_count = 0
        self.tb = None
        self.rng = random.Random(loop_cfg.seed)  # the trainer's Python stream (prompt choice): same on every rank
        self.generator = torch.Generator(model.device).manual_seed(loop_cfg.seed * 1_000_003 + self.rank)  # sampler

    # ------------------------------------------------------------ what a trainer supplies

    def step(self) -> dict:
        """One update; returns its metrics row (averaged over ranks). Must include ``loss/total``
        (and, for the guard, ``rate/format``, ``reward/total`` and ``grpo/kl``)."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Held-out metrics joined to the row of an evaluation step."""
        return {}

    def after_step(self, row: dict) -> None:
        """Called for every kept step (e.g. to advance a curriculum)."""

    def algorithm_state(self) -> dict:
        """The trainer's own JSON state for checkpoints."""
        return {}

    def load_algorithm_state(self, state: dict) -> None:
        pass

    def rng_state(self) -> dict[str, torch.Tensor]:
        """This rank's tensor RNG streams for checkpoints: torch's global one and the sampler's."""
        return {"torch": torch.get_rng_state(), "sampler": self.generator.get_state()}

    def load_rng_state(self, rng: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["sampler"])

    def postfix(self, row: dict) -> dict:
        """Values shown beside the progress bar."""
        return {}

    # ------------------------------------------------------------ checkpoints

    @property
    def checkpoint_root(self) -> Path:
        return self.out / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        return checkpoint.latest_checkpoint(self.checkpoint_root)

    def save_checkpoint(self) -> Path:
        state = {
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "episodes": self.episodes,
            "guard": self.guard.state_dict(),
            "python_rng": _jsonable(self.rng.getstate()),
            "algorithm": self.algorithm_state(),
        }
        return checkpoint.save_checkpoint(
            self.checkpoint_root,
            self.step_count,
            model=self.model,
            optimizer=self.optimizer,
            state=state,
            config=self.run_config,
            rng=self.rng_state(),
            keep=self.loop_cfg.keep_checkpoints,
        )

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote."""
        meta, rng = checkpoint.load_checkpoint(path, model=self.model, optimizer=self.optimizer)
        state = meta["state"]
        self.step_count = meta["step"]
        self.lr_scale, self.rollbacks, self.episodes = state["lr_scale"], state["rollbacks"], state["episodes"]
        self.guard.load_state_dict(state["guard"])
        self.rng.setstate(_tuples(state["python_rng"]))
        self.load_algorithm_state(state["algorithm"])
        self.load_rng_state(rng)
        self._apply_lr_scale()

    def _apply_lr_scale(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.lr_scale

    def _finite(self) -> bool:
        norms = torch._foreach_norm([p.detach() for p in self.model.parameters()])  # one fused call
        return bool(torch.stack(norms).isfinite().all())

    # ------------------------------------------------------------ logs

    def log_samples(self, rows: list[dict]) -> None:
        if self.rank == 0:
            for row in rows:
                append_jsonl(self.out / SAMPLES, {"step": self.step_count, **row})

    def _log(self, row: dict) -> None:
        if self.rank != 0:
            return
        append_jsonl(self.out / METRICS, row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, row["step"])

    def _record_episode(self, episode, *, rolled_back_to: int | None, open_: bool = False) -> None:
        if self.rank == 0:
            rec = episode_record(
                episode, number=self.episodes, rolled_back_to=rolled_back_to, lr_scale=self.lr_scale, open_=open_
            )
            append_jsonl(self.out / COLLAPSES, rec)

    def _cut_logs(self) -> list[dict]:
        """On resume: the logs back to the checkpoint's step (rank 0 rewrites them); returns the rows."""
        rows = None
        if self.rank == 0:
            rows = [r for r in read_jsonl(self.out / METRICS, repair_tail=True) if r["step"] <= self.step_count]
            write_jsonl(self.out / METRICS, rows)
            samples = read_jsonl(self.out / SAMPLES, repair_tail=True)
            write_jsonl(self.out / SAMPLES, [r for r in samples if r["step"] <= self.step_count])
            write_jsonl(self.out / COLLAPSES, read_jsonl(self.out / COLLAPSES, repair_tail=True)[: self.episodes])
        return broadcast_object(rows)

    # ------------------------------------------------------------ the loop

    def train(self, *, resume: bool = False, overwrite: bool = False) -> list[dict]:
        """Run to ``steps``; with ``resume`` continue from the newest intact checkpoint in ``out``.

        Returns the metrics rows of the run (those of ``metrics.jsonl``).
        """
        with RunLock(self.out) if self.rank == 0 else nullcontext():
            rows = self._start(resume=resume, overwrite=overwrite)
            self.tb = _tensorboard(self.out) if self.rank == 0 else None
            try:
                self._run(rows)
            finally:
                if self.tb is not None:
                    self.tb.close()
                    self.tb = None
        return rows

    def _start(self, *, resume: bool, overwrite: bool) -> list[dict]:
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            latest = self.latest_checkpoint()
            if latest is None:
                found = [p.name for p in checkpoint.candidates(self.checkpoint_root)]
                raise FileNotFoundError(
                    f"--resume: no checkpoint to resume from in {self.checkpoint_root} (looked for step_NNNNNN/ "
                    f"directories with a complete {checkpoint.MANIFEST}; found {found or 'none'})"
                )
            self.load_checkpoint(latest)
            if self.rank == 0:
                checkpoint.tidy(self.checkpoint_root, keep=self.loop_cfg.keep_checkpoints)
            return self._cut_logs()
        others = broadcast_object(holds_other_files(self.out) if self.rank == 0 else None)  # rank 0's view
        if others and not overwrite:
            raise FileExistsError(
                f"{self.out} already holds a run ({', '.join(others[:6])}); resume it (--resume) "
                "or discard it (--overwrite)"
            )
        if self.rank == 0:
            clear_directory(self.out)
            for name in (METRICS, SAMPLES, COLLAPSES):
                (self.out / name).write_text("")
        barrier()
        torch.manual_seed(self.loop_cfg.seed)  # the run's global RNG starts from its seed, whatever ran before
        self.save_checkpoint()
        return []

    def _run(self, rows: list[dict]) -> None:
        cfg = self.loop_cfg
        bar = tqdm(
            total=cfg.steps, initial=self.step_count, desc=self.name, disable=not self.progress or self.rank != 0
        )
        while self.step_count < cfg.steps:
            row = self.step() if self._finite() else {"loss/total": float("nan")}
            self.step_count += 1
            row = {"step": self.step_count, **row}
            for cb in self.callbacks:
                cb(self, row)
            if cfg.guard and self._guard(row, rows, bar):
                continue
            if not math.isfinite(row["loss/total"]):
                raise FloatingPointError(f"non-finite loss or weights at step {self.step_count} (the guard is off)")
            self.after_step(row)
            if self.step_count == cfg.steps or (cfg.eval_every and self.step_count % cfg.eval_every == 0):
                row.update(self.evaluate())
            row["guard/episodes"], row["guard/rollbacks"] = self.episodes, self.rollbacks
            rows.append(row)
            self._log(row)
            crash_point("loop/step")
            due = self.step_count % cfg.checkpoint_every == 0 or self.step_count == cfg.steps
            if due and not self.guard.streak and self._finite():  # checkpoints are good states only
                self.save_checkpoint()
            bar.update(1)
            bar.set_postfix(self.postfix(row))
        bar.close()
        if episode := self.guard.open_episode():  # still open at the end: record it, marked open
            self.episodes += 1
            self._record_episode(episode, rolled_back_to=None, open_=True)

    def _guard(self, row: dict, rows: list[dict], bar) -> bool:
        """Act on the guard's decision; True when the step was rolled back (the caller drops it)."""
        decision = self.guard.update(row, rollbacks_so_far=self.rollbacks)
        if decision.action == "healthy":
            if decision.episode:  # the episode ended by itself
                self.episodes += 1
                self._record_episode(decision.episode, rolled_back_to=None)
            return False
        if decision.action == "incoherent":
            return False
        self.episodes += 1
        if decision.action == "give_up":
            self._record_episode(decision.episode, rolled_back_to=None)
            raise RuntimeError(
                f"collapse guard: {self.rollbacks} rollbacks did not stop the collapse at step {row['step']} "
                f"({'; '.join(decision.reasons)}); see {self.out / COLLAPSES}"
            )
        episodes, rollbacks = self.episodes, self.rollbacks + 1
        lr_scale = self.lr_scale * self.loop_cfg.guard_lr_factor
        self.load_checkpoint(self._rollback_target(decision.episode[0][0]))  # also resets the guard
        self.episodes, self.rollbacks, self.lr_scale = episodes, rollbacks, lr_scale
        self._apply_lr_scale()
        self._record_episode(decision.episode, rolled_back_to=self.step_count)
        del rows[self.step_count :]  # rows[i] is step i + 1
        if self.rank == 0:
            write_jsonl(self.out / METRICS, rows)
            samples = read_jsonl(self.out / SAMPLES)
            write_jsonl(self.out / SAMPLES, [r for r in samples if r["step"] <= self.step_count])
        bar.n = self.step_count
        bar.refresh()
        return True

    def _rollback_target(self, first_bad_step: int) -> Path:
        """The newest checkpoint of parameters that produced a healthy step.

        The row of step s is computed from samples of θ_{s−1}, so an episode whose first incoherent
        step is s condemns θ_{s−1} and everything after it; the checkpoint of step s−1 (if any) is
        skipped. Falls back to the oldest intact checkpoint.
        """
        ckpts = checkpoint.intact_checkpoints(self.checkpoint_root)
        if not ckpts:
            raise RuntimeError(f"collapse guard: no intact checkpoint in {self.checkpoint_root} to roll back to")
        good = [c for c in ckpts if checkpoint.step_of(c) <= first_bad_step - 2]
        return good[-1] if good else ckpts[0]


def start_mode(trainer: RunLoop, resume: bool) -> dict:
    """The ``train()`` arguments for a stage of a pipeline run: from its newest intact checkpoint on
    --resume; afresh when it had not recorded a step yet (starting it is resuming it); and an error
    when it had, but no checkpoint survives."""
    if not resume:
        return {"resume": False}
    if trainer.latest_checkpoint() is not None:
        return {"resume": True}
    if rows := read_jsonl(trainer.out / METRICS, repair_tail=True):
        raise FileNotFoundError(
            f"--resume: {trainer.out / METRICS} records {len(rows)} steps but no usable checkpoint is left in "
            f"{trainer.checkpoint_root} (looked for step_NNNNNN/ with a complete {checkpoint.MANIFEST})"
        )
    return {"resume": False, "overwrite": True}


def _jsonable(obj):
    """A Python RNG state (nested tuples) as JSON lists."""
    return [_jsonable(x) for x in obj] if isinstance(obj, tuple | list) else obj


def _tuples(obj):
    return tuple(_tuples(x) for x in obj) if isinstance(obj, list) else obj


def _asdict(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def _tensorboard(out: Path):
    """A SummaryWriter when tensorboard is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


__all__ = ["COLLAPSES", "LoopConfig", "METRICS", "RunLoop", "SAMPLES", "start_mode"]
