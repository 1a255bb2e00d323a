"""Poincaré embeddings: the reconstruction metric on known ranks, training, run files, CLI."""

import json
import math
import warnings

import pytest
import torch

from hyperr1 import geometry, native
from hyperr1.cli import main
from hyperr1.embeddings import (
    ClosureIndex,
    EmbedConfig,
    all_distances,
    hierarchy_init,
    load_embedding,
    load_training_state,
    make_embedding,
    nickel_kiela_loss,
    reconstruction,
    resolve_embed_kernel,
    sample_negatives,
    sampled_softmax_grad,
    sampled_softmax_loss,
    save_embedding,
    save_training_state,
    sparse_sgd_step,
    train_embedding,
)
from hyperr1.hierarchy import Hierarchy, load_hierarchy
from hyperr1.optim import riemannian_optimizer

native_embed = pytest.mark.skipif(not native.embed_available(), reason="no C compiler for the native kernel")


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
        ("kernel", "fortran", "unknown kernel"),
        ("init_scheme", "spectral", "unknown init_scheme"),
        ("init_level", 0.0, "init_level and init_spread"),
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


# ------------------------------------------------------------------ chunked evaluation


def sorted_reconstruction(emb, index, *, manifold, c):
    """The previous evaluation, kept as the reference: sort every full row, read ranks off the order."""
    n = emb.shape[0]
    rows = torch.arange(n)
    d = all_distances(emb, rows, manifold=manifold, c=c)
    d[rows, rows] = math.inf
    pos = torch.zeros_like(d, dtype=torch.bool)
    pos[index.pairs[:, 0], index.pairs[:, 1]] = True
    pos_sorted = pos.gather(1, d.argsort(dim=1)).double()
    k = torch.arange(n, dtype=torch.float64)
    j = pos_sorted.cumsum(1) - pos_sorted
    num_pos = pos_sorted.sum(1)
    has = num_pos > 0
    ap = ((j + 1) / (k + 1) * pos_sorted).sum(1)[has] / num_pos[has]
    return float(((k - j + 1) * pos_sorted).sum()) / index.pairs.shape[0], float(ap.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("manifold", ["poincare", "euclidean"])
def test_chunked_reconstruction_equals_the_sorted_reference(seed, manifold):
    h = Hierarchy.random_tree(300, seed=seed)
    index = ClosureIndex.from_hierarchy(h)
    gen = torch.Generator().manual_seed(seed)
    emb = (torch.rand(len(h), 4, generator=gen, dtype=torch.float64) - 0.5) * 0.9  # inside the unit ball
    mean_rank, map_ = sorted_reconstruction(emb, index, manifold=manifold, c=1.0)
    for chunk in (1, 7, 64, None):
        rec = reconstruction(emb, index, manifold=manifold, c=1.0, chunk=chunk)
        assert rec["mean_rank"] == pytest.approx(mean_rank, rel=1e-12)
        assert rec["map"] == pytest.approx(map_, rel=1e-12)
        assert rec["num_pairs"] == index.pairs.shape[0] and rec["num_nodes_evaluated"] == len(h) - 1


def test_chunked_reconstruction_equals_the_reference_on_a_trained_mammal_embedding():
    h = load_hierarchy("mammals")
    cfg = EmbedConfig(dim=5, epochs=8, eval_every=0, burnin_epochs=2)
    emb = train_embedding(cfg, hierarchy=h, progress=False)["embedding"]
    index = ClosureIndex.from_hierarchy(h)
    mean_rank, map_ = sorted_reconstruction(emb, index, manifold="poincare", c=1.0)
    rec = reconstruction(emb, index, manifold="poincare", c=1.0, chunk_bytes=2**20)  # 28-row chunks
    assert rec["mean_rank"] == pytest.approx(mean_rank, rel=1e-12) and rec["map"] == pytest.approx(map_, rel=1e-12)


def test_reconstruction_on_a_sample_of_rows_is_the_mean_over_those_rows():
    h = Hierarchy.random_tree(200, seed=3)
    index = ClosureIndex.from_hierarchy(h)
    emb = (torch.rand(len(h), 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) - 0.5) * 0.9
    full = reconstruction(emb, index, manifold="poincare", c=1.0)
    halves = [reconstruction(emb, index, manifold="poincare", c=1.0, rows=r) for r in torch.arange(200).chunk(2)]
    assert sum(r["num_pairs"] for r in halves) == full["num_pairs"]
    rank_sum = sum(r["mean_rank"] * r["num_pairs"] for r in halves)
    ap_sum = sum(r["map"] * r["num_nodes_evaluated"] for r in halves)
    assert rank_sum / full["num_pairs"] == pytest.approx(full["mean_rank"], rel=1e-12)
    assert ap_sum / full["num_nodes_evaluated"] == pytest.approx(full["map"], rel=1e-12)


def test_a_tie_between_an_ancestor_and_a_non_neighbour_counts_against_the_ancestor():
    h = Hierarchy.from_edges([("b", "a"), ("c", "a")])  # b's ancestor a and non-neighbour c, both at 1
    emb = torch.tensor([[1.0, 0], [0.0, 0], [-1.0, 0]], dtype=torch.float64)
    rec = reconstruction(emb, ClosureIndex.from_hierarchy(h), manifold="euclidean", c=1.0)
    assert rec["mean_rank"] == 2.0 and rec["map"] == 0.5


# ------------------------------------------------------------------ sparse Riemannian SGD


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("manifold", ["poincare", "euclidean"])
def test_closed_form_gradients_equal_autograd(seed, dtype, manifold):
    gen = torch.Generator().manual_seed(seed)
    x_u = ((torch.rand(6, 3, generator=gen) - 0.5) * 1.1).to(dtype).requires_grad_()
    x_c = ((torch.rand(6, 5, 3, generator=gen) - 0.5) * 1.1).to(dtype).requires_grad_()
    invalid = torch.rand(6, 4, generator=gen) < 0.3
    c = 0.7
    loss = sampled_softmax_loss(x_u, x_c, invalid, manifold=manifold, c=c)
    g_u, g_c = torch.autograd.grad(loss, [x_u, x_c])
    loss2, h_u, h_c = sampled_softmax_grad(x_u.detach(), x_c.detach(), invalid, manifold=manifold, c=c)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}
    torch.testing.assert_close(loss2, loss.detach(), **tol)
    torch.testing.assert_close(h_u, g_u, **tol)
    torch.testing.assert_close(h_c, g_c, **tol)


