"""The run directory never mixes, loses or silently restarts a run, and bad configs fail first.

One test per finding of the reliability issue, each through `hyperr1 train` on the tiny tree:
one writer per directory, no inheriting an old run's files, `--resume` resumes or says why not,
damaged checkpoints are skipped, torn logs are repaired, config values are checked before any
work, and the collapse guard records an episode still open at the end.
"""

import json
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from tiny_world import build_tiny_world, write_tiny_config

from hyperr1 import checkpoint
from hyperr1.cli import main
from hyperr1.runs import RunLock, RunLockedError, read_jsonl
from hyperr1.trainer import GRPOConfig, GRPOTrainer


@pytest.fixture()
def tiny(tmp_path):
    return write_tiny_config(tmp_path)


def train(cfg, *extra) -> int:
    return main(["train", "--config", str(cfg), "--quiet", *extra])


def steps(run) -> list[int]:
    return [r["step"] for r in read_jsonl(run / "grpo" / "metrics.jsonl")]


# ---------------------------------------------------------------- 1. one writer per run directory


def test_a_second_writer_fails_at_once_naming_the_holder(tiny, capsys):
    cfg, run = tiny
    script = (
        "import sys, time; from hyperr1.runs import RunLock; "
        "lock = RunLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        assert train(cfg) == 2
        assert time.perf_counter() - started < 30  # failed at once, before the warm start
        err = capsys.readouterr().err
        assert f"in use by another process (pid {holder.pid}" in err
        assert not (run / "config.json").exists()  # the holder's directory was not touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died holding the lock: the next run takes the stale lock over
    with pytest.warns(UserWarning, match="taking over the stale lock"):
        with RunLock(run):
            pass


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    with RunLock(tmp_path / "r"):
        with pytest.raises(RunLockedError, match="in use by another process"):
            RunLock(tmp_path / "r").__enter__()


# ---------------------------------------------------------------- 2. a new run never inherits files


def test_a_new_run_refuses_a_used_directory_unless_overwrite(tiny, capsys):
    cfg, run = tiny
    assert train(cfg, "--set", "grpo.steps=2") == 0
    (run / "marker").write_text("an older run's file")
    capsys.readouterr()
    assert train(cfg, "--set", "grpo.steps=2") == 2
    assert "already holds a run" in capsys.readouterr().err and (run / "marker").exists()
    # the killed-then-restarted case: a leftover warm start must not be reused by a new run
    assert train(cfg, "--set", "grpo.steps=2", "--overwrite") == 0
    assert not (run / "marker").exists()
    assert steps(run) == [1, 2]


# ---------------------------------------------------------------- 3. --resume resumes or says why not


def test_resume_without_a_run_names_what_it_looked_for(tiny, capsys):
    cfg, run = tiny
    assert train(cfg, "--resume", "--name", "tiyn") == 2
    err = capsys.readouterr().err
    assert "no run record" in err and "tiyn/config.json" in err


@pytest.mark.parametrize("damage", ["deleted", "incomplete"])
def test_resume_without_a_usable_checkpoint_is_an_error(tiny, capsys, damage):
    cfg, run = tiny
    assert train(cfg) == 0
    root = run / "grpo" / "checkpoints"
    for ckpt in checkpoint.candidates(root):
        if damage == "deleted":
            import shutil

            shutil.rmtree(ckpt)
        else:
            (ckpt / "state.json").unlink()
    before = (run / "grpo" / "metrics.jsonl").read_text()
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train(cfg, "--resume", "--set", "grpo.steps=6") == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "state.json" in err
    assert (run / "grpo" / "metrics.jsonl").read_text() == before  # nothing rewritten


# ---------------------------------------------------------------- 4. crash-consistent checkpoints


def test_temporary_directories_are_never_checkpoints(tmp_path):
    (tmp_path / "step_000003.tmp").mkdir()
    (tmp_path / "step_000003.tmp" / "state.json").write_text("")  # a kill right after creating it
    (tmp_path / "step_000002.trash").mkdir()
    assert checkpoint.candidates(tmp_path) == [] and checkpoint.latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("damage", ["truncated model", "garbage optimizer", "bad state"])
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tiny, damage):
    cfg, run = tiny
    assert train(cfg) == 0  # checkpoints at steps 2 and 4
    newest = run / "grpo" / "checkpoints" / "step_000004"
    if damage == "truncated model":
        f = newest / "model" / "model.safetensors"
        f.write_bytes(f.read_bytes()[:1000])
    elif damage == "garbage optimizer":
        f = newest / "optimizer.pt"
        f.write_bytes(bytes(len(f.read_bytes())))  # same size, all zeros
    else:
        (newest / "state.json").write_text('{"step": 4, "fil')
    assert checkpoint.problem(newest) is not None
    with pytest.warns(UserWarning, match="skipping damaged checkpoint .*step_000004"):
        assert train(cfg, "--resume", "--set", "grpo.steps=6") == 0
    assert steps(run) == [1, 2, 3, 4, 5, 6]  # resumed from step 2, recomputed 3 and 4


