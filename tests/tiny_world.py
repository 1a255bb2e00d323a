"""The tiny GRPO world shared by tests/test_trainer.py and tests/ddp_worker.py (not a test module)."""

import torch

from hyperr1.hierarchy import Hierarchy
from hyperr1.model import build_policy
from hyperr1.sft import SFTConfig, train_sft
from hyperr1.splits import TasksConfig, build_splits
from hyperr1.tokenizer import build_tokenizer

SMALL_MODEL = dict(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, head_dim=4)

# a `hyperr1 train` config that finishes in about a second on a 40-node tree (data and out prepended)
TINY_TOML = """
name = "tiny"
seed = 0
[model]
d_model = 32
ffn_dim = 64
head_dim = 4
[tasks]
n_train_is_a = 100
n_train_ancestor_k = 50
n_train_lca = 50
n_test = 20
[sft]
epochs = 3
batch_size = 32
lr = 1e-2
[grpo]
steps = 4
prompts_per_step = 4
num_generations = 4
max_completion_length = 24
eval_every = 2
eval_examples = 8
checkpoint_every = 2
[eval]
k = 2
n_resamples = 50
"""


def write_tiny_config(tmp_path, extra: str = ""):
    """A TSV of the 40-node tree and a tiny TOML config writing to ``tmp_path/runs``; returns
    ``(config path, run directory)``."""
    tsv = tmp_path / "tree.tsv"
    Hierarchy.balanced_tree(3, 3).to_tsv(tsv)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(f'data = "{tsv}"\nout = "{tmp_path / "runs"}"\n' + extra + TINY_TOML)
    return cfg, tmp_path / "runs" / "tiny"


def build_tiny_world(sft_epochs: int):
    """A 40-node tree, its splits and tokenizer, and a tiny policy warm-started for ``sft_epochs``.

    Returns ``(hierarchy, splits, tokenizer, model, warm-start history)``.
    """
    h = Hierarchy.balanced_tree(3, 3)
    splits, _ = build_splits(h, TasksConfig(n_train_is_a=100, n_train_ancestor_k=50, n_train_lca=50, n_test=20))
    tok = build_tokenizer(h)
    torch.manual_seed(0)
    model = build_policy(len(tok), **SMALL_MODEL)
    cfg = SFTConfig(epochs=sft_epochs, batch_size=32, lr=1e-2)
    history = train_sft(model, tok, splits["warm_start"], cfg, progress=False)
    return h, splits, tok, model, history