@pytest.mark.parametrize("manifold", ["poincare", "euclidean"])
def test_sparse_step_equals_geoopt_dense_riemannian_sgd(manifold):
    h = Hierarchy.random_tree(150, seed=1)
    index = ClosureIndex.from_hierarchy(h)
    cfg = EmbedConfig(manifold=manifold, dim=4, init=0.3)
    torch.manual_seed(0)
    dense, sparse = make_embedding(len(h), cfg), make_embedding(len(h), cfg)
    sparse.data.copy_(dense.data)
    opt = riemannian_optimizer([dense], name="sgd", lr=0.5)
    g_dense, g_sparse = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for step in range(20):
        batch = index.pairs[step * 16 : (step + 1) * 16]
        loss = nickel_kiela_loss(dense, batch, index, negatives=8, manifold=manifold, c=1.0, generator=g_dense)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_s = sparse_sgd_step(
            sparse, batch, index, lr=0.5, negatives=8, manifold=manifold, c=1.0, generator=g_sparse
        )
        assert loss_s == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(sparse.data, dense.data, rtol=1e-12, atol=1e-14)


@native_embed
@pytest.mark.parametrize("manifold", ["poincare", "euclidean"])
@pytest.mark.parametrize("lr", [0.5, 400.0])  # 400: most rows end on the ball's boundary and are projected
def test_native_step_equals_the_pytorch_step(manifold, lr):
    """Same draws, same update: the C kernel and sparse_sgd_step differ only in the order of sums
    (amplified near the boundary, where 1 − ‖x‖² ≈ 1e-10 keeps only 6 significant digits)."""
    h = Hierarchy.random_tree(150, seed=1)
    index = ClosureIndex.from_hierarchy(h)
    cfg = EmbedConfig(manifold=manifold, dim=4, init=0.3)
    torch.manual_seed(0)
    eager = make_embedding(len(h), cfg)
    table = eager.data.clone()
    step = native.EmbedStep(len(h), 4, index.keys, batch=16, negatives=8)
    g_eager, g_native = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    maxnorm = 1 - 1e-10 if manifold == "poincare" else math.inf
    for i in range(5):
        batch = index.pairs[i * 16 : (i + 1) * 16]
        loss = sparse_sgd_step(eager, batch, index, lr=lr, negatives=8, manifold=manifold, c=1.0, generator=g_eager)
        neg = torch.randint(0, len(h), (16, 8), generator=g_native)
        loss_n = step(table, batch, neg, c=1.0, lr=lr, maxnorm=maxnorm, poincare=manifold == "poincare")
        tol = {"rtol": 1e-11, "atol": 1e-13} if lr < 1 else {"rtol": 1e-5, "atol": 1e-7}
        assert loss_n == pytest.approx(loss, rel=tol["rtol"])
        torch.testing.assert_close(table, eager.data, **tol)
    if lr > 1 and manifold == "poincare":
        assert (table.norm(dim=1) > 1 - 1e-9).sum() > 10  # the projection was exercised
    assert torch.equal(step.grad, torch.zeros_like(step.grad)) and not step.mark.any()  # scratch left clean


