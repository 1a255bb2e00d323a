"""Worker for tests/test_distributed.py: GRPO under ``torchrun --nproc_per_node=2`` on a tiny tree.

Each rank writes ``rank<r>.json``: its prompts and rewards of every step and a digest of its
parameters after training, so the test can check sharding, cross-rank statistics and DDP sync.
"""

import json
import sys
from pathlib import Path

import torch
from tiny_world import build_tiny_world

from hyperr1.distributed import init_distributed, world
from hyperr1.trainer import GRPOConfig, GRPOTrainer


def main(out: Path) -> None:
    assert init_distributed(), "run me under torchrun"
    rank, size = world()
    torch.set_num_threads(1)
    h, splits, tok, model, _ = build_tiny_world(sft_epochs=4)
    cfg = GRPOConfig(
        steps=3,
        prompts_per_step=4,
        num_generations=4,
        max_completion_length=24,
        lr=3e-3,
        eval_every=0,
        checkpoint_every=3,
        scale_rewards="batch",
        loss_type="dapo",
    )
    trainer = GRPOTrainer(model, tok, splits["train"], h, cfg, out / "run", progress=False)
    record = {"prompts": [], "rewards": []}
    real_prompts, real_score = trainer._prompts, trainer.score

    def prompts():
        batch = real_prompts()
        record["prompts"].append([ex.prompt for ex in batch])
        return batch

    def score(texts, answers):
        total, per_fn = real_score(texts, answers)
        record["rewards"].append(total)
        return total, per_fn

    trainer._prompts, trainer.score = prompts, score
    rows = trainer.train()
    digest = [float(p.detach().double().sum()) for p in model.parameters()]
    (out / f"rank{rank}.json").write_text(json.dumps({**record, "digest": digest, "rows": rows, "world": size}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
