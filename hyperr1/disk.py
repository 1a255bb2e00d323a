"""The math of drawing on the Poincaré disk: geodesic arcs, Möbius re-centring, a 2-d hyperbolic
projection with its distortion, and non-overlapping label placement (used by :mod:`hyperr1.viz`).

Pure functions of tensors in float64 on the ball of curvature −c (radius 1/√c):

* :func:`geodesic_circle`, :func:`geodesic_arc`: the geodesic between u and v is the arc of the
  circle through u, v and the inversion u/(c‖u‖²), which meets the boundary at right angles
  (‖m‖² = r² + 1/c); a straight segment when u, v and 0 are collinear;
* :func:`recenter`: the Möbius isometry x ↦ (−a) ⊕_c x, which moves a to the origin;
* :func:`einstein_midpoint`: the gyro-midpoint of points, through the Klein model;
* :func:`tangent_pca`: move the midpoint to the origin, log₀, keep the two principal directions,
  exp₀ (principal geodesic analysis in the tangent space, Fletcher et al. 2004);
* :func:`distance_rank_correlation`, :func:`tree_distance_correlation`: Spearman's ρ of pairwise
  distances before/after a projection, and of distance against tree path length;
* :func:`select_labels`: greedy label boxes that never overlap.

References: Ungar 2008, "A Gyrovector Space Approach to Hyperbolic Geometry"; Fletcher et al. 2004.
"""

from __future__ import annotations

import math

import geoopt
import torch

from hyperr1 import geometry
from hyperr1.hierarchy import Hierarchy

_COLLINEAR = 1e-9  # |u × v| below this: u, v and 0 are collinear and the geodesic is a diameter's segment


