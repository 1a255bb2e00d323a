"""Pictures of an embedded hierarchy on the Poincaré disk: PNG, PDF and a self-contained HTML page.

``hyperr1 viz`` draws the output of ``hyperr1 embed`` (any dimension), or the head prototypes of a
Poincaré-head policy (one point per concept token), or a ``hyperr1 train`` run directory (the
warm-started policy beside the final one). Drawing conventions:

* edges are the hierarchy's parent edges drawn as **geodesics**: arcs of the circle through both
  end points that is orthogonal to the boundary (:func:`geodesic_circle`, :func:`geodesic_arc`);
* nodes are coloured by depth; a readable subset of labels is chosen greedily so that no two label
  boxes overlap (:func:`select_labels`);
* ``center=<concept>`` re-centres the disk on that concept by the Möbius isometry x ↦ (−a) ⊕ x
  (:func:`recenter`), which moves a to the origin, so a subtree near the rim becomes legible;
* embeddings of dimension d > 2 are shown through the **tangent PCA at the Einstein midpoint**
  (:func:`tangent_pca`): move the midpoint m to the origin by x ↦ (−m) ⊕ x, take log₀, keep the two
  principal directions, map back with exp₀ (re-centred on a concept: the tangent space at that
  concept, with the directions fitted to its subtree). Its distortion is stated in the figure as
  Spearman's ρ between the hyperbolic distances of a sample of pairs before and after
  (:func:`distance_rank_correlation`), and how well the points arrange the hierarchy at all as ρ
  between distance and path length in the tree (:func:`tree_distance_correlation`).

The math works in float64 on the ball of curvature −c (radius 1/√c); drawings use the unit disk
(points scaled by √c), on which distances are those of the c-ball times √c, so ranks are unchanged.
The HTML page repeats the Möbius map and the arcs in a few lines of inline JavaScript (hover names a
concept and its depth; a click re-centres on it; no network). Figures are drawn from saved results
only (STYLE.md: figure scripts read results and never train); matplotlib runs on the Agg backend.

References: Ungar 2008, "A Gyrovector Space Approach to Hyperbolic Geometry" (Möbius addition, the
Einstein midpoint); Fletcher et al. 2004, "Principal Geodesic Analysis" (tangent PCA); Nickel &
Kiela 2017 (Poincaré embeddings).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import geoopt
import matplotlib
import torch

from hyperr1 import geometry
from hyperr1.hierarchy import Hierarchy, load_hierarchy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

__all__ = [
    "VizConfig",
    "geodesic_circle",
    "geodesic_arc",
    "recenter",
    "einstein_midpoint",
    "tangent_log0",
    "tangent_pca",
    "distance_rank_correlation",
    "tree_distance_correlation",
    "select_labels",
    "Panel",
    "to_panel",
    "load_panels",
    "draw_disk",
    "plot_panels",
    "plot_poincare_disk",
    "write_html",
    "run_viz",
]


@dataclass
class VizConfig:
    """Configuration of ``hyperr1 viz``."""

    input: str = ""  # an `hyperr1 embed` output dir, a policy dir (head prototypes) or a `hyperr1 train` run dir
    compare: str | None = None  # a second embed or policy directory, drawn beside the first
    data: str | None = None  # the hierarchy (dataset name or TSV); None: the `data` in the input's run record
    center: str | None = None  # concept a moved to the origin by x ↦ (−a) ⊕ x; None: the embedding as trained
    out: str = "viz"  # output stem: writes <out>.png, <out>.pdf and <out>.html
    labels: int = 40  # at most this many labels per panel, none overlapping
    seed: int = 0  # seeds the sample of pairs behind the distortion number ρ (dimension > 2)

    def validate(self) -> VizConfig:
        if not self.input:
            raise ValueError("--input is required (an embed output, policy or train run directory)")
        if self.labels < 0:
            raise ValueError(f"labels must be >= 0, got {self.labels}")
        return self


# ---------------------------------------------------------------------------------------------
# the math: geodesics, the Möbius re-centring, the 2-d projection and its distortion
# ---------------------------------------------------------------------------------------------

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


def _lemma(name: str) -> str:
    """The label text: ``hunting_dog.n.01`` → ``hunting dog``; a name not shaped like a WordNet
    synset stays as it is."""
    m = re.fullmatch(r"(.+)\.[a-z]\.\d+", name)
    return m.group(1).replace("_", " ") if m else name


# ---------------------------------------------------------------------------------------------
# inputs → panels
# ---------------------------------------------------------------------------------------------


@dataclass
class Panel:
    """One disk to draw: points (N, 2) on the unit disk, aligned with ``hierarchy.nodes``."""

    points: torch.Tensor  # (N, 2) float64, ‖x‖ < 1
    title: str
    caption: str  # how the points were drawn (exactly, or the projection and its distortion) and the hierarchy fit
    center: str | None = None  # the concept at the origin after re-centring
    highlight: str | None = None  # a concept whose subtree's edges are drawn in colour


def to_panel(
    x: torch.Tensor,
    hierarchy: Hierarchy,
    *,
    c: float,
    title: str,
    center: str | None = None,
    highlight: str | None = None,
    seed: int = 0,
) -> Panel:
    """Points (N, d) on the c-ball → a :class:`Panel` on the unit disk: re-centred on ``center``
    (a concept) first, projected by :func:`tangent_pca` when d > 2 (the caption names it and ρ).
    ``highlight`` (default: ``center`` unless it is a root) names the subtree whose edges are
    drawn in colour; the caption also carries :func:`tree_distance_correlation` of the points."""
    if highlight is not None and highlight not in hierarchy:
        raise ValueError(f"{highlight!r} is not a concept of {hierarchy.name!r}")
    if highlight is None and center in hierarchy and len(hierarchy.descendants(center)) < len(hierarchy) - 1:
        highlight = center  # a proper subtree (a root's would colour everything)
    x = x.detach().double().cpu() * c**0.5  # the unit ball: distances × √c, same ranks
    if x.dim() != 2 or x.shape[0] != len(hierarchy.nodes):
        raise ValueError(f"expected ({len(hierarchy.nodes)}, d) points for {hierarchy.name!r}, got {tuple(x.shape)}")
    if center is not None:
        if center not in hierarchy:
            raise ValueError(f"--center {center!r} is not a concept of {hierarchy.name!r}")
        x = recenter(x, x[hierarchy.index[center]])
    tree_rho = tree_distance_correlation(x, hierarchy, seed=seed)
    fit = f"hierarchy fit: Spearman ρ of distance vs path length = {tree_rho:.3f}"
    if x.shape[1] == 2:
        return Panel(x, title, f"dimension 2, drawn exactly\n{fit}", center, highlight)
    if center is None:
        y, info = tangent_pca(x)
        how = f"tangent PCA at the Einstein midpoint + exp₀ (keeps {info['explained']:.0%} of the second moment)"
        rho = f"Spearman ρ of pairwise distances before/after = {distance_rank_correlation(x, y, seed=seed):.3f}"
    else:  # the directions that spread the centre's subtree (all points when it is a leaf)
        sub = torch.tensor(sorted(hierarchy.index[v] for v in hierarchy.descendants(center) | {center}))
        origin = torch.zeros(x.shape[1], dtype=x.dtype)
        y, info = tangent_pca(x, center=origin, fit=sub if len(sub) >= 3 else None)
        kept = f"keeps {info['explained']:.0%} of its second moment"
        how = f"tangent PCA at {center}, fitted to its subtree, + exp₀ ({kept})"
        rho_sub = distance_rank_correlation(x[sub], y[sub], seed=seed) if len(sub) >= 3 else math.nan
        rho_all = distance_rank_correlation(x, y, seed=seed)
        rho = f"Spearman ρ of pairwise distances before/after = {rho_sub:.3f} in the subtree, {rho_all:.3f} overall"
    caption = f"dim {x.shape[1]} → 2 by {how}\ndistortion: {rho}\n{fit} (in dim {x.shape[1]})"
    return Panel(y, title, caption, center, highlight)


def _record_data(directory: Path) -> str | None:
    """The ``data`` of the nearest run record at or above ``directory`` (up to two levels)."""
    for d in (directory, directory.parent, directory.parent.parent):
        path = d / "config.json"
        if path.is_file():
            record = json.loads(path.read_text())
            if isinstance(record.get("config"), dict) and "data" in record["config"]:
                return record["config"]["data"]
    return None


def _policy_points(directory: Path, hierarchy: Hierarchy) -> tuple[torch.Tensor, float, int]:
    """The Poincaré head's prototypes of the concepts, (N, k), their c and the head dimension k."""
    from hyperr1.model import HyperR1ForConditionalGeneration
    from hyperr1.tokenizer import concept_token_ids, load_tokenizer

    model = HyperR1ForConditionalGeneration.from_pretrained(directory)
    if model.config.head != "poincare":
        raise ValueError(f"{directory} holds a {model.config.head}-head policy; viz draws Poincaré heads")
    for d in (directory, *(up / "tokenizer" for up in (directory, directory.parent, directory.parent.parent))):
        if (d / "tokenizer.json").is_file():
            tokenizer = load_tokenizer(d)
            break
    else:
        raise FileNotFoundError(f"no tokenizer in {directory} or a tokenizer/ beside it")
    ids = concept_token_ids(tokenizer, hierarchy)
    protos = model.head.prototypes.detach()[ids]  # (N, k)
    return protos, float(model.head.ball.c.detach()), model.config.head_dim