@native_embed
def test_native_training_tracks_the_pytorch_run():
    h = Hierarchy.random_tree(120, seed=2)
    cfg = EmbedConfig(dim=3, epochs=6, eval_every=2, eval_sample=50, burnin_epochs=2, kernel="native")
    fused = train_embedding(cfg, hierarchy=h, progress=False)
    eager = train_embedding(EmbedConfig(**{**cfg.__dict__, "kernel": "eager"}), hierarchy=h, progress=False)
    torch.testing.assert_close(fused["embedding"], eager["embedding"], rtol=1e-9, atol=1e-11)


def test_native_kernel_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_embed_kernel("native", "cuda")
    assert resolve_embed_kernel("eager", "cpu") == "eager"
    if native.embed_available():
        step = native.EmbedStep(4, 2, torch.tensor([1]), batch=2, negatives=1)
        pairs, neg = torch.tensor([[0, 1]]), torch.tensor([[2]])
        with pytest.raises(ValueError, match="float64"):
            step(torch.zeros(4, 2), pairs, neg, c=1.0, lr=1.0, maxnorm=0.9, poincare=True)
        with pytest.raises(ValueError, match="does not fit"):
            step(torch.zeros(4, 2, dtype=torch.float64), pairs.repeat(3, 1), neg.repeat(3, 1), c=1.0, lr=1.0,
                 maxnorm=0.9, poincare=True)  # fmt: skip


def test_the_balls_projection_keeps_the_configured_margin_in_float64():
    """geoopt computes the radius from its float32 curvature (1 − 1e-10 rounds to 1); ours does not."""
    far = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    for eps in (1e-10, 1e-5):
        norm = geometry.ball(1.0, boundary_eps=eps).projx(far).norm().item()
        assert norm == pytest.approx(1 - eps, rel=1e-15, abs=0) and norm < 1
    assert geometry.ball(4.0, boundary_eps=1e-10).projx(far).norm().item() == pytest.approx((1 - 1e-10) / 2, rel=1e-15)


def test_sampled_negatives_mask_exactly_the_node_and_its_ancestors():
    h = Hierarchy.balanced_tree(2, 3)
    index = ClosureIndex.from_hierarchy(h)
    u = torch.arange(len(h)).repeat(20)
    neg, invalid = sample_negatives(u, index, negatives=30, generator=torch.Generator().manual_seed(0))
    truth = torch.tensor(
        [
            [i == j or h.is_a(h.nodes[i], h.nodes[j]) for j in row]
            for i, row in zip(u.tolist(), neg.tolist(), strict=True)
        ]
    )
    assert torch.equal(invalid, truth) and truth.any()