def geodesic_circle(u: torch.Tensor, v: torch.Tensor, *, c: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Centre m (..., 2) and radius r (...,) of the geodesic through u and v on the disk of radius 1/√c.

    The geodesic is the circle through u, v and the inversion u* = u / (c‖u‖²), i.e. the circle
    orthogonal to the boundary: ‖m‖² = r² + 1/c. With ‖m − u‖² = r² this gives 2⟨m, u⟩ = ‖u‖² + 1/c,
    and likewise for v, a 2×2 linear system solved by Cramer's rule:

    .. math::

        m = \frac{1}{u \times v}\big(b_u v_y - b_v u_y,\; u_x b_v - v_x b_u\big),
        \qquad b_u = \tfrac12(\lVert u\rVert^2 + 1/c),\quad u \times v = u_x v_y - u_y v_x.

    When u, v and 0 are collinear (u × v within ±1e-9, e.g. one of them at the origin) the geodesic is
    a straight segment: m is NaN and r is +inf there.
    """
    det = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    straight = det.abs() <= _COLLINEAR
    safe = torch.where(straight, torch.ones_like(det), det)  # guard: no division by ~0 on segments
    bu = 0.5 * (u.pow(2).sum(-1) + 1 / c)
    bv = 0.5 * (v.pow(2).sum(-1) + 1 / c)
    m = torch.stack([bu * v[..., 1] - bv * u[..., 1], u[..., 0] * bv - v[..., 0] * bu], dim=-1) / safe[..., None]
    r = (m - u).norm(dim=-1)
    m = torch.where(straight[..., None], torch.full_like(m, math.nan), m)
    return m, torch.where(straight, torch.full_like(r, math.inf), r)


def geodesic_arc(u: torch.Tensor, v: torch.Tensor, *, c: float = 1.0, num: int = 24) -> torch.Tensor:
    """``num`` points (..., num, 2) from u to v along the geodesic of :func:`geodesic_circle`.

    On a circle the angle runs from ∠(u − m) to ∠(v − m) the short way round (the part of an
    orthogonal circle inside the disk spans less than π); a straight geodesic is sampled linearly.
    """
    m, r = geodesic_circle(u, v, c=c)
    t = torch.linspace(0, 1, num, dtype=u.dtype, device=u.device)  # (num,)
    straight = torch.isinf(r)
    m0 = torch.where(straight[..., None], torch.zeros_like(m), m)  # guard: NaN centre of segments
    r0 = torch.where(straight, torch.zeros_like(r), r)
    a_u = torch.atan2(u[..., 1] - m0[..., 1], u[..., 0] - m0[..., 0])
    a_v = torch.atan2(v[..., 1] - m0[..., 1], v[..., 0] - m0[..., 0])
    delta = torch.remainder(a_v - a_u + math.pi, 2 * math.pi) - math.pi  # in [−π, π): the short way
    ang = a_u[..., None] + t * delta[..., None]  # (..., num)
    on_circle = m0[..., None, :] + r0[..., None, None] * torch.stack([ang.cos(), ang.sin()], dim=-1)
    on_line = u[..., None, :] + t[:, None] * (v - u)[..., None, :]
    return torch.where(straight[..., None, None], on_line, on_circle)


def recenter(x: torch.Tensor, a: torch.Tensor, *, c: float = 1.0) -> torch.Tensor:
    r"""The Möbius translation that moves ``a`` to the origin, x ↦ (−a) ⊕_c x (geoopt's ``mobius_add``):

    .. math::

        (-a) \oplus_c x = \frac{(1 - 2c\langle a, x\rangle + c\lVert x\rVert^2)(-a) + (1 - c\lVert a\rVert^2)\, x}
        {1 - 2c\langle a, x\rangle + c^2 \lVert a\rVert^2 \lVert x\rVert^2}.

    It is an isometry of the ball: d_c((−a) ⊕ x, (−a) ⊕ y) = d_c(x, y) (Ungar 2008).
    """
    k = torch.tensor(-c, dtype=x.dtype, device=x.device)
    return geoopt.manifolds.stereographic.math.mobius_add(-a.expand_as(x), x, k=k)


def einstein_midpoint(x: torch.Tensor, *, c: float = 1.0) -> torch.Tensor:
    r"""The Einstein midpoint of points (N, d) on the ball, computed in the Klein model (Ungar 2008):

    .. math::

        k_i = \frac{2 x_i}{1 + c\lVert x_i\rVert^2},\quad
        \gamma_i = \frac{1}{\sqrt{1 - c\lVert k_i\rVert^2}}
                 = \frac{1 + c\lVert x_i\rVert^2}{1 - c\lVert x_i\rVert^2},\quad
        \bar k = \frac{\sum_i \gamma_i k_i}{\sum_i \gamma_i},\quad
        \bar x = \frac{\bar k}{1 + \sqrt{1 - c\lVert \bar k\rVert^2}}.

    A closed-form stand-in for the Fréchet mean (they agree for two points); γ is written in the
    Poincaré norm because 1 − c‖k‖² cancels catastrophically near the boundary.
    """
    x2 = c * x.pow(2).sum(-1, keepdim=True)  # (N, 1)
    k = 2 * x / (1 + x2)
    gamma = (1 + x2) / (1 - x2).clamp_min(torch.finfo(x.dtype).tiny)  # guard: a point on the boundary
    kbar = (gamma * k).sum(0) / gamma.sum(0)
    # guard: rounding may put k̄ a hair outside the Klein ball
    return kbar / (1 + (1 - c * kbar.pow(2).sum()).clamp_min(0).sqrt())


def tangent_log0(x: torch.Tensor, *, c: float = 1.0) -> torch.Tensor:
    r"""log₀(x) = (d_c(0, x) / 2) · x / ‖x‖, the logarithmic map at the origin through the closed-form
    distance of :func:`hyperr1.geometry.dist`.

    The same map as :func:`hyperr1.geometry.logmap0` (artanh(√c‖x‖)/√c = d_c(0, x)/2), but exact
    near the boundary, where geoopt's artanh clamp caps ‖log₀ x‖ at ≈ 8.3/√c.
    """
    n = x.norm(dim=-1, keepdim=True).clamp_min(1e-300)  # guard: log₀(0) = 0 without 0/0
    d = geometry.dist(torch.zeros_like(x), x, c=c)[..., None]
    return 0.5 * d * x / n


def _expmap0_exact(v: torch.Tensor, *, c: float) -> torch.Tensor:
    """exp₀(v) = tanh(√c‖v‖) v / (√c‖v‖) without geoopt's boundary projection (float64 holds
    tanh(s) < 1 up to s ≈ 18, the range of the embeddings)."""
    n = v.norm(dim=-1, keepdim=True).clamp_min(1e-300)  # guard: exp₀(0) = 0 without 0/0
    return torch.tanh(c**0.5 * n) * v / (c**0.5 * n)


def tangent_pca(
    x: torch.Tensor, *, c: float = 1.0, center: torch.Tensor | None = None, fit: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""Project points (N, d) of the ball to the 2-d disk of the same curvature by tangent PCA:

    .. math::

        v_i = \log_0\big((-\mu) \oplus_c x_i\big) \in \mathbb{R}^d,\qquad
        W = \text{top-2 right singular vectors of } V,\qquad
        y_i = \exp_0(W^\top v_i) \in \mathbb{B}^2_c,

    with μ the Einstein midpoint of the points (:func:`einstein_midpoint`) unless ``center`` is
    given. The directions are those of largest second moment about μ (the principal geodesics'
    tangent approximation, Fletcher et al. 2004) of the rows ``fit`` (all rows when None; pass a
    subtree to spread it out rather than the rest of the hierarchy). μ lands on the origin; for
    d = 2 the map is a Möbius translation followed by a rotation, an isometry. Each axis's sign is fixed (its largest
    coordinate positive) so the picture is deterministic. Returns (y, info) with the share of the
    tangent second moment kept, ``info["explained"]``.
    """
    mu = einstein_midpoint(x, c=c) if center is None else center
    v = tangent_log0(recenter(x, mu, c=c), c=c)  # (N, d)
    _, s, vh = torch.linalg.svd(v if fit is None else v[fit], full_matrices=False)
    w = vh[:2].T  # (d, 2)
    z = v @ w  # (N, 2)
    sign = torch.sign(z.gather(0, z.abs().argmax(0, keepdim=True)))  # (1, 2)
    z = z * torch.where(sign == 0, torch.ones_like(sign), sign)
    if z.shape[1] < 2:  # a 1-d embedding: the second axis is empty
        z = torch.cat([z, torch.zeros_like(z)], dim=1)
    explained = float(s[:2].pow(2).sum() / s.pow(2).sum().clamp_min(1e-300))
    return _expmap0_exact(z, c=c), {"explained": explained}


def distance_rank_correlation(
    x: torch.Tensor, y: torch.Tensor, *, c: float = 1.0, num_pairs: int = 20000, seed: int = 0
) -> float:
    """Spearman's ρ between d_c(x_i, x_j) and d_c(y_i, y_j) over a seeded sample of pairs i ≠ j
    (all pairs when there are fewer than ``num_pairs``): 1 when the projection keeps every
    distance's rank; the number quoted under every projected picture."""
    from scipy.stats import spearmanr

    n = x.shape[0]
    if n < 3:
        raise ValueError(f"the distance correlation needs at least 3 points, got {n}")
    if n * (n - 1) // 2 <= num_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
    else:
        gen = torch.Generator().manual_seed(seed)
        i = torch.randint(0, n, (num_pairs,), generator=gen)
        j = (i + torch.randint(1, n, (num_pairs,), generator=gen)) % n  # j ≠ i
    before = geometry.dist(x[i], x[j], c=c)
    after = geometry.dist(y[i], y[j], c=c)
    return float(spearmanr(before.numpy(), after.numpy()).statistic)


def tree_distance_correlation(
    x: torch.Tensor, hierarchy: Hierarchy, *, c: float = 1.0, num_sources: int = 200, seed: int = 0
) -> float:
    """Spearman's ρ between d_c(x_u, x_v) and the path length of u and v in the hierarchy (edges
    undirected), over all pairs from ``num_sources`` seeded source nodes: how far the points
    arrange the hierarchy at all, whatever their dimension (the mammal embeddings of
    results/embeddings score 0.58, 0.69, 0.71 at dims 2, 5, 10)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path
    from scipy.stats import spearmanr

    n, idx = len(hierarchy.nodes), hierarchy.index
    rows = [idx[u] for u, _ in hierarchy.edges]
    cols = [idx[p] for _, p in hierarchy.edges]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    gen = torch.Generator().manual_seed(seed)
    src = torch.randperm(n, generator=gen)[:num_sources]
    hops = torch.from_numpy(shortest_path(graph, directed=False, unweighted=True, indices=src.numpy()))  # (S, n)
    d = geometry.pairwise_dist(x[src].double(), x.double(), c=c)  # (S, n)
    keep = torch.isfinite(hops) & (hops > 0)  # other components and the pair (u, u) say nothing
    if int(keep.sum()) < 3:
        return math.nan  # a hierarchy of one or two nodes has no ranks to compare
    return float(spearmanr(d[keep].numpy(), hops[keep].numpy()).statistic)


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------


def select_labels(
    points: torch.Tensor,
    texts: list[str],
    order: list[int],
    *,
    max_labels: int,
    char_width: float,
    height: float,
    offset: float,
    limit: float = 1.05,
) -> list[tuple[int, tuple[float, float, float, float], str]]:
    """Greedy non-overlapping labels: (node, box (x0, y0, x1, y1), side "left"/"right") for at most
    ``max_labels`` nodes.

    Nodes are tried in ``order``; a label's text spans ``len(text) · char_width`` by ``height`` in
    data coordinates and starts ``offset`` to the right of its point (or ends ``offset`` to its left
    when the right-hand box would cross ``x = ±limit`` or overlap a placed box); its box adds a
    margin of ``offset / 2`` on either side. A node whose boxes all overlap is skipped.
    """
    placed: list[tuple[int, tuple[float, float, float, float], str]] = []
    for i in order:
        if len(placed) >= max_labels:
            break
        x, y = float(points[i, 0]), float(points[i, 1])
        w = len(texts[i]) * char_width
        for side in ("right", "left"):
            x0 = x + offset if side == "right" else x - offset - w  # where the text starts
            box = (x0 - offset / 2, y - height / 2, x0 + w + offset / 2, y + height / 2)
            if box[0] < -limit or box[2] > limit:
                continue
            if not any(_overlap(box, b) for _, b, _ in placed):
                placed.append((i, box, side))
                break
    return placed


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


__all__ = [
    "geodesic_circle",
    "geodesic_arc",
    "recenter",
    "einstein_midpoint",
    "tangent_log0",
    "tangent_pca",
    "distance_rank_correlation",
    "tree_distance_correlation",
    "select_labels",
]