def _sources(path: Path) -> list[tuple[Path, str]]:
    """(directory, panel title) of what ``path`` holds: a train run is its warm start and policy."""
    if (path / "warm_start" / "model").is_dir() and (path / "policy").is_dir():
        return [(path / "warm_start" / "model", "after the warm start"), (path / "policy", "after GRPO")]
    if (path / "embedding.safetensors").is_file():
        return [(path, path.name)]
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return [(path, path.name)]
    raise FileNotFoundError(f"{path} is not an embed output, policy or train run directory")


def load_panels(cfg: VizConfig) -> tuple[list[Panel], Hierarchy]:
    """The panels of ``cfg`` (one per input directory; two for a train run) and the hierarchy."""
    from hyperr1.embeddings import load_embedding

    paths = [Path(cfg.input)] + ([Path(cfg.compare)] if cfg.compare else [])
    sources = [s for p in paths for s in _sources(p)]
    data = cfg.data or _record_data(paths[0])
    if data is None:
        raise ValueError(f"no run record names the hierarchy of {paths[0]}; pass --data")
    h = load_hierarchy(data)
    panels = []
    for directory, title in sources:
        if (directory / "embedding.safetensors").is_file():
            emb, nodes, meta = load_embedding(directory / "embedding.safetensors")
            if meta.get("manifold", "poincare") != "poincare":
                raise ValueError(f"{directory} holds a {meta['manifold']} embedding; viz draws the Poincaré ball")
            if nodes != h.nodes:
                raise ValueError(f"{directory} embeds other nodes than the hierarchy {data!r}")
            c, label = float(meta["c"]), f"{title}: Poincaré embedding, dim {emb.shape[1]}"
        else:
            emb, c, k = _policy_points(directory, h)
            label = f"{title}: head prototypes, dim {k}"
        panels.append(to_panel(emb, h, c=c, title=label, center=cfg.center, seed=cfg.seed))
    return panels, h


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------

