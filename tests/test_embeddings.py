"""Poincaré embeddings: the reconstruction metric on known ranks, training, run files, CLI."""

import json

import pytest
import torch

from hyperr1.cli import main
from hyperr1.embeddings import (
    ClosureIndex,
    EmbedConfig,
    load_embedding,
    reconstruction,
    save_embedding,
    train_embedding,
)
from hyperr1.hierarchy import Hierarchy


def small_hierarchy():
    # a ← b ← c, a ← d: closure pairs (b,a), (c,b), (c,a), (d,a)
    return Hierarchy.from_edges([("b", "a"), ("c", "b"), ("d", "a")], name="small")


def test_reconstruction_on_a_hand_made_embedding_with_known_ranks():
    h = small_hierarchy()
    assert h.nodes == ["a", "b", "c", "d"]
    emb = torch.tensor([[0.0, 0], [1.0, 0], [2.2, 0], [5.0, 0]], dtype=torch.float64)  # a b c d on a line
    rec = reconstruction(emb, ClosureIndex.from_hierarchy(h), manifold="euclidean", c=1.0)
    # b: ancestor a at 1.0 before non-neighbour c at 1.2 → rank 1, AP 1
    # c: ancestors b (1.2), a (2.2) before non-neighbour d (2.8) → ranks 1, 1, AP 1
    # d: non-neighbours c (2.8), b (4.0) before ancestor a (5.0) → rank 3, AP 1/3
    assert rec["mean_rank"] == pytest.approx((1 + 1 + 1 + 3) / 4)
    assert rec["map"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert rec["num_nodes_evaluated"] == 3  # the root has no ancestor to rank


def test_reconstruction_excludes_the_node_itself_and_is_perfect_on_a_tree_embedding():
    # a star: children at distance 1 from the root and 2 from each other → every rank is 1
    h = Hierarchy.from_edges([(f"x{i}", "root") for i in range(4)])
    assert h.nodes == ["root", "x0", "x1", "x2", "x3"]
    emb = torch.tensor([[0.0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float64)
    rec = reconstruction(emb, ClosureIndex.from_hierarchy(h), manifold="euclidean", c=1.0)
    assert rec == {"mean_rank": 1.0, "map": 1.0, "num_pairs": 4, "num_nodes_evaluated": 4}


@pytest.mark.parametrize("manifold, min_map", [("poincare", 0.85), ("euclidean", 0.6)])
def test_training_embeds_a_small_tree(manifold, min_map):
    h = Hierarchy.balanced_tree(2, 3)  # 15 nodes, 34 closure pairs
    cfg = EmbedConfig(
        data="unused",
        manifold=manifold,
        dim=2,
        epochs=300,
        batch_size=64,
        negatives=10,
        lr=0.1,
        burnin_epochs=5,
        eval_every=0,
        optimizer="adam",
    )
    result = train_embedding(cfg, hierarchy=h, progress=False)
    assert result["metrics"]["map"] > min_map
    if manifold == "poincare":
        emb = result["embedding"]
        assert emb.norm(dim=-1).max() < 1
        # the root sits closer to the origin than every leaf
        depth = torch.tensor([h.depth(v) for v in h.nodes])
        norms = emb.norm(dim=-1)
        assert norms[depth == 0].max() < norms[depth == 3].min()


def test_training_is_reproducible_from_the_seed():
    h = Hierarchy.balanced_tree(2, 3)
    cfg = EmbedConfig(data="unused", dim=3, epochs=5, eval_every=0, seed=7)
    a = train_embedding(cfg, hierarchy=h, progress=False)["embedding"]
    b = train_embedding(cfg, hierarchy=h, progress=False)["embedding"]
    assert torch.equal(a, b)


def test_run_embed_writes_config_metrics_embedding_and_figure(tmp_path):
    tsv = tmp_path / "tree.tsv"
    Hierarchy.balanced_tree(2, 3).to_tsv(tsv)
    out = tmp_path / "run"
    code = main(
        ["embed", "--data", str(tsv), "--dim", "2", "--epochs", "4", "--eval-every", "2", "--out", str(out), "--quiet"]
    )
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["dim"] == 2 and cfg["config"]["data"] == str(tsv)
    assert cfg["kind"] == "embed" and "git_commit" in cfg["meta"] and "hyperr1_version" in cfg["meta"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"map", "mean_rank", "train_seconds", "seed"} <= set(metrics)
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
    emb, nodes, meta = load_embedding(out / "embedding.safetensors")
    assert emb.shape == (15, 2) and nodes[0] == "n0" and meta["manifold"] == "poincare"
    assert (out / "poincare_disk.png").stat().st_size > 10_000


def test_embedding_file_round_trip_is_exact_and_corrupt_files_are_rejected(tmp_path):
    emb = torch.randn(5, 3, dtype=torch.float64)
    path = tmp_path / "e.safetensors"
    save_embedding(path, emb, list("abcde"), EmbedConfig())
    back, nodes, _ = load_embedding(path)
    assert torch.equal(back, emb) and nodes == list("abcde")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="cannot read embedding file"):
        load_embedding(bad)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("manifold", "sphere", "unknown manifold"),
        ("dim", 0, "dim must be"),
        ("negatives", -1, "negatives"),
        ("lr_decay", "cosine", "unknown lr_decay"),
        ("lr", 0.0, "must be > 0"),
    ],
)
def test_invalid_config_is_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        EmbedConfig(**{field: value}).validate()


def test_cli_reports_unknown_dataset_and_bad_config(tmp_path, capsys):
    assert main(["embed", "--data", "no_such_data", "--epochs", "1", "--quiet"]) == 2
    assert "mammals" in capsys.readouterr().err  # the known names are listed
    bad = tmp_path / "c.toml"
    bad.write_text("dimm = 3\n")
    assert main(["embed", "--config", str(bad)]) == 2
    assert "unknown keys ['dimm']" in capsys.readouterr().err
    assert main(["embed", "--manifold", "sphere"]) == 2
    assert "invalid EmbedConfig" in capsys.readouterr().err