def test_loading_a_damaged_checkpoint_names_it(tiny):
    cfg, run = tiny
    assert train(cfg) == 0
    ckpt = run / "grpo" / "checkpoints" / "step_000004"
    (ckpt / "rng_rank0.pt").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="step_000004 is not a complete checkpoint: rng_rank0.pt"):
        checkpoint.load_checkpoint(ckpt, model=None, optimizer=None)


# ---------------------------------------------------------------- 5. append-only logs recover


def test_a_torn_last_metrics_line_is_cut_on_resume(tiny):
    cfg, run = tiny
    assert train(cfg) == 0
    with open(run / "grpo" / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss/to')  # a kill mid-write
    with pytest.warns(UserWarning, match="metrics.jsonl: cutting a torn last line 5"):
        assert train(cfg, "--resume", "--set", "grpo.steps=5") == 0
    assert steps(run) == [1, 2, 3, 4, 5]


def test_a_bad_line_inside_a_log_names_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: invalid JSON"):
        read_jsonl(path, repair_tail=True)


# ---------------------------------------------------------------- 7. config values checked before any work


@pytest.mark.parametrize(
    "override, message",
    [
        ("grpo.lr=nan", "grpo.lr must be a finite number"),
        ("grpo.beta=nan", "grpo.beta must be a finite number"),
        ("sft.lr=inf", "sft.lr must be a finite number"),
        ("grpo.lr=0", "learning rates must be > 0"),
        ("grpo.lr=-1e-3", "learning rates must be > 0"),
        ("grpo.steps=0", "steps must be >= 1"),
        ("grpo.max_completion_length=500", "exceeds model.max_position_embeddings=128"),
        ("name='../../x'", "must be a relative run name"),
        ("name='/tmp/x'", "must be a relative run name"),
        ("model.head_kernel='cuda'", "unknown head_kernel"),
    ],
)
def test_bad_values_fail_before_any_work(tiny, capsys, override, message):
    cfg, run = tiny
    assert train(cfg, "--set", override) == 2
    assert message in capsys.readouterr().err
    assert not run.parent.exists()  # nothing was written


def test_config_path_that_is_a_directory(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_toml_with_a_byte_order_mark_is_read(tiny):
    cfg, run = tiny
    cfg.write_bytes(b"\xef\xbb\xbf" + cfg.read_bytes())
    assert train(cfg, "--set", "grpo.steps=1") == 0


def test_head_kernel_is_set_from_the_toml(tiny):
    cfg, run = tiny
    assert train(cfg, "--set", "grpo.steps=1", "--set", "model.head_kernel='eager'") == 0
    assert json.loads((run / "policy" / "config.json").read_text())["head_kernel"] == "eager"


# ---------------------------------------------------------------- 10. every collapse episode is recorded


def test_an_episode_still_open_at_the_end_is_recorded(tmp_path):
    h, splits, tok, warm, _ = build_tiny_world(sft_epochs=4)
    cfg = GRPOConfig(
        steps=4,
        prompts_per_step=4,
        num_generations=4,
        max_completion_length=24,
        eval_every=0,
        checkpoint_every=2,
        guard_warmup=1,
        guard_patience=3,
    )

    def spike(trainer, row):
        if row["step"] == 4:
            row["grpo/kl"] = 1e3  # the last step looks incoherent; the run ends inside the episode

    trainer = GRPOTrainer(warm, tok, splits["train"], h, cfg, tmp_path, callbacks=[spike], progress=False)
    trainer.train()
    episodes = read_jsonl(tmp_path / "collapses.jsonl")
    assert len(episodes) == 1 and trainer.episodes == 1
    assert episodes[0]["open"] and episodes[0]["start_step"] == 4 and episodes[0]["reasons"] == ["KL spike"]
    assert torch.isfinite(warm.head.bias).all()
