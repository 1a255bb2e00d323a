"""Crash consistency: kill a tiny `hyperr1 train` with SIGKILL at every named crash point, resume
it, and require the run to end exactly as an uninterrupted run of the same seed does.

Each run is a child of a fork server that imported the package once (so a child costs its work,
not a 5 s import). A child sets the crash point of :mod:`hyperr1.faults` and sends itself SIGKILL
when it reaches it — no cleanup, as `kill -9 <pid>`. "Exactly" means: every metrics row (minus
wall times), every sample, collapse record, evaluation and results file, and every file of every
surviving checkpoint and of the final policy, byte for byte.
"""

import hashlib
import json
import multiprocessing
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tiny_world import TINY_TOML

from hyperr1 import faults
from hyperr1.hierarchy import Hierarchy

# the tiny world of tiny_world.TINY_TOML, with an evaluation every warm-start epoch and a checkpoint
# every step, so that every crash point is reached; out is relative so all runs share one config
OVERRIDES = ["--out", "runs", "--set", "sft.epochs=2", "--set", "sft.eval_every=1", "--set", "grpo.checkpoint_every=1"]

# (point, n): the n-th time the point is reached in a fresh run. Spread over the whole run: the
# warm start, its evaluation, every phase of the step-0..4 checkpoint writes, between steps, the
# pruning of old checkpoints (keep 2: steps 2, 3, 4 prune), the final evaluation and policy.
KILLS = [
    ("sft/epoch", 1),
    ("sft/epoch", 2),
    ("sft/saved", 1),
    ("run/warm_eval", 1),
    ("ckpt/model", 1),
    ("ckpt/optimizer", 1),
    ("ckpt/manifest", 1),
    ("loop/step", 1),
    ("ckpt/model", 2),
    ("ckpt/optimizer", 2),
    ("ckpt/rng", 2),
    ("ckpt/manifest", 2),
    ("ckpt/renamed", 2),
    ("loop/step", 2),
    ("ckpt/renamed", 3),
    ("ckpt/pruning", 1),
    ("loop/step", 3),
    ("ckpt/pruning", 2),
    ("loop/step", 4),
    ("ckpt/manifest", 5),
    ("ckpt/renamed", 5),
    ("ckpt/pruning", 3),
    ("run/grpo_done", 1),
    ("run/policy", 1),
]


def _child(workdir: str, config: str, spec: str, resume: bool) -> None:
    """Runs in a forked child: one `hyperr1 train`, killed at ``spec`` if set."""
    os.chdir(workdir)
    faults._SPEC = spec
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from hyperr1.cli import main

    args = ["train", "--config", config, "--quiet", *OVERRIDES] + (["--resume"] if resume else [])
    os._exit(main(args))


@pytest.fixture(scope="module")
def server():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hyperr1.pipeline", "hyperr1.cli", "transformers"])
    return ctx


def _run(ctx, workdir: Path, config: Path, spec: str = "", resume: bool = False) -> int:
    p = ctx.Process(target=_child, args=(str(workdir), str(config), spec, resume))
    p.start()
    p.join(300)
    return p.exitcode


def _fingerprint(run: Path) -> dict[str, object]:
    """Every file of the run that an interrupted run must reproduce, by content."""
    out = {}
    for f in sorted(run.rglob("*")):
        rel = str(f.relative_to(run))
        if not f.is_file() or rel in ("config.json", "warm_start/config.json", ".lock", "grpo/.lock"):
            continue  # run records carry times and the resume history
        if rel.startswith("grpo/tensorboard"):
            continue  # event files carry wall times
        if f.suffix == ".jsonl":
            rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            out[rel] = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
        else:
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.slow
def test_every_kill_point_resumes_to_the_uninterrupted_run(server, tmp_path):
    tsv = tmp_path / "tree.tsv"
    Hierarchy.balanced_tree(3, 3).to_tsv(tsv)
    config = tmp_path / "tiny.toml"
    config.write_text(f'data = "{tsv}"\n' + TINY_TOML)
    assert {p for p, _ in KILLS} == set(faults.POINTS)  # every crash point is exercised

    ref = tmp_path / "reference"
    ref.mkdir()
    assert _run(server, ref, config) == 0
    expected = _fingerprint(ref / "runs" / "tiny")
    assert any(k.startswith("grpo/checkpoints/step_000004/") for k in expected)

    def kill_and_resume(i: int) -> tuple[str, int, int, bool]:
        point, n = KILLS[i]
        work = tmp_path / f"kill{i:02d}"
        work.mkdir()
        killed = _run(server, work, config, spec=f"{point}@{n}")
        resumed = _run(server, work, config, resume=True)
        return f"{point}@{n}", killed, resumed, _fingerprint(work / "runs" / "tiny") == expected

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(kill_and_resume, range(len(KILLS))))
    not_killed = [spec for spec, killed, _, _ in outcomes if killed != -signal.SIGKILL]
    failed_resume = [spec for spec, _, resumed, _ in outcomes if resumed != 0]
    differ = [spec for spec, _, resumed, same in outcomes if resumed == 0 and not same]
    assert not not_killed, f"crash points never reached: {not_killed}"
    assert not failed_resume, f"resume failed after a kill at: {failed_resume}"
    assert not differ, f"resumed run differs from the uninterrupted one after a kill at: {differ}"
    survived = sum(1 for _, killed, resumed, same in outcomes if killed == -signal.SIGKILL and resumed == 0 and same)
    assert survived == len(KILLS) >= 20
