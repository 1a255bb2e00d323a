"""Named crash points for the package's crash-consistency tests (a database's "failpoints").

The run loop, the checkpoint writer and the warm start call :func:`crash_point` at the moments a
kill would hurt most (between the files of a checkpoint, before its rename, during pruning,
between steps). Normally it does nothing. With ``HYPERR1_CRASH_AT=<name>@<n>`` in the environment
the process sends itself SIGKILL the n-th time (1-based) it reaches the point ``<name>`` — no
cleanup, no ``finally``, exactly like ``kill -9`` by PID — so ``tests/test_crash.py`` can kill a
run at each point, resume it, and compare the result with an uninterrupted run bit for bit.

:data:`POINTS` lists every point; a test asserts each is reached by a tiny run.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = (
    "sft/epoch",  # after a warm-start epoch (its metrics row written)
    "sft/saved",  # the warm-start model written, done.json not yet
    "run/warm_eval",  # the warm-start evaluation written
    "loop/step",  # a training step's metrics row appended, before its checkpoint
    "ckpt/model",  # checkpoint: model written into step_N.tmp
    "ckpt/optimizer",  # checkpoint: optimizer state written
    "ckpt/rng",  # checkpoint: RNG states written, manifest not yet
    "ckpt/manifest",  # checkpoint: state.json written, not yet renamed into place
    "ckpt/renamed",  # checkpoint: renamed into place, older ones not yet pruned
    "ckpt/pruning",  # checkpoint: an old checkpoint renamed away, not yet deleted
    "run/grpo_done",  # GRPO finished, final evaluation not yet written
    "run/policy",  # the final policy written, results.json not yet
)

_SPEC = os.environ.get("HYPERR1_CRASH_AT", "")
_hits: Counter = Counter()


def crash_point(name: str) -> None:
    """SIGKILL this process here if ``HYPERR1_CRASH_AT`` names this point and hit count."""
    if not _SPEC:
        return
    _hits[name] += 1
    target, _, count = _SPEC.partition("@")
    if name == target and _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def reached() -> dict[str, int]:
    """How often each point was reached in this process (counted only when the variable is set)."""
    return dict(_hits)
