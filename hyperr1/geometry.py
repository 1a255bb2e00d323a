"""Pure Poincaré-ball functions on top of geoopt.

Everything here is a function of tensors with keyword-only curvature ``c > 0`` (the ball
``{x : c‖x‖² < 1}``, sectional curvature ``-c``). geoopt supplies the Möbius operations, the
exponential and logarithmic maps and the projection; this module adds what geoopt lacks:

* :func:`pairwise_dist` -- all-pairs distances through **one** matrix product of the factors
  :func:`pair_factors` (geoopt's ``dist`` broadcasts an ``N×M×d`` tensor of Möbius sums instead);
  the elementwise part and its backward run in the kernels of :mod:`hyperr1.native.dispatch`
  (PyTorch ops, or for float32 on the CPU the C loops of :mod:`hyperr1.native`);
* :func:`dist` -- paired distances by the closed form, exact near the boundary;
* :func:`clip_features` / :func:`clipped_expmap0` -- feature clipping of Guo et al. (2022);
* :func:`mlr_logits` -- hyperbolic multinomial logistic regression of Ganea et al. (2018),
  computed pairwise from inner products;
* :func:`gromov_delta` / :func:`delta_hyperbolicity` -- Gromov δ by the four-point condition,
  reported relative to the diameter as in Khrulkov et al. (2020).

References
----------
Nickel & Kiela 2017, "Poincaré Embeddings for Learning Hierarchical Representations".
Ganea, Bécigneul & Hofmann 2018, "Hyperbolic Neural Networks".
Khrulkov et al. 2020, "Hyperbolic Image Embeddings".
Guo et al. 2022, "Clipped Hyperbolic Classifiers Are Super-Hyperbolic Classifiers".
"""

from __future__ import annotations

import geoopt
import networkx as nx
import torch

__all__ = [
    "PoincareBall",
    "ball",
    "as_curvature",
    "expmap0",
    "clipped_expmap0",
    "logmap0",
    "project",
    "dist",
    "clip_features",
    "pair_factors",
    "left_factor",
    "right_factor",
    "pairwise_dist",
    "mlr_logits",
    "gromov_delta",
    "delta_hyperbolicity",
]