_FONT_PT = 6.5  # label font size
_CHAR_EM = 0.6  # a DejaVu Sans character is about 0.6 em wide on average (an overestimate keeps boxes apart)
_DISK_IN = 6.0  # side of one disk's axes in inches; the axes spans ±1.05 data units
_PER_PT = 2.1 / (_DISK_IN * 72)  # data units per typographic point


def _label_order(points: torch.Tensor, hierarchy: Hierarchy, centred: bool) -> list[int]:
    """By depth, then by number of descendants (largest first); on a re-centred disk, nearest the centre first."""
    if centred:
        d = geometry.dist(torch.zeros_like(points), points, c=1.0)
        return d.argsort().tolist()
    key = [(hierarchy.depth(v), -len(hierarchy.descendants(v)), v) for v in hierarchy.nodes]
    return sorted(range(len(key)), key=key.__getitem__)


def draw_disk(ax, panel: Panel, hierarchy: Hierarchy, *, labels: int = 40, cmap: str = "viridis"):
    """Draw one panel on a square ``ax`` of side ``_DISK_IN`` inches: the boundary, geodesic edges
    (those of ``panel.highlight``'s subtree in red), nodes coloured by depth, and labels chosen by
    :func:`select_labels`. Returns the scatter (for a colour bar)."""
    pts = panel.points
    idx = hierarchy.index
    depth = torch.tensor([hierarchy.depth(v) for v in hierarchy.nodes], dtype=torch.float64)
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="black", lw=0.8))
    edges = hierarchy.edges
    if edges:
        child = torch.tensor([idx[u] for u, _ in edges])
        parent = torch.tensor([idx[p] for _, p in edges])
        arcs = geodesic_arc(pts[child], pts[parent], num=40).numpy()  # (E, 40, 2)
        sub = hierarchy.descendants(panel.highlight) if panel.highlight else set()
        hot = torch.tensor([u in sub for u, _ in edges])
        ax.add_collection(LineCollection(arcs[~hot.numpy()], colors="0.45", linewidths=0.35, alpha=0.55))
        if hot.any():
            ax.add_collection(LineCollection(arcs[hot.numpy()], colors="tab:red", linewidths=0.6))
    size = (22 * 0.72**depth).clamp_min(1.5)  # deeper nodes are smaller
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=depth, cmap=cmap, s=size, zorder=2, linewidths=0)
    if panel.center is not None:
        ax.scatter([0], [0], s=60, facecolors="none", edgecolors="red", linewidths=1.0, zorder=3)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    texts = [_lemma(v) for v in hierarchy.nodes]
    order = _label_order(pts, hierarchy, panel.center is not None)
    chosen = select_labels(
        pts,
        texts,
        order,
        max_labels=labels,
        char_width=_CHAR_EM * _FONT_PT * _PER_PT,
        height=1.25 * _FONT_PT * _PER_PT,
        offset=2.5 * _PER_PT,
    )
    for i, (x0, y0, x1, y1), side in chosen:
        ax.text(
            x0 + 1.25 * _PER_PT if side == "right" else x1 - 1.25 * _PER_PT,  # the box's margin is offset / 2
            (y0 + y1) / 2,
            texts[i],
            fontsize=_FONT_PT,
            ha="left" if side == "right" else "right",
            va="center",
            zorder=4,
            bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.7),
        )
    ax.set_title(panel.title, fontsize=9)
    ax.text(0, -1.07, panel.caption, ha="center", va="top", fontsize=6.5)
    return sc


