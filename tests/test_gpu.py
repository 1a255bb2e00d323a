"""The embedding trainer and the chunked evaluation on a CUDA device (skipped without one)."""

import pytest
import torch

from hyperr1.embeddings import ClosureIndex, EmbedConfig, reconstruction, train_embedding
from hyperr1.hierarchy import Hierarchy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_on_cuda_matches_the_cpu_run(optimizer):
    # the negatives come from the same CPU generator on both devices, so the runs differ only by
    # float64 rounding in the kernels
    h = Hierarchy.balanced_tree(2, 4)  # 31 nodes, 98 closure pairs
    lr = 0.01 if optimizer == "adam" else 1.0
    cfg = EmbedConfig(dim=3, epochs=30, eval_every=10, burnin_epochs=3, optimizer=optimizer, lr=lr, batch_size=16)
    cpu = train_embedding(cfg, hierarchy=h, progress=False)
    gpu = train_embedding(cfg, hierarchy=h, progress=False, device="cuda")
    assert gpu["embedding"].device.type == "cpu"  # results come back to the host
    torch.testing.assert_close(gpu["embedding"], cpu["embedding"], rtol=1e-6, atol=1e-9)
    assert gpu["metrics"]["map"] == pytest.approx(cpu["metrics"]["map"], abs=1e-6)
    assert gpu["metrics"]["map"] > 0.5


def test_chunked_reconstruction_on_cuda_equals_the_cpu_result():
    h = Hierarchy.random_tree(500, seed=0)
    index = ClosureIndex.from_hierarchy(h)
    emb = (torch.rand(len(h), 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5) * 0.8
    cpu = reconstruction(emb, index, manifold="poincare", c=1.0, chunk=64)
    gpu = reconstruction(emb.cuda(), index, manifold="poincare", c=1.0, chunk=64)
    assert gpu["num_pairs"] == cpu["num_pairs"] and gpu["num_nodes_evaluated"] == cpu["num_nodes_evaluated"]
    assert gpu["map"] == pytest.approx(cpu["map"], rel=1e-9) and gpu["mean_rank"] == pytest.approx(
        cpu["mean_rank"], rel=1e-9
    )