def as_curvature(c: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The curvature parameter ``c`` as a tensor of ``like``'s dtype and device; raises
    ``ValueError`` unless every entry is > 0 (the ball of curvature −c needs c > 0)."""
    c = torch.as_tensor(c, dtype=like.dtype, device=like.device)
    if not bool((c > 0).all()):
        raise ValueError(f"curvature parameter c must be > 0, got {c.tolist()}")
    return c


class PoincareBall(geoopt.PoincareBall):
    """geoopt's ball with a configurable boundary margin for ``projx`` and the retraction.

    geoopt keeps points within (1 − ε)/√c with ε = 1e-5 in float64 (4e-3 in float32). For an
    embedding that margin caps the distance from the origin at log((2 − ε)/ε) ≈ 12.2 and piles
    the leaves of a deep hierarchy onto one sphere; with the closed-form distances of this module
    (exact near the boundary, see :func:`dist`) float64 supports ε down to about 1e-14, i.e.
    distances up to ≈ 33 from the origin, with the conformal factor 1 − ‖x‖² ≈ 2ε then known to
    about 1% (‖x‖² is rounded to 1.1e-16). ``boundary_eps=None`` keeps geoopt's default.
    """

    def __init__(self, c: float = 1.0, learnable: bool = False, *, boundary_eps: float | None = None):
        super().__init__(c=c, learnable=learnable)
        if boundary_eps is not None and not 0 < boundary_eps < 1:
            raise ValueError(f"boundary_eps must be in (0, 1), got {boundary_eps}")
        self.boundary_eps = boundary_eps

    def max_norm(self, dtype: torch.dtype) -> torch.Tensor:
        """The radius (1 − ε)/√c that :meth:`projx` clips to, computed in ``dtype``: geoopt's
        ``project`` computes it from the float32 curvature, which rounds 1 − 1e-10 to 1 (points
        on the boundary itself) and 1 − 1e-5 to 0.99998999."""
        eps = _BALL_EPS.get(dtype, 1e-5) if self.boundary_eps is None else self.boundary_eps
        return (1 - eps) / self.c.to(dtype).sqrt()

    def projx(self, x: torch.Tensor, *, dim=-1) -> torch.Tensor:
        """Radial projection onto norm ≤ :meth:`max_norm` in ``x``'s dtype."""
        max_norm = self.max_norm(x.dtype)
        norm = x.norm(dim=dim, keepdim=True).clamp_min(1e-15)  # guard: 0/0 at the origin
        return torch.where(norm > max_norm, x / norm * max_norm, x)

    def retr(self, x: torch.Tensor, u: torch.Tensor, *, dim=-1) -> torch.Tensor:
        """First-order retraction x + u, projected (Nickel & Kiela 2017, eq. 5)."""
        return self.projx(x + u, dim=dim)


def ball(c: float = 1.0, *, learnable: bool = False, boundary_eps: float | None = None) -> PoincareBall:
    """A Poincaré ball of curvature ``-c`` (``c > 0``); see :class:`PoincareBall`."""
    if not c > 0:
        raise ValueError(f"curvature parameter c must be > 0, got {c}")
    return PoincareBall(c=c, learnable=learnable, boundary_eps=boundary_eps)


def expmap0(v: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""The exponential map at the origin, projected into the ball as geoopt's ``expmap0``:

    .. math::

        \exp_0(v) = \tanh(\sqrt{c}\,\lVert v\rVert)\, \frac{v}{\sqrt{c}\,\lVert v\rVert}

    (Ganea et al. 2018).

    The same values as geoopt's (a test checks), written out because geoopt's TorchScript
    version costs three times as much per call on the small batches of a decoding step.
    """
    c = as_curvature(c, v)
    sqrt_c = c.sqrt()
    # guard: exp₀(0) = 0; the clamp avoids 0/0 and matches geoopt's min norm
    n = v.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return project(torch.tanh(sqrt_c * n) * (v / (sqrt_c * n)), c=c)


def clipped_expmap0(v: torch.Tensor, r: float | None, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""exp₀(clip_r(v)) in one pass: with n = ‖v‖ and n' = min(n, r),

    .. math::

        \exp_0(\operatorname{clip}_r(v)) = \tanh(\sqrt{c}\, n')\, \frac{v}{\sqrt{c}\, n},

    the same point as :func:`expmap0` of :func:`clip_features` (one norm instead of three).
    The boundary projection is skipped when tanh(√c r) cannot reach the float margin.
    """
    if r is None:
        return expmap0(v, c=c)
    if not r > 0:
        raise ValueError(f"clip radius r must be > 0 or None, got {r}")
    c = as_curvature(c, v)
    sqrt_c = c.sqrt()
    n = v.norm(dim=-1, keepdim=True).clamp_min(1e-15)  # guard: exp₀(0) = 0 without 0/0
    z = v * (torch.tanh(sqrt_c * n.clamp_max(r)) / (sqrt_c * n))
    if float(sqrt_c) * r < 3.0:  # tanh(3) < 1 − 4e-3: inside geoopt's margin in every dtype
        return z
    return project(z, c=c)


def logmap0(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""The logarithmic map at the origin, the inverse of :func:`expmap0` (geoopt):

    .. math::

        \log_0(x) = \operatorname{artanh}(\sqrt{c}\,\lVert x\rVert)\, \frac{x}{\sqrt{c}\,\lVert x\rVert}.
    """
    return geoopt.manifolds.stereographic.math.logmap0(x, k=-as_curvature(c, x))


def project(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Project onto the ball of radius (1 − ε)/√c with geoopt's dtype-dependent ε (4e-3 for
    float32, 1e-5 for float64): points inside stay, points beyond move radially onto it."""
    c = as_curvature(c, x)
    max_norm = (1 - _BALL_EPS.get(x.dtype, 1e-5)) / c.sqrt()
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)  # guard: 0/0 at the origin
    return torch.where(norm > max_norm, x / norm * max_norm, x)


_BALL_EPS = {torch.float32: 4e-3}  # geoopt's boundary margin by dtype (1e-5 for every other dtype)


def dist(x: torch.Tensor, y: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Paired (broadcast) distance d_c(x, y) over the last dimension, by the closed form

    .. math::

        d_c(x, y) = \frac{1}{\sqrt{c}} \operatorname{arcosh}\Big(1 + \frac{2c\lVert x - y\rVert^2}
        {(1 - c\lVert x\rVert^2)(1 - c\lVert y\rVert^2)}\Big).

    geoopt's ``dist`` goes through ‖(−x) ⊕ y‖ and an artanh clamped at 1 − 1e-7, which saturates
    at 2·artanh(1 − 1e-7)/√c ≈ 16.8/√c; the closed form stays exact near the boundary and is
    cheaper (no Möbius sum). Used for the sampled pairs of :mod:`hyperr1.embeddings`.
    """
    c = as_curvature(c, x)
    floor = torch.finfo(x.dtype).eps
    sq = (x - y).pow(2).sum(-1)
    # guard: conformal factors of points outside the ball (invalid input) stay positive
    den = (1 - c * x.pow(2).sum(-1)).clamp_min(floor) * (1 - c * y.pow(2).sum(-1)).clamp_min(floor)
    w = c * sq / den  # acosh(1 + 2w)/√c is the distance
    # guard: ∂ acosh(1 + 2w)/∂w = 1/√(w + w²) is infinite at w = 0 (x = y); a floor at ε keeps
    # gradients finite there (zero through the clamp) and moves no distance above √ε.
    w = w.clamp_min(floor)
    return torch.log1p(2 * (w + torch.sqrt(w + w * w))) / c.sqrt()


def clip_features(x: torch.Tensor, r: float | None) -> torch.Tensor:
    r"""Feature clipping (Guo et al. 2022, eq. 7); ``r=None`` is the identity:

    .. math::

        \operatorname{clip}_r(x) = \min\Big(1, \frac{r}{\lVert x\rVert}\Big)\, x.

    Applied to Euclidean features before ``expmap0`` it keeps points away from the boundary, where
    the hyperbolic gradient vanishes, and makes huge inputs harmless.
    """
    if r is None:
        return x
    if not r > 0:
        raise ValueError(f"clip radius r must be > 0 or None, got {r}")
    # guard: ‖x‖ = 0 would divide by zero; such rows need no clipping anyway
    norm = x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return x * (r / norm).clamp_max(1.0)


# ---------------------------------------------------------------------------------------------
# all-pairs distances through one matrix product
# ---------------------------------------------------------------------------------------------


def pair_factors(x: torch.Tensor, y: torch.Tensor, *, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Factors A (N×(d+2)), B (M×(d+2)) with (A Bᵀ)_ij = w_ij, the argument of the distance:

    .. math::

        w_{ij} = \frac{c\,\lVert x_i - y_j\rVert^2}{(1 - c\lVert x_i\rVert^2)(1 - c\lVert y_j\rVert^2)},
        \qquad d_c(x_i, y_j) = \frac{1}{\sqrt{c}} \operatorname{arcosh}(1 + 2 w_{ij}).

    ‖x − y‖² = ‖x‖² + ‖y‖² − 2⟨x, y⟩, so appending the squared norm and a column of ones turns
    the numerator into one matrix product, and the conformal factors scale rows of each side.
    ``c`` is the curvature parameter as a tensor (see :func:`as_curvature`; not checked here).
    """
    return left_factor(x, c=c), right_factor(y, c=c)


# guard (both factors): points from outside the ball (or exactly on its boundary) would flip the
# sign of the conformal factor; geoopt's projx keeps ‖x‖ ≤ (1 − 4e-3)/√c in float32, so the floor
# only acts on invalid input, where it yields a large but finite distance.


def left_factor(x: torch.Tensor, *, c: torch.Tensor) -> torch.Tensor:
    """A = [x, ‖x‖², 1] · c / (1 − c‖x‖²), (N, d+2): the left factor of :func:`pair_factors`."""
    x2 = x.pow(2).sum(-1, keepdim=True)  # (N, 1)
    ux = c / (1 - c * x2).clamp_min(torch.finfo(x.dtype).eps)  # (N, 1)
    return torch.cat([x, x2, torch.ones_like(x2)], dim=-1) * ux


def right_factor(y: torch.Tensor, *, c: torch.Tensor) -> torch.Tensor:
    """B = [−2y, 1, ‖y‖²] / (1 − c‖y‖²), (M, d+2): the right factor of :func:`pair_factors`."""
    y2 = y.pow(2).sum(-1, keepdim=True)  # (M, 1)
    vy = 1 / (1 - c * y2).clamp_min(torch.finfo(y.dtype).eps)  # (M, 1)
    return torch.cat([-2 * y, torch.ones_like(y2), y2], dim=-1) * vy


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, *, c: float | torch.Tensor = 1.0) -> torch.Tensor:
    r"""All-pairs Poincaré distances, (N, d) × (M, d) → (N, M).

    .. math::

        d_c(x, y) = \frac{1}{\sqrt{c}} \operatorname{arcosh}\Big(1 + \frac{2c\lVert x - y\rVert^2}
        {(1 - c\lVert x\rVert^2)(1 - c\lVert y\rVert^2)}\Big)

    (Nickel & Kiela 2017, eq. 1, for c = 1). The squared norm of the difference comes from one
    matrix product (see :func:`pair_factors`), so memory is O(N·M) rather than geoopt's O(N·M·d);
    the elementwise part and its backward run in one of the kernels of
    :func:`hyperr1.native.dispatch.distance_logits` (``kernel="auto"``).
    Agrees with ``geoopt.PoincareBall(c).dist`` to 1e-5 relative in float64 up to ‖x‖ = 1 − 1e-5;
    for nearly coincident points the error is absolute (about √ε of the dtype) because of the
    cancellation in ‖x‖² + ‖y‖² − 2⟨x, y⟩.
    """
    # the kernels build on this module's factors, so they are imported here, not at the top
    from hyperr1.native.dispatch import distance_logits

    return distance_logits(x, y, c=c)


# ---------------------------------------------------------------------------------------------
# hyperbolic multinomial logistic regression
# ---------------------------------------------------------------------------------------------


def mlr_logits(x: torch.Tensor, p: torch.Tensor, a: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Hyperbolic MLR logits (Ganea et al. 2018, eq. 25), all pairs: (N, d), (K, d), (K, d) → (N, K).

    .. math::

        \zeta_k(x) = \frac{\lambda_{p_k} \lVert a_k\rVert}{\sqrt{c}}
        \operatorname{arsinh}\Big(\frac{2\sqrt{c}\, \langle (-p_k) \oplus x,\, a_k\rangle}
        {(1 - c\lVert (-p_k) \oplus x\rVert^2)\, \lVert a_k\rVert}\Big)

    ``p`` are the hyperplane offsets on the ball and ``a`` their normals given at the origin;
    the normal at pₖ is the parallel transport aₖ(1 − c‖pₖ‖²), so λ_pₖ‖aₖ‖ = 2‖a⁰ₖ‖.
    The Möbius sum m = (−p) ⊕ x is never materialised: with β = 1 − 2c⟨p, x⟩ + c‖x‖²,
    γ = 1 − c‖p‖², δ = 1 − 2c⟨p, x⟩ + c²‖p‖²‖x‖²,

    .. math::

        \langle m, \hat a\rangle = \frac{\gamma \langle x, \hat a\rangle - \beta \langle p, \hat a\rangle}{\delta},
        \qquad \lVert m\rVert^2 = \frac{\lVert x - p\rVert^2}{\delta},

    so the cost is two (N×d)·(d×K) products.
    """
    c = as_curvature(c, x)
    sqrt_c = c.sqrt()
    a_norm = a.norm(dim=-1).clamp_min(torch.finfo(a.dtype).tiny)  # guard: zero normal vector
    a_hat = a / a_norm[:, None]  # (K, d)
    x2 = x.pow(2).sum(-1, keepdim=True)  # (N, 1)
    p2 = p.pow(2).sum(-1)  # (K,)
    xp = x @ p.T  # (N, K)
    xa = x @ a_hat.T  # (N, K)
    pa = (p * a_hat).sum(-1)  # (K,)
    beta = 1 - 2 * c * xp + c * x2
    gamma = 1 - c * p2
    # guard: δ = ‖1 ⊕ …‖ denominators are ≥ (1 − √c‖p‖√c‖x‖)² > 0 inside the ball
    delta = (1 - 2 * c * xp + c * c * p2 * x2).clamp_min(torch.finfo(x.dtype).eps)
    m_a = (gamma * xa - beta * pa) / delta
    m2 = (x2 + p2 - 2 * xp).clamp_min(0) / delta
    # guard: keep 1 − c‖m‖² positive for points pushed onto the boundary by rounding
    denom = (1 - c * m2).clamp_min(torch.finfo(x.dtype).eps)
    return (2 * a_norm / sqrt_c) * torch.asinh(2 * sqrt_c * m_a / denom)


# ---------------------------------------------------------------------------------------------
# Gromov δ-hyperbolicity
# ---------------------------------------------------------------------------------------------


def gromov_delta(distances: torch.Tensor, *, base_points: torch.Tensor | None = None) -> float:
    r"""Gromov δ of a finite metric space by the four-point condition.

    With Gromov products (x|y)_w = ½(d(x, w) + d(y, w) − d(x, y)),

    .. math::

        \delta = \max_{w,x,y,z} \big[ \min\big((x|z)_w, (z|y)_w\big) - (x|y)_w \big],

    the maximum over the given ``base_points`` (all points when None). For a fixed w the inner
    maximum over z is a (max, min) matrix product, computed in row chunks. Trees have δ = 0.
    """
    d = torch.as_tensor(distances, dtype=torch.float64)
    if d.dim() != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distance matrix must be square, got shape {tuple(d.shape)}")
    n = d.shape[0]
    ws = torch.arange(n) if base_points is None else torch.as_tensor(base_points)
    best = 0.0
    chunk = max(1, 2**22 // max(n * n, 1))
    for w in ws.tolist():
        g = 0.5 * (d[:, w, None] + d[None, :, w] - d)  # (n, n) Gromov products at w
        for start in range(0, n, chunk):
            rows = g[start : start + chunk]  # (r, n): (x|z)_w for x in the chunk
            maxmin = torch.minimum(rows[:, :, None], g[None, :, :]).amax(dim=1)  # (r, n)
            best = max(best, float((maxmin - rows).max()))
    return best


def delta_hyperbolicity(
    data: torch.Tensor | nx.Graph,
    *,
    c: float | None = 1.0,
    num_points: int = 200,
    num_base_points: int | None = 8,
    seed: int = 0,
) -> float:
    """Relative Gromov δ, 2δ / diameter, on a random sample (Khrulkov et al. 2020, sec. 3).

    ``data`` may be
      * an (N, d) tensor of points on the Poincaré ball of curvature ``-c`` (``c=None`` for
        Euclidean points),
      * an (N, N) distance matrix -- pass ``c=None`` and a square symmetric tensor, or
      * a networkx graph, measured by undirected shortest-path length.

    ``num_points`` nodes are sampled without replacement (all when fewer), and δ is maximised
    over ``num_base_points`` base points of the sample (all when None). The result lies in
    [0, 1]: 0 for trees, near 0 for strongly hyperbolic data.
    """
    gen = torch.Generator().manual_seed(seed)
    if isinstance(data, nx.Graph):
        nodes = list(data.nodes)
        if len(nodes) < 2:
            raise ValueError("delta_hyperbolicity needs a graph with at least 2 nodes")
        pick = torch.randperm(len(nodes), generator=gen)[:num_points].tolist()
        und = data.to_undirected(as_view=True)
        sample = [nodes[i] for i in pick]
        d = torch.zeros(len(sample), len(sample), dtype=torch.float64)
        for i, u in enumerate(sample):
            lengths = nx.single_source_shortest_path_length(und, u)
            for j, v in enumerate(sample):
                if v not in lengths:
                    raise ValueError(f"graph is disconnected: no path between {u!r} and {v!r}")
                d[i, j] = lengths[v]
    else:
        t = torch.as_tensor(data)
        if t.dim() != 2:
            raise ValueError(f"expected points (N, d) or distances (N, N), got shape {tuple(t.shape)}")
        pick = torch.randperm(t.shape[0], generator=gen)[:num_points]
        is_matrix = (
            c is None and t.shape[0] == t.shape[1] and torch.allclose(t, t.T) and bool((t.diagonal() == 0).all())
        )
        if is_matrix:
            d = t[pick][:, pick].double()
        else:
            pts = t[pick].double()
            d = torch.cdist(pts, pts) if c is None else pairwise_dist(pts, pts, c=c)
            d.fill_diagonal_(0)
    diameter = float(d.max())
    if diameter == 0:
        return 0.0
    base = None
    if num_base_points is not None and num_base_points < d.shape[0]:
        base = torch.randperm(d.shape[0], generator=gen)[:num_base_points]
    return 2 * gromov_delta(d, base_points=base) / diameter
