"""hyperr1.viz: the identities of its math (geodesic circles, Möbius re-centring, the 2-d projection),
non-overlapping labels, and `hyperr1 viz` end to end on embed, policy and train-run directories."""

import json
import math

import pytest
import torch
from tiny_world import SMALL_MODEL

from hyperr1 import disk, geometry, viz
from hyperr1.cli import main as cli_main
from hyperr1.embeddings import EmbedConfig, run_embed
from hyperr1.hierarchy import Hierarchy
from hyperr1.model import build_policy, save_policy
from hyperr1.pipeline import save_final_policy
from hyperr1.runs import write_record
from hyperr1.tokenizer import build_tokenizer

SEEDS = [0, 1, 2]
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


def disk_points(n: int, seed: int, dtype=torch.float64, *, dim: int = 2, max_norm: float = 0.95) -> torch.Tensor:
    """n points uniform in direction with norms uniform in [0.05, max_norm], on the ball of c = 1."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen, dtype=torch.float64), dim=-1)
    norm = 0.05 + (max_norm - 0.05) * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    return (direction * norm).to(dtype)


# ------------------------------------------------------------------ geodesics


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1.0, 0.5, 2.0])
def test_geodesic_circle_is_orthogonal_to_the_boundary_and_passes_through_both_points(seed, dtype, c):
    u, v = disk_points(64, seed, dtype) / c**0.5, disk_points(64, seed + 100, dtype) / c**0.5
    m, r = disk.geodesic_circle(u, v, c=c)
    tol = TOL[dtype] * 100 if dtype == torch.float32 else TOL[dtype]
    ok = torch.isfinite(r) & (r < 1e3)  # huge circles (nearly collinear pairs) lose float32 digits
    rel = lambda a, b: ((a - b).abs() / b.abs().clamp_min(1))[ok]  # noqa: E731
    assert rel(m.pow(2).sum(-1), r.pow(2) + 1 / c).max() < tol  # orthogonal: |m|² = r² + 1/c
    assert rel((m - u).norm(dim=-1), r).max() < tol
    assert rel((m - v).norm(dim=-1), r).max() < tol
    inversion = u / (c * u.pow(2).sum(-1, keepdim=True))  # u* = u / (c|u|²) lies on the same circle
    assert rel((m - inversion).norm(dim=-1), r).max() < tol


def test_geodesic_through_the_origin_is_a_straight_segment():
    u = torch.tensor([[0.3, 0.4], [0.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    v = torch.tensor([[-0.6, -0.8], [0.2, -0.7], [0.9, 0.0]], dtype=torch.float64)
    m, r = disk.geodesic_circle(u, v)
    assert torch.isinf(r).all() and torch.isnan(m).all()
    arc = disk.geodesic_arc(u, v, num=5)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
    torch.testing.assert_close(arc, u[:, None] + t * (v - u)[:, None])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_arc_runs_from_u_to_v_along_the_geodesic(seed, dtype):
    u, v = disk_points(50, seed, dtype), disk_points(50, seed + 7, dtype)
    arc = disk.geodesic_arc(u, v, num=17).double()  # (50, 17, 2)
    u, v = u.double(), v.double()
    tol = 1e-4 if dtype == torch.float32 else 1e-7
    torch.testing.assert_close(arc[:, 0], u, atol=tol, rtol=0)
    torch.testing.assert_close(arc[:, -1], v, atol=tol, rtol=0)
    assert arc.norm(dim=-1).max() < 1
    # every sampled point lies on the geodesic: d(u, p) + d(p, v) = d(u, v)
    d_uv = geometry.dist(u, v, c=1.0)[:, None]
    d_via = geometry.dist(u[:, None], arc, c=1.0) + geometry.dist(arc, v[:, None], c=1.0)
    assert ((d_via - d_uv).abs() / d_uv).max() < (1e-3 if dtype == torch.float32 else 1e-6)


def test_geodesic_arc_near_the_rim_stays_inside_the_disk():
    # two leaves of a trained 2-d embedding sit within 1e-7 of the boundary
    ang = torch.tensor([0.3, 0.31, 2.0], dtype=torch.float64)
    pts = (1 - 1e-7) * torch.stack([ang.cos(), ang.sin()], -1)
    arc = disk.geodesic_arc(pts[[0, 0]], pts[[1, 2]], num=64)
    assert arc.norm(dim=-1).max() < 1


# ------------------------------------------------------------------ Möbius re-centring


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 5])
def test_recenter_moves_a_to_the_origin_and_keeps_distances(seed, dtype, dim):
    x = disk_points(40, seed, dtype, dim=dim)
    a = x[3]
    y = disk.recenter(x, a)
    assert y[3].norm() < TOL[dtype]
    d_before = geometry.dist(x[:, None], x[None], c=1.0)
    d_after = geometry.dist(y[:, None], y[None], c=1.0)
    off = ~torch.eye(40, dtype=torch.bool)
    rel = ((d_after - d_before).abs() / d_before.clamp_min(1e-3))[off]
    assert rel.max() < (1e-3 if dtype == torch.float32 else 1e-8)
    torch.testing.assert_close(disk.recenter(y, -a), x, atol=TOL[dtype] * 10, rtol=0)  # left cancellation


def test_recenter_follows_curvature():
    c = 2.0
    x = disk_points(20, 0) / c**0.5
    y = disk.recenter(x, x[5], c=c)
    assert y[5].norm() < 1e-12
    torch.testing.assert_close(geometry.dist(y[0], y[1], c=c), geometry.dist(x[0], x[1], c=c))


# ------------------------------------------------------------------ the projection


@pytest.mark.parametrize("seed", SEEDS)
def test_einstein_midpoint_of_two_points_is_the_geodesic_midpoint(seed):
    x = disk_points(2, seed)
    m = disk.einstein_midpoint(x)
    d = geometry.dist(x[0], x[1], c=1.0)
    torch.testing.assert_close(geometry.dist(m, x[0], c=1.0), d / 2)
    torch.testing.assert_close(geometry.dist(m, x[1], c=1.0), d / 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_einstein_midpoint_is_covariant_under_mobius_translations(seed):
    x = disk_points(30, seed, dim=4)
    a = disk_points(1, seed + 50, dim=4)[0] * 0.7
    lhs = disk.einstein_midpoint(disk.recenter(x, a))
    rhs = disk.recenter(disk.einstein_midpoint(x)[None], a)[0]
    torch.testing.assert_close(lhs, rhs)


def test_tangent_log0_matches_logmap0_and_stays_exact_at_the_rim():
    x = disk_points(30, 0, dim=3)
    torch.testing.assert_close(disk.tangent_log0(x), geometry.logmap0(x, c=1.0))
    rim = torch.tensor([[1 - 1e-10, 0.0]], dtype=torch.float64)
    assert disk.tangent_log0(rim).norm() == pytest.approx(0.5 * math.log((2 - 1e-10) / 1e-10), rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_projection_of_a_2d_embedding_is_an_isometry(seed):
    x = disk_points(60, seed, max_norm=0.999)
    y, info = disk.tangent_pca(x)
    assert info["explained"] == pytest.approx(1.0)
    d_x = geometry.dist(x[:, None], x[None], c=1.0)
    d_y = geometry.dist(y[:, None], y[None], c=1.0)
    torch.testing.assert_close(d_y, d_x, atol=1e-7, rtol=1e-7)
    assert disk.distance_rank_correlation(x, y, seed=seed) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_projection_of_points_on_a_geodesic_plane_is_an_isometry(seed):
    # points of a 2-d plane through the origin of the 5-ball (a totally geodesic submanifold), rotated
    flat = disk_points(50, seed)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    x = torch.cat([flat, torch.zeros(50, 3, dtype=torch.float64)], dim=1) @ q.T
    y, info = disk.tangent_pca(x)
    assert info["explained"] == pytest.approx(1.0)
    d_x = geometry.dist(x[:, None], x[None], c=1.0)
    d_y = geometry.dist(y[:, None], y[None], c=1.0)
    torch.testing.assert_close(d_y, d_x, atol=1e-6, rtol=1e-6)


def test_projection_of_a_5d_cloud_distorts_and_says_so():
    x = disk_points(200, 0, dim=5)
    y, info = disk.tangent_pca(x)
    assert y.shape == (200, 2) and y.norm(dim=-1).max() < 1
    assert 0 < info["explained"] < 1
    rho = disk.distance_rank_correlation(x, y, num_pairs=5000)
    assert 0 < rho < 0.99


def test_tree_distance_correlation_prefers_a_tree_shaped_layout():
    h = Hierarchy.balanced_tree(3, 3)
    # each node on the ray of its subtree's sector, at radius growing with depth
    pts = []
    for v in h.nodes:
        digits = [int(d) for d in v.split(".")[1:]]
        lo, width = 0.0, 2 * math.pi
        for d in digits:
            width /= 3
            lo += d * width
        r = math.tanh(0.9 * len(digits))
        pts.append([r * math.cos(lo + width / 2), r * math.sin(lo + width / 2)])
    x = torch.tensor(pts, dtype=torch.float64)
    shuffled = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
    good = disk.tree_distance_correlation(x, h)
    assert good > 0.7
    assert good > disk.tree_distance_correlation(shuffled, h) + 0.4


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize("seed", SEEDS)
def test_selected_labels_never_overlap(seed):
    gen = torch.Generator().manual_seed(seed)
    pts = disk_points(400, seed)
    texts = ["x" * int(n) for n in torch.randint(2, 20, (400,), generator=gen)]
    sizes = dict(max_labels=60, char_width=0.012, height=0.03, offset=0.006)
    chosen = disk.select_labels(pts, texts, list(range(400)), **sizes)
    assert 10 < len(chosen) <= 60
    boxes = [b for _, b, _ in chosen]
    for i in range(len(boxes)):
        assert -1.05 <= boxes[i][0] and boxes[i][2] <= 1.05
        for j in range(i):
            a, b = boxes[i], boxes[j]  # axis-aligned boxes (x0, y0, x1, y1) overlap iff both projections do
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (chosen[i], chosen[j])
    for i, (x0, y0, x1, y1), side in chosen:  # each box holds its text next to its point
        assert x1 - x0 == pytest.approx(len(texts[i]) * 0.012 + 0.006)
        assert (y0 + y1) / 2 == pytest.approx(float(pts[i, 1]))
        assert (x0 > pts[i, 0]) if side == "right" else (x1 < pts[i, 0])


def test_label_order_is_depth_then_size_and_nearest_first_when_centred():
    h = Hierarchy.from_edges([("b", "a"), ("c", "a"), ("d", "b"), ("e", "b"), ("f", "c")])
    pts = torch.tensor([[0.0, 0.0], [0.5, 0], [-0.5, 0], [0.7, 0.1], [0.7, -0.1], [-0.1, 0.05]], dtype=torch.float64)
    assert [h.nodes[i] for i in viz._label_order(pts, h, centred=False)] == ["a", "b", "c", "d", "e", "f"]
    assert [h.nodes[i] for i in viz._label_order(pts, h, centred=True)][:2] == ["a", "f"]


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tree")
    h = Hierarchy.balanced_tree(3, 2)
    tsv = tmp / "tree.tsv"
    h.to_tsv(tsv)
    return h, tsv


@pytest.fixture(scope="module")
def embed_dirs(tree, tmp_path_factory):
    _, tsv = tree
    tmp = tmp_path_factory.mktemp("embed")
    out = {}
    for dim, manifold in [(2, "poincare"), (5, "poincare"), (2, "euclidean")]:
        cfg = EmbedConfig(data=str(tsv), dim=dim, manifold=manifold, epochs=30, negatives=0, eval_every=0)
        cfg.out = str(tmp / f"{manifold}_d{dim}")
        run_embed(cfg, progress=False)
        out[(manifold, dim)] = tmp / f"{manifold}_d{dim}"
    return out


def page_data(html_path) -> dict:
    text = html_path.read_text()
    start = text.index("const D = ") + len("const D = ")
    return json.loads(text[start : text.index(";\nconst S")].replace("<\\/", "</"))


def assert_self_contained(html_path):
    text = html_path.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text and "<link" not in text and " src=" not in text


def test_embed_run_draws_its_dim2_disk(embed_dirs):
    assert (embed_dirs[("poincare", 2)] / "poincare_disk.png").stat().st_size > 10_000
    assert (embed_dirs[("poincare", 2)] / "poincare_disk.pdf").is_file()


@pytest.mark.parametrize("dim", [2, 5])
def test_viz_command_on_an_embed_directory(embed_dirs, tree, tmp_path, dim, capsys):
    h, _ = tree
    out = tmp_path / "fig"
    args = ["viz", "--input", str(embed_dirs[("poincare", dim)]), "--out", str(out), "--center", "n0.1", "--quiet"]
    assert cli_main(args) == 0  # the hierarchy comes from the run record
    written = json.loads(capsys.readouterr().out)
    assert written == {"png": f"{out}.png", "pdf": f"{out}.pdf", "html": f"{out}.html"}
    assert (tmp_path / "fig.png").stat().st_size > 10_000 and (tmp_path / "fig.pdf").stat().st_size > 1000
    assert_self_contained(tmp_path / "fig.html")
    data = page_data(tmp_path / "fig.html")
    assert data["names"] == h.nodes and len(data["panels"]) == 1
    panel = data["panels"][0]
    assert panel["center"] == "n0.1"
    x = torch.tensor(panel["x"], dtype=torch.float64)
    assert x.shape == (len(h.nodes), 2) and x.norm(dim=-1).max() < 1
    assert x[h.index["n0.1"]].norm() < 1e-9  # re-centred: the concept sits at the origin
    if dim == 2:
        assert "drawn exactly" in panel["caption"]
    else:
        assert "tangent PCA at n0.1, fitted to its subtree" in panel["caption"] and "in the subtree" in panel["caption"]


def test_viz_refuses_what_it_cannot_draw(embed_dirs, tree, tmp_path):
    _, tsv = tree
    with pytest.raises(ValueError, match="euclidean"):
        viz.run_viz(viz.VizConfig(input=str(embed_dirs[("euclidean", 2)]), out=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="not a concept"):
        viz.run_viz(viz.VizConfig(input=str(embed_dirs[("poincare", 2)]), center="nope", out=str(tmp_path / "x")))
    with pytest.raises(FileNotFoundError, match="not an embed output"):
        viz.run_viz(viz.VizConfig(input=str(tmp_path), data=str(tsv), out=str(tmp_path / "x")))
    assert cli_main(["viz", "--input", str(tmp_path), "--data", str(tsv), "--out", str(tmp_path / "x")]) == 2


@pytest.fixture(scope="module")
def run_dir(tree, tmp_path_factory):
    """A stand-in for a `hyperr1 train` run: tokenizer/, warm_start/model/, policy/ and the run record."""
    h, tsv = tree
    run = tmp_path_factory.mktemp("run")
    tok = build_tokenizer(h)
    tok.save_pretrained(run / "tokenizer")
    write_record(run, {"data": str(tsv)}, kind="train")
    torch.manual_seed(0)
    model = build_policy(len(tok), **SMALL_MODEL)
    save_policy(model, run / "warm_start" / "model")
    with torch.no_grad():  # "GRPO": move every prototype a little
        model.head.prototypes.mul_(0.5)
    save_final_policy(model, tok, run / "policy")
    return run, model


def test_viz_of_a_policy_draws_its_head_prototypes(run_dir, tree, tmp_path):
    h, _ = tree
    run, model = run_dir
    written = viz.run_viz(viz.VizConfig(input=str(run / "policy"), out=str(tmp_path / "p"), labels=5))
    data = page_data(tmp_path / "p.html")
    assert len(data["panels"]) == 1 and "head prototypes, dim 4" in data["panels"][0]["title"]
    assert "tangent PCA" in data["panels"][0]["caption"]
    assert (tmp_path / "p.png").stat().st_size > 10_000 and written["pdf"].endswith("p.pdf")
    # the tokenizer one or two levels up serves warm_start/model, which has none of its own
    panels, _ = viz.load_panels(viz.VizConfig(input=str(run / "warm_start" / "model"), data=str(tree[1])))
    assert panels[0].points.shape == (len(h.nodes), 2)


def test_viz_of_a_train_run_puts_warm_start_and_grpo_side_by_side(run_dir, tree, tmp_path):
    h, _ = tree
    run, _ = run_dir
    assert cli_main(["viz", "--input", str(run), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    data = page_data(tmp_path / "r.html")
    assert [p["title"].split(":")[0] for p in data["panels"]] == ["after the warm start", "after GRPO"]
    a, b = (torch.tensor(p["x"]) for p in data["panels"])
    assert not torch.allclose(a, b)
    # two directories given explicitly draw the same pair
    assert cli_main(["viz", "--input", str(run / "warm_start" / "model"), "--compare", str(run / "policy"),
                     "--out", str(tmp_path / "r2"), "--quiet"]) == 0  # fmt: skip
    assert len(page_data(tmp_path / "r2.html")["panels"]) == 2


def test_plot_poincare_disk_keeps_its_signature(tree, tmp_path):
    h, _ = tree
    emb = disk_points(len(h.nodes), 0) * 0.5  # on the ball of c = 4
    path = viz.plot_poincare_disk(emb, h, tmp_path / "d.png", c=4.0, title="t")
    assert path.stat().st_size > 10_000 and (tmp_path / "d.pdf").is_file()
    with pytest.raises(ValueError, match="embedding rows"):
        viz.plot_poincare_disk(emb[:3], h, tmp_path / "d.png")


def test_tangent_pca_fitted_to_all_rows_is_the_plain_fit():
    x = disk_points(80, 3, dim=6)
    y, info = disk.tangent_pca(x)
    y_all, info_all = disk.tangent_pca(x, fit=torch.arange(80))
    torch.testing.assert_close(y_all, y)
    assert info_all["explained"] == pytest.approx(info["explained"])
    sub = torch.arange(20)
    y_sub, _ = disk.tangent_pca(x, center=x[0], fit=sub)  # any tangent point, any subset: still on the disk
    assert y_sub.shape == (80, 2) and y_sub.norm(dim=-1).max() < 1
    assert y_sub[0].norm() < 1e-12  # the tangent point lands on the origin


def test_viz_of_a_distilled_student_maps_its_rows_back_with_exp0(run_dir, tree, tmp_path):
    """A Euclidean student initialised from the teacher by the log map draws exactly the teacher's
    picture: its rows are log₀ p_v, and viz maps them back with exp₀."""
    from hyperr1.distill import init_student_from_teacher

    h, tsv = tree
    run, teacher = run_dir
    tok = build_tokenizer(h)
    student = build_policy(len(tok), **{**SMALL_MODEL, "head": "euclidean"})
    init_student_from_teacher(student, teacher)
    distill_run = tmp_path / "distill_run"
    write_record(distill_run, {"data": str(tsv)}, kind="distill")
    (distill_run / "distill").mkdir()
    save_final_policy(student, tok, distill_run / "student")
    assert cli_main(["viz", "--input", str(distill_run), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    title = page_data(tmp_path / "s.html")["panels"][0]["title"]
    assert title.startswith("distilled Euclidean student") and "exp₀" in title and "dim 4" in title
    ours, _ = viz.load_panels(viz.VizConfig(input=str(distill_run), data=str(tsv)))
    theirs, _ = viz.load_panels(viz.VizConfig(input=str(run / "policy"), data=str(tsv)))
    torch.testing.assert_close(ours[0].points, theirs[0].points, atol=1e-5, rtol=1e-5)