# ------------------------------------------------------------------ the hierarchy construction


@pytest.mark.parametrize("c", [1.0, 2.5])
def test_hierarchy_init_puts_each_node_at_level_times_depth_from_the_origin(c):
    h = Hierarchy.random_tree(300, seed=3)
    gen = torch.Generator().manual_seed(0)
    x = hierarchy_init(h, 6, level=0.7, spread=1.5, c=c, max_norm=1 / math.sqrt(c), generator=gen)
    depth = torch.tensor([h.depth(v) for v in h.nodes], dtype=torch.float64)
    rho = 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * x.norm(dim=1))  # d_c(0, x)
    torch.testing.assert_close(rho, 0.7 * depth, rtol=1e-9, atol=1e-12)
    assert x[h.index["n0"]].abs().max() == 0  # the one root at the origin


def test_hierarchy_init_of_a_forest_gives_each_root_its_own_direction():
    h = Hierarchy.from_edges([("b", "a"), ("d", "c"), ("e", "c")], name="forest")
    gen = torch.Generator().manual_seed(0)
    x = hierarchy_init(h, 4, level=1.0, spread=1.0, c=1.0, max_norm=1.0, generator=gen)
    a, c = x[h.index["a"]], x[h.index["c"]]
    torch.testing.assert_close(a.norm(), torch.tensor(math.tanh(0.5), dtype=torch.float64))
    assert torch.dot(a, c) / (a.norm() * c.norm()) < 0.999  # the roots do not coincide
    assert x[h.index["b"]].norm() > a.norm()


def test_hierarchy_init_puts_a_node_with_two_parents_on_its_longest_chain():
    # x has parents c (chain a ← b ← c) and d (a ← d): it follows c, so c's whole chain ranks first
    h = Hierarchy.from_edges([("b", "a"), ("c", "b"), ("d", "a"), ("x", "c"), ("x", "d")], name="dag")
    gen = torch.Generator().manual_seed(0)
    e = hierarchy_init(h, 8, level=1.0, spread=0.5, c=1.0, max_norm=1 - 1e-10, generator=gen)
    dist = geometry.ball(1.0).dist
    x, c, d = (e[h.index[v]] for v in "xcd")
    assert dist(x, c) < dist(x, d)


def test_hierarchy_init_ranks_a_random_tree_before_any_training():
    # measured: MAP 0.982 at dim 10 (uniform init: 0.008); the bound leaves room for other draws
    h = Hierarchy.random_tree(2000, seed=0)
    index = ClosureIndex.from_hierarchy(h)
    built = make_embedding(len(h), EmbedConfig(dim=10, init_scheme="hierarchy"), h).data
    uniform = make_embedding(len(h), EmbedConfig(dim=10), h).data
    assert reconstruction(built, index, manifold="poincare", c=1.0)["map"] > 0.95
    assert reconstruction(uniform, index, manifold="poincare", c=1.0)["map"] < 0.05


def test_hierarchy_init_follows_the_seed_and_refuses_what_it_cannot_build():
    h = Hierarchy.random_tree(100, seed=1)
    cfg = EmbedConfig(dim=4, init_scheme="hierarchy")
    assert torch.equal(make_embedding(len(h), cfg, h).data, make_embedding(len(h), cfg, h).data)
    other = EmbedConfig(dim=4, init_scheme="hierarchy", seed=1)
    assert not torch.equal(make_embedding(len(h), cfg, h).data, make_embedding(len(h), other, h).data)
    with pytest.raises(ValueError, match="needs the hierarchy"):
        make_embedding(len(h), cfg)
    with pytest.raises(ValueError, match="needs manifold='poincare'"):
        EmbedConfig(init_scheme="hierarchy", manifold="euclidean").validate()


