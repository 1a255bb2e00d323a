"""The tiny GRPO world shared by tests/test_trainer.py and tests/ddp_worker.py (not a test module)."""

import torch

from hyperr1.hierarchy import Hierarchy
from hyperr1.model import build_policy
from hyperr1.sft import SFTConfig, train_sft
from hyperr1.splits import TasksConfig, build_splits
from hyperr1.tokenizer import build_tokenizer

SMALL_MODEL = dict(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, head_dim=4)


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
