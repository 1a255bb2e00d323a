"""GRPO under torchrun with 2 CPU processes (gloo): sharded prompts, cross-rank statistics, DDP sync."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_two_process_grpo(tmp_path):
    with socket.socket() as s:  # a free port for the rendezvous (port 0 is not accepted by torchrun)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        str(WORKER),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    # DDP kept the replicas identical
    assert ranks[0]["digest"] == pytest.approx(ranks[1]["digest"], rel=0, abs=0)
    rows = ranks[0]["rows"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for step, row in enumerate(rows):
        # prompts sharded: 4 prompts per step, 2 on each rank
        assert [len(r["prompts"][step]) for r in ranks] == [2, 2]
        # logged statistics are over all 16 completions of both ranks
        rewards = torch.tensor(ranks[0]["rewards"][step] + ranks[1]["rewards"][step])
        assert row["reward/total"] == pytest.approx(float(rewards.mean()), abs=1e-6)
        groups = rewards.view(4, 4)
        zero_std = (groups.max(1).values == groups.min(1).values).float().mean()
        assert row["grpo/zero_std_frac"] == pytest.approx(float(zero_std))
    untimed = [[{k: v for k, v in row.items() if not k.startswith("time/")} for row in r["rows"]] for r in ranks]
    assert untimed[0] == untimed[1]  # every rank logs (and judges collapse on) the same numbers
    assert (tmp_path / "run" / "metrics.jsonl").exists()