def plot_panels(panels: list[Panel], hierarchy: Hierarchy, path: str | Path, *, labels: int = 40, title=None) -> Path:
    """The panels side by side with one depth colour bar; writes ``path`` (PNG) and the PDF beside it.

    The axes are placed by hand (square, ``_DISK_IN`` inches), so the label boxes of
    :func:`select_labels` are measured in the same data units as the drawing."""
    n, gap, top = len(panels), 0.25, 0.75 if title else 0.4
    width, height = n * (_DISK_IN + gap) + 1.0, _DISK_IN + top + 0.6
    fig = plt.figure(figsize=(width, height))
    sc = None
    for k, panel in enumerate(panels):
        ax = fig.add_axes([(gap + k * (_DISK_IN + gap)) / width, 0.6 / height, _DISK_IN / width, _DISK_IN / height])
        sc = draw_disk(ax, panel, hierarchy, labels=labels)
    cax = fig.add_axes([(n * (_DISK_IN + gap) + 0.15) / width, 1.5 / height, 0.14 / width, 3.5 / height])
    fig.colorbar(sc, cax=cax, label="depth in the hierarchy")
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.15 / height, va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=170)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path


def plot_poincare_disk(
    embedding: torch.Tensor,
    hierarchy: Hierarchy,
    path: str | Path,
    *,
    c: float = 1.0,
    center: str | None = None,
    labels: int = 40,
    title: str | None = None,
) -> Path:
    """Draw an embedding (N, d) of ``hierarchy`` on the Poincaré disk of radius 1/√c (projected when
    d > 2, re-centred on ``center`` when given) and save it as PNG, and PDF alongside."""
    if embedding.dim() != 2:
        raise ValueError(f"expected an (N, d) embedding, got {tuple(embedding.shape)}")
    if embedding.shape[0] != len(hierarchy.nodes):
        raise ValueError(f"{embedding.shape[0]} embedding rows for {len(hierarchy.nodes)} nodes")
    name = title or f"{hierarchy.name}: {len(hierarchy.nodes)} nodes on the Poincaré disk"
    panel = to_panel(embedding, hierarchy, c=c, title=name, center=center)
    return plot_panels([panel], hierarchy, path, labels=labels)


# ---------------------------------------------------------------------------------------------
# the interactive page
# ---------------------------------------------------------------------------------------------

