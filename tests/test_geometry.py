"""Identities and properties of hyperr1.geometry, over seeds, dtypes and curvatures."""

import cmath
import math

import geoopt
import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperr1 import geometry as G
from hyperr1.native import dispatch as D

DTYPES = [torch.float32, torch.float64]
CURVATURES = [0.5, 1.0, 2.0]


def random_ball_points(n, d, *, c, dtype, seed, max_norm=0.95):
    """Points with uniformly random direction and norm in [0, max_norm/√c)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)
    radius = torch.rand(n, 1, generator=g, dtype=dtype) * max_norm / math.sqrt(c)
    return direction * radius


def exact_dist(x, y, c):
    """Closed form with the difference taken elementwise (no cancellation), float64."""
    x, y = x.double()[:, None], y.double()[None]
    num = 2 * c * (x - y).pow(2).sum(-1)
    den = (1 - c * x.pow(2).sum(-1)) * (1 - c * y.pow(2).sum(-1))
    return torch.acosh(1 + num / den) / math.sqrt(c)


@pytest.mark.parametrize("c", CURVATURES)
@pytest.mark.parametrize("seed", range(3))
def test_pairwise_dist_matches_geoopt_float64_up_to_the_boundary(c, seed):
    x = random_ball_points(64, 5, c=c, dtype=torch.float64, seed=seed, max_norm=1 - 1e-5)
    y = random_ball_points(48, 5, c=c, dtype=torch.float64, seed=seed + 100, max_norm=1 - 1e-5)
    d = G.pairwise_dist(x, y, c=c)
    ref = geoopt.PoincareBall(c=c).dist(x[:, None], y[None])
    # geoopt computes 2/√c·artanh(√c‖(−x)⊕y‖) with artanh's argument clamped at 1 − 1e-7, so it
    # saturates at 2·artanh(1 − 1e-7)/√c, and rounding in the Möbius sum (~1e-9) is amplified by
    # artanh near 1 (1.3e-5 relative at ‖x‖ = 0.997 against a 50-digit mpmath value, where
    # pairwise_dist is exact to 1e-15); compare where its argument is below 1 − 1e-3 …
    ok = ref < 2 * math.atanh(1 - 1e-3) / math.sqrt(c)
    assert ok.float().mean() > 0.5
    torch.testing.assert_close(d[ok], ref[ok], rtol=1e-5, atol=0)
    # … and everywhere against the closed form evaluated without cancellation
    torch.testing.assert_close(d, exact_dist(x, y, c), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_dist_float32_close_to_float64(dtype):
    x = random_ball_points(40, 8, c=1.0, dtype=dtype, seed=0, max_norm=0.99)
    d = G.pairwise_dist(x, x, c=1.0)
    ref = exact_dist(x, x, 1.0).to(dtype)
    off = ~torch.eye(len(x), dtype=torch.bool)
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(d[off], ref[off], rtol=tol, atol=tol * 10)
    # d(x, x): the cancellation in ‖x‖² + ‖x‖² − 2⟨x, x⟩ leaves an absolute error of order
    # √ε_dtype / (1 − ‖x‖²) (documented in pairwise_dist)
    assert d.diagonal().max() <= (0.1 if dtype == torch.float32 else 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_dist_finite_values_and_gradients_at_the_boundary(dtype):
    ball = geoopt.PoincareBall(c=1.0)
    g = torch.Generator().manual_seed(0)
    far = ball.projx(torch.randn(32, 4, generator=g, dtype=dtype) * 100)  # on geoopt's boundary
    x = torch.cat([far, far[:4], torch.zeros(2, 4, dtype=dtype)]).requires_grad_()  # duplicates, origin
    d = G.pairwise_dist(x, x, c=1.0)
    d.sum().backward()
    assert torch.isfinite(d).all()
    assert torch.isfinite(x.grad).all()
    # float32 at geoopt's boundary (1 − ‖x‖² ≈ 8e-3): d(x, x) is rounding noise of order
    # √ε/(1 − ‖x‖²) ≈ 0.1, about 1% of the distances there; float64 resolves it
    assert d.diagonal().abs().max() < (0.25 if dtype == torch.float32 else 5e-3)


def test_distance_logits_gradcheck_all_inputs():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 3, generator=g, dtype=torch.float64) * 0.25).requires_grad_()
    y = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 0.25).requires_grad_()
    alpha = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()
    c = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, y, a, b, c: D.distance_logits(x, y, c=c, alpha=a, bias=b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y, alpha, bias, c))


def test_pairwise_dist_rejects_bad_shapes_and_curvature():
    with pytest.raises(ValueError, match="expected"):
        G.pairwise_dist(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="c must be > 0"):
        G.pairwise_dist(torch.zeros(3, 2), torch.zeros(3, 2), c=-1.0)


points = st.lists(st.lists(st.floats(-0.7, 0.7, allow_nan=False), min_size=3, max_size=3), min_size=3, max_size=3)


@settings(max_examples=60, deadline=None)
@given(points, st.sampled_from(DTYPES), st.sampled_from(CURVATURES))
def test_distance_is_a_metric(pts, dtype, c):
    # inside 0.9 of the radius; the boundary has its own test above
    x = 0.9 * G.project(torch.tensor(pts, dtype=dtype) / math.sqrt(c), c=c)
    d = G.pairwise_dist(x, x, c=c).double()
    # float32: near-coincident points carry an absolute error ~1e-2 at 0.9 of the radius (the
    # cancellation documented in pairwise_dist); distances themselves are O(1)
    tol = 1e-2 if dtype == torch.float32 else 1e-6
    assert (d - d.T).abs().max() <= tol  # symmetry
    assert d.diagonal().abs().max() <= tol  # d(x, x) = 0
    assert (d >= 0).all()
    # triangle inequality over every triple
    assert (d[:, None, :] <= d[:, :, None] + d[None, :, :] + tol).all()


BALL_EPS = {torch.float32: 4e-3, torch.float64: 1e-5}  # geoopt's boundary margin ε, which G.project keeps


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-3, 3, allow_nan=False), min_size=4, max_size=4),
    st.sampled_from(DTYPES),
    st.sampled_from(CURVATURES),
)
def test_expmap0_logmap0_identity(v, dtype, c):
    """log₀(exp₀(v)) = v up to the boundary margin, and beyond it v clipped to the margin's radius.

    exp₀ lands at most (1 − ε)/√c from the origin (the projection), i.e. at hyperbolic radius
    r_max = artanh(1 − ε)/√c (≈ 3.1/√c in float32, 6.1/√c in float64); so the round trip is
    v · min(1, r_max/‖v‖) for every v, inside the margin and beyond it.
    """
    v = torch.tensor(v, dtype=dtype)
    back = G.logmap0(G.expmap0(v, c=c), c=c)
    v64, norm = v.double(), float(v.double().norm())
    r_max = math.atanh(1 - BALL_EPS[dtype]) / math.sqrt(c)
    expected = v64 * min(1.0, r_max / norm) if norm > 0 else v64
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(back.double(), expected, rtol=tol, atol=tol)


def mobius_add(x, y, c):
    """x ⊕_c y = ((1 + 2c⟨x, y⟩ + c‖y‖²) x + (1 − c‖x‖²) y) / (1 + 2c⟨x, y⟩ + c²‖x‖²‖y‖²) (Ungar)."""
    xy, x2, y2 = (x * y).sum(-1, keepdim=True), x.pow(2).sum(-1, keepdim=True), y.pow(2).sum(-1, keepdim=True)
    return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c * c * x2 * y2)


@settings(max_examples=60, deadline=None)
@given(points, st.sampled_from(DTYPES), st.sampled_from(CURVATURES))
def test_distance_is_invariant_under_mobius_left_translation(pts, dtype, c):
    """x ↦ a ⊕ x is an isometry of the ball, so d(a ⊕ x, a ⊕ y) = d(x, y) for hyperr1's closed-form
    distances; and they equal the Möbius definition d(x, y) = (2/√c) artanh(√c‖(−x) ⊕ y‖)."""
    # inside 0.7 of the radius, so that a ⊕ x stays inside 0.94 of it and resolvable in float32
    a, x, y = 0.7 * G.project(torch.tensor(pts, dtype=dtype) / math.sqrt(c), c=c)
    ax, ay = mobius_add(a, x, c), mobius_add(a, y, c)
    # float32: G.dist takes x − y elementwise (error ~1e-5 here); pairwise_dist's one matrix product
    # cancels for near-coincident points (absolute error ~1e-2 at this radius, see its docstring)
    tol, pair_tol = (1e-4, 2e-2) if dtype == torch.float32 else (1e-9, 1e-6)
    d = G.dist(x, y, c=c)
    torch.testing.assert_close(G.dist(ax, ay, c=c), d, rtol=tol, atol=tol)
    both, moved = torch.stack([x, y]), torch.stack([ax, ay])  # (2, 3)
    pair, pair_moved = G.pairwise_dist(both, both, c=c), G.pairwise_dist(moved, moved, c=c)  # (2, 2)
    torch.testing.assert_close(pair_moved, pair, atol=pair_tol, rtol=0)
    by_mobius = 2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * mobius_add(-x, y, c).double().norm())
    floor = 2 * math.sqrt(torch.finfo(dtype).eps / c)  # G.dist floors w at ε: no distance is below ≈ 2√(ε/c)
    torch.testing.assert_close(d.double(), by_mobius, rtol=tol, atol=10 * tol + floor)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_features_bounds_norm_and_keeps_small_inputs(dtype):
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [1e30, -1e30]], dtype=dtype)
    y = G.clip_features(x, 1.0)
    torch.testing.assert_close(y[0], torch.tensor([0.6, 0.8], dtype=dtype))
    torch.testing.assert_close(y[1], x[1])
    assert torch.equal(y[2], x[2])
    assert y.norm(dim=-1).max() <= 1.0 + 1e-6
    assert G.clip_features(x, None) is x
    with pytest.raises(ValueError, match="clip radius"):
        G.clip_features(x, 0.0)


@pytest.mark.parametrize("c", CURVATURES)
def test_mlr_logits_match_mobius_formula(c):
    ball = geoopt.PoincareBall(c=c)
    x = random_ball_points(7, 4, c=c, dtype=torch.float64, seed=1, max_norm=0.9)
    p = random_ball_points(5, 4, c=c, dtype=torch.float64, seed=2, max_norm=0.9)
    a = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    m = ball.mobius_add(-p[None], x[:, None])  # (N, K, d), the direct definition
    a_p = a * (1 - c * p.pow(2).sum(-1, keepdim=True))  # normal transported to p
    lam = 2 / (1 - c * p.pow(2).sum(-1))
    arg = 2 * math.sqrt(c) * (m * a_p).sum(-1) / ((1 - c * m.pow(2).sum(-1)) * a_p.norm(dim=-1))
    ref = lam * a_p.norm(dim=-1) / math.sqrt(c) * torch.asinh(arg)
    torch.testing.assert_close(G.mlr_logits(x, p, a, c=c), ref, rtol=1e-6, atol=1e-6)


def test_gromov_delta_known_values():
    tree = nx.balanced_tree(2, 4)
    assert G.delta_hyperbolicity(tree, num_base_points=None) == 0.0
    # 4-cycle: sums of opposite pairs 4, 2, 2 → δ = (4 − 2)/2 = 1, diameter 2 → relative 1
    assert G.delta_hyperbolicity(nx.cycle_graph(4), num_base_points=None) == pytest.approx(1.0)
    line = torch.linspace(0, 1, 20)[:, None]
    assert G.delta_hyperbolicity(line, c=None, num_base_points=None) == pytest.approx(0.0, abs=1e-6)
    d = torch.cdist(line.double(), line.double())
    assert G.delta_hyperbolicity(d, c=None) == pytest.approx(0.0, abs=1e-12)


def draw_tree(tree: nx.Graph, root, step: float, *, hyperbolic: bool) -> torch.Tensor:
    """Points (N, 2) of a tree drawn from ``root`` outwards, each node's children spread evenly
    around it at ``step`` from it, away from its parent: in the Poincaré disk (c = 1) by Möbius
    translation, so that every edge has hyperbolic length 2 artanh(step) (Sarkar 2011's
    construction), or in the Euclidean plane by ordinary translation (edge length ``step``)."""

    def move(w: complex, z: complex) -> complex:  # the translation taking 0 to z
        return (w + z) / (1 + z.conjugate() * w) if hyperbolic else w + z

    pos, stack = {root: 0j}, [(root, None)]
    while stack:
        v, parent = stack.pop()
        z = pos[v]
        kids = [u for u in tree[v] if u != parent]
        n = len(kids) + (parent is not None)
        to_parent = 0.0 if parent is None else cmath.phase(move(pos[parent], -z))
        for k, u in enumerate(kids, start=int(parent is not None)):  # slot 0 points at the parent
            pos[u] = move(step * cmath.exp(1j * (to_parent + 2 * math.pi * k / n)), z)
            stack.append((u, v))
    return torch.tensor([[pos[v].real, pos[v].imag] for v in tree], dtype=torch.float64)


def test_delta_hyperbolicity_of_euclidean_grid_exceeds_tree_embedding():
    tree = nx.balanced_tree(2, 4)
    assert G.delta_hyperbolicity(tree, num_base_points=None) == 0.0  # the tree metric itself
    tau = 2.0  # hyperbolic edge length
    disk = draw_tree(tree, 0, math.tanh(tau / 2), hyperbolic=True)
    hops = torch.tensor(nx.floyd_warshall_numpy(tree), dtype=torch.float64)
    ratio = (G.pairwise_dist(disk, disk) / (tau * hops))[hops > 0]
    assert ratio.max() <= 1 + 1e-9 and ratio.min() > 0.8  # a tree embedding: d ≈ τ · hops
    plane = draw_tree(tree, 0, 1.0, hyperbolic=False)
    grid = torch.cartesian_prod(torch.linspace(0, 1, 8), torch.linspace(0, 1, 8))
    delta_disk = G.delta_hyperbolicity(disk, c=1.0, num_base_points=None)
    delta_plane = G.delta_hyperbolicity(plane, c=None, num_base_points=None)
    delta_grid = G.delta_hyperbolicity(grid, c=None, num_base_points=None)
    assert delta_grid == pytest.approx(2 - math.sqrt(2), abs=1e-6)  # the unit square's corners: (√2 − 1)/(√2/2)
    assert delta_disk < 0.05  # near the tree's 0
    assert delta_grid > 10 * delta_disk and delta_plane > 10 * delta_disk  # flat: the same tree drawn in the plane


def test_delta_hyperbolicity_rejects_bad_input():
    with pytest.raises(ValueError, match="disconnected"):
        G.delta_hyperbolicity(nx.empty_graph(3))
    with pytest.raises(ValueError, match="square"):
        G.gromov_delta(torch.zeros(3, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [0.0, 1e-6, 0.5, 3.0, 1e4])
def test_expmap0_and_project_match_geoopt(dtype, scale):
    """The written-out exp₀ and projection give geoopt's PoincareBall.expmap0 / projx values."""
    v = torch.randn(50, 6, dtype=dtype, generator=torch.Generator().manual_seed(0)) * scale
    for c in CURVATURES:
        ball = geoopt.PoincareBall(c=c)
        torch.testing.assert_close(G.expmap0(v, c=c), ball.expmap0(v), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(G.project(v, c=c), ball.projx(v), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_inference_distance_logits_are_bitwise_the_autograd_ones(dtype, bias):
    g = torch.Generator().manual_seed(1)
    x = G.project(torch.randn(33, 5, dtype=dtype, generator=g), c=1.5)
    y = G.project(torch.randn(70, 5, dtype=dtype, generator=g) * 0.4, c=1.5)
    b = torch.randn(70, dtype=dtype, generator=g) if bias else None
    train = D.distance_logits(x, y, c=1.5, alpha=-2.0, bias=b)
    with torch.no_grad():
        infer = D.distance_logits(x, y, c=1.5, alpha=-2.0, bias=b)
        fixed = D.DistanceLogits(y, c=1.5, alpha=-2.0, bias=b)(x)
    assert torch.equal(train.detach(), infer)
    torch.testing.assert_close(fixed, infer, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