def test_hierarchy_init_warns_when_deep_levels_fall_on_the_boundary_margin():
    chain = Hierarchy.from_edges([(f"n{i + 1}", f"n{i}") for i in range(12)], name="chain")  # depths 0..12
    gen = torch.Generator().manual_seed(0)
    max_norm = 1 - 1e-10  # radius cap log((2 − ε)/ε) ≈ 23.7: with a = 3, depths ≥ 8 are clipped
    with pytest.warns(UserWarning, match="5 of 13 nodes .* from depth 8"):
        x = hierarchy_init(chain, 3, level=3.0, spread=1.0, c=1.0, max_norm=max_norm, generator=gen)
    deep = x[[chain.index[f"n{i}"] for i in range(8, 13)]]
    assert torch.allclose(deep.norm(dim=1), torch.full((5,), max_norm, dtype=torch.float64), rtol=0, atol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cap 32.9 > 2.5 · 12: no warning
        hierarchy_init(chain, 3, level=2.5, spread=1.0, c=1.0, max_norm=1 - 1e-14, generator=gen)


@pytest.mark.parametrize("eps", [0.0, 1e-16, 1.0, -1e-3])
def test_boundary_margins_that_float64_cannot_hold_are_refused(eps):
    with pytest.raises(ValueError, match="boundary_eps must be in"):
        EmbedConfig(boundary_eps=eps).validate()
    EmbedConfig(boundary_eps=1e-14).validate()


# ------------------------------------------------------------------ budgets, samples, resume


@pytest.mark.parametrize("init", ["uniform", "hierarchy"])
@pytest.mark.parametrize("kernel", ["eager", pytest.param("native", marks=native_embed)])
def test_resuming_from_a_saved_state_gives_the_uninterrupted_result(tmp_path, kernel, init):
    h = Hierarchy.random_tree(120, seed=2)
    cfg = EmbedConfig(dim=3, epochs=6, eval_every=2, eval_sample=50, burnin_epochs=2, kernel=kernel, init_scheme=init)
    states = {}
    full = train_embedding(cfg, hierarchy=h, progress=False, on_epoch=lambda s: states.update({s["epoch"]: s}))
    save_training_state(tmp_path / "ckpt.safetensors", states[3])
    state = load_training_state(tmp_path / "ckpt.safetensors")
    assert state["epoch"] == 3 and state["history"] == states[3]["history"]
    resumed = train_embedding(cfg, hierarchy=h, progress=False, state=state)
    assert torch.equal(resumed["embedding"], full["embedding"])
    strip = [{k: v for k, v in r.items() if "seconds" not in k} for r in full["history"]]
    assert [{k: v for k, v in r.items() if "seconds" not in k} for r in resumed["history"]] == strip


def test_adam_state_round_trips_through_a_checkpoint(tmp_path):
    h = Hierarchy.random_tree(60, seed=4)
    cfg = EmbedConfig(dim=3, epochs=4, eval_every=0, optimizer="adam", lr=0.01, burnin_epochs=1)
    states = {}
    full = train_embedding(cfg, hierarchy=h, progress=False, on_epoch=lambda s: states.update({s["epoch"]: s}))
    save_training_state(tmp_path / "ckpt.safetensors", states[2])
    resumed = train_embedding(
        cfg, hierarchy=h, progress=False, state=load_training_state(tmp_path / "ckpt.safetensors")
    )
    assert torch.equal(resumed["embedding"], full["embedding"])


def test_sampled_evaluations_during_training_and_a_full_one_at_the_end():
    h = Hierarchy.random_tree(200, seed=5)
    cfg = EmbedConfig(dim=3, epochs=5, eval_every=2, eval_sample=40, burnin_epochs=1)
    hist = train_embedding(cfg, hierarchy=h, progress=False)["history"]
    assert [r["epoch"] for r in hist] == [2, 4, 5] and [r["sample"] for r in hist] == [True, True, False]
    assert hist[-1]["num_pairs"] == ClosureIndex.from_hierarchy(h).pairs.shape[0] > hist[0]["num_pairs"]


def test_time_budget_stops_training_with_a_full_evaluation():
    h = Hierarchy.random_tree(100, seed=6)
    cfg = EmbedConfig(dim=3, epochs=1000, eval_every=0, max_seconds=1e-6)
    result = train_embedding(cfg, hierarchy=h, progress=False)
    assert result["metrics"]["epochs_run"] == 1 and result["history"][-1]["sample"] is False