_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:13px sans-serif;margin:12px;color:#222}
.panel{display:inline-block;vertical-align:top;margin-right:16px}
.panel p{margin:2px 0;max-width:600px;white-space:pre-line}
svg{background:#fff}
.pt{stroke:none;cursor:pointer}
.lab{font-size:10px;pointer-events:none;paint-order:stroke;stroke:#fff;stroke-width:3px}
#tip{position:fixed;display:none;background:#ffe;border:1px solid #888;padding:2px 5px;pointer-events:none}
</style></head><body>
<h3>__TITLE__</h3>
<p>Hover a point for its concept and depth; click it to re-centre the disk there by the Möbius map
x &#8614; (&minus;a) &oplus; x; click the background to go back.</p>
<div id="panels"></div><div id="tip"></div>
<script>
const D = __DATA__;
const S = 290, NS = "http://www.w3.org/2000/svg", tip = document.getElementById("tip");
function madd(a, x) {  // (-a) (+) x on the unit disk (c = 1)
  const ax = -a[0], ay = -a[1], p = ax * x[0] + ay * x[1], a2 = ax * ax + ay * ay, x2 = x[0] * x[0] + x[1] * x[1];
  const f = 1 + 2 * p + x2, g = 1 - a2, den = 1 + 2 * p + a2 * x2;
  return [(f * ax + g * x[0]) / den, (f * ay + g * x[1]) / den];
}
function arc(u, v) {  // SVG path of the geodesic: the circle through u, v orthogonal to the boundary
  const det = u[0] * v[1] - u[1] * v[0], X = q => q[0] * S, Y = q => -q[1] * S;
  if (Math.abs(det) < 1e-9) return `M${X(u)},${Y(u)}L${X(v)},${Y(v)}`;
  const bu = (u[0] * u[0] + u[1] * u[1] + 1) / 2, bv = (v[0] * v[0] + v[1] * v[1] + 1) / 2;
  const m = [(bu * v[1] - bv * u[1]) / det, (u[0] * bv - v[0] * bu) / det], r = Math.hypot(u[0] - m[0], u[1] - m[1]);
  const sweep = (u[0] - m[0]) * (v[1] - m[1]) - (u[1] - m[1]) * (v[0] - m[0]) > 0 ? 0 : 1;  // y is flipped on screen
  return `M${X(u)},${Y(u)}A${r * S},${r * S} 0 0 ${sweep} ${X(v)},${Y(v)}`;
}
function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  parent.appendChild(e);
  return e;
}
function draw(P) {
  const pts = P.center < 0 ? P.x : P.x.map(q => madd(P.x[P.center], q)), svg = P.svg;
  svg.replaceChildren();
  el("circle", {cx: 0, cy: 0, r: S, fill: "#fff", stroke: "#000", class: "bg"}, svg);
  el("path", {d: D.edges.map(e => arc(pts[e[0]], pts[e[1]])).join(""), fill: "none", stroke: "#888",
              "stroke-width": 0.5, "stroke-opacity": 0.7}, svg);
  const norm = pts.map(q => Math.hypot(q[0], q[1]));
  const order = pts.map((q, i) => i).sort((i, j) => norm[i] - norm[j] || D.depth[i] - D.depth[j]);
  for (const i of order.slice().reverse())
    el("circle", {cx: pts[i][0] * S, cy: -pts[i][1] * S, r: Math.max(1.2, 4.5 * Math.pow(0.8, D.depth[i])),
                  fill: D.color[i], class: "pt", "data-i": i}, svg);
  const boxes = [];  // greedy labels, no two boxes overlapping: Python's order, then nearest the centre first
  for (const i of P.center < 0 ? P.order : order) {
    if (boxes.length >= D.labels) break;
    const w = 5.8 * D.text[i].length, y = -pts[i][1] * S, right = pts[i][0] * S + 4 + w < S + 10;
    const x = right ? pts[i][0] * S + 4 : pts[i][0] * S - 4 - w, b = [x - 1, y - 6, x + w + 1, y + 6];
    if (boxes.some(c => b[0] < c[2] && c[0] < b[2] && b[1] < c[3] && c[1] < b[3])) continue;
    boxes.push(b);
    el("text", {x: x, y: y + 3.5, class: "lab"}, svg).textContent = D.text[i];
  }
  P.status.textContent = "centre: " + (P.center < 0 ? P.center0 : D.names[P.center]);
}
function hover(ev) {
  const i = ev.target.getAttribute("data-i");
  if (i === null) { tip.style.display = "none"; return; }
  tip.textContent = D.names[i] + " (depth " + D.depth[i] + ")";
  tip.style.left = ev.clientX + 12 + "px"; tip.style.top = ev.clientY + 12 + "px"; tip.style.display = "block";
}
const panels = D.panels.map(p => {
  const div = document.createElement("div"); div.className = "panel";
  document.getElementById("panels").appendChild(div);
  div.innerHTML = "<b></b><p class='cap'></p><p class='status'></p>";
  div.querySelector("b").textContent = p.title; div.querySelector(".cap").textContent = p.caption;
  const W = 2 * S + 20, svg = el("svg", {width: W, height: W, viewBox: `${-S - 10} ${-S - 10} ${W} ${W}`}, div);
  const P = {x: p.x, order: p.order, center: -1, center0: p.center || "as trained", svg: svg,
             status: div.querySelector(".status")};
  svg.addEventListener("mouseover", hover);
  svg.addEventListener("mouseout", () => { tip.style.display = "none"; });
  svg.addEventListener("click", ev => {
    const i = ev.target.getAttribute("data-i");
    P.center = i === null ? -1 : +i; draw(P);
  });
  draw(P);
  return P;
});
// test and link hooks: #hover=<concept>, #click=<concept> (first panel)
for (const kv of location.hash.slice(1).split("&")) {
  const [k, v] = kv.split("="), i = D.names.indexOf(decodeURIComponent(v || ""));
  if (i < 0) continue;
  const c = panels[0].svg.querySelector(`circle[data-i="${i}"]`), r = c.getBoundingClientRect();
  const opts = {bubbles: true, clientX: r.x + r.width / 2, clientY: r.y + r.height / 2};
  c.dispatchEvent(new MouseEvent(k === "click" ? "click" : "mouseover", opts));
  if (k === "click")  // the click redrew the disk: hover the concept's new point
    panels[0].svg.querySelector(`circle[data-i="${i}"]`).dispatchEvent(new MouseEvent("mouseover", opts));
}
</script></body></html>
"""


def write_html(panels: list[Panel], hierarchy: Hierarchy, path: str | Path, *, title: str, labels: int = 40) -> Path:
    """A self-contained page (inline SVG drawn by inline JavaScript, no external resources): one
    disk per panel, hover names a concept and its depth, a click re-centres the disk on it."""
    depth = [hierarchy.depth(v) for v in hierarchy.nodes]
    cmap, top = matplotlib.colormaps["viridis"], max(max(depth), 1)
    idx = hierarchy.index
    data = {
        "names": hierarchy.nodes,
        "text": [_lemma(v) for v in hierarchy.nodes],
        "depth": depth,
        "color": [matplotlib.colors.to_hex(cmap(d / top)) for d in depth],
        "edges": [[idx[u], idx[p]] for u, p in hierarchy.edges],
        "labels": labels,
        "panels": [
            {
                "title": p.title,
                "caption": p.caption,
                "center": p.center,
                "x": p.points.tolist(),
                "order": _label_order(p.points, hierarchy, p.center is not None),
            }
            for p in panels
        ],
    }
    page = _HTML.replace("__TITLE__", _escape(title)).replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def run_viz(cfg: VizConfig) -> dict[str, str]:
    """``hyperr1 viz``: the panels of ``cfg`` as ``<out>.png``, ``<out>.pdf`` and ``<out>.html``."""
    cfg.validate()
    panels, h = load_panels(cfg)
    centred = f", re-centred on {cfg.center}" if cfg.center else ""
    inputs = Path(cfg.input).name + (f" vs {Path(cfg.compare).name}" if cfg.compare else "")
    title = f"{h.name} ({len(h.nodes)} concepts) from {inputs} on the Poincaré disk{centred}"
    out = Path(cfg.out)
    png = plot_panels(panels, h, out.with_name(out.name + ".png"), labels=cfg.labels, title=title)
    html = write_html(panels, h, out.with_name(out.name + ".html"), title=title, labels=cfg.labels)
    return {"png": str(png), "pdf": str(png.with_suffix(".pdf")), "html": str(html)}
