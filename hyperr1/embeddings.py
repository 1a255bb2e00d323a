"""Poincaré embeddings of a hierarchy's transitive closure (Nickel & Kiela 2017).

Training data is every closure pair (u, v) with v a strict ancestor of u. For each pair the loss
is the softmax cross-entropy of eq. (6) of the paper,

    L(u, v) = −log( e^{−d(u, v)} / Σ_{v' ∈ N(u) ∪ {v}} e^{−d(u, v')} ),

with N(u) = K negatives drawn uniformly from the nodes v' for which (u, v') is not a closure pair
(v' ≠ u). Draws that hit a positive are masked out of the softmax instead of re-drawn, which keeps
the sampler a single vectorised ``randint``. The first ``burnin_epochs`` run at
``lr · burnin_multiplier`` (the paper's burn-in). ``manifold="euclidean"`` trains the same model
with Euclidean distance as the baseline. Riemannian SGD updates only the rows a batch touches
(:func:`sparse_sgd_step`), so an epoch costs O(P·K·d) for P pairs whatever the number of nodes;
it is the same update as geoopt's dense ``RiemannianSGD``, which Adam (and ``negatives=0``) use.
``kernel="auto"`` runs that step as one fused C pass per pair on the CPU
(:class:`hyperr1.native.EmbedStep`; the same numbers up to the order of sums).

Reconstruction evaluation (sec. 4.1): for every node u with at least one ancestor, each true
ancestor v is ranked by d(u, ·) among v itself and all of u's *non-neighbours* (nodes that are
neither u nor an ancestor of u; u itself is excluded). We report the mean rank over all closure
pairs and the mean over nodes of the average precision (MAP). This is the directed convention of
the paper's ``mammal_closure`` data (hyponym → hypernym pairs). It runs in row chunks of float64
distances (O(chunk·n) memory; about 1.2 GB peak for the 82,115 WordNet nouns) without sorting rows.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import geoopt
import networkx as nx
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hyperr1 import geometry, native
from hyperr1.hierarchy import DEBIAN_WORDNET_DIR, Hierarchy, load_hierarchy
from hyperr1.optim import riemannian_optimizer
from hyperr1.runs import write_json, write_record

__all__ = [
    "MANIFOLDS",
    "EMBED_KERNELS",
    "resolve_embed_kernel",
    "EmbedConfig",
    "ClosureIndex",
    "INIT_SCHEMES",
    "MIN_BOUNDARY_EPS",
    "hierarchy_init",
    "make_embedding",
    "paired_distance",
    "all_distances",
    "draw_negatives",
    "sample_negatives",
    "sampled_softmax_loss",
    "sampled_softmax_grad",
    "nickel_kiela_loss",
    "sparse_sgd_step",
    "reconstruction",
    "train_embedding",
    "save_training_state",
    "load_training_state",
    "load_dataset",
    "learning_rate",
    "seconds_to_map",
    "save_embedding",
    "load_embedding",
    "run_embed",
]

MANIFOLDS = ("poincare", "euclidean")
INIT_SCHEMES = ("uniform", "hierarchy")
EMBED_KERNELS = ("auto", "eager", "native")
"""Kernels of the sparse Riemannian SGD step: ``"eager"`` (:func:`sparse_sgd_step`, PyTorch ops on
any device), ``"native"`` (:class:`hyperr1.native.EmbedStep`, one fused C pass per pair, float64 on
the CPU; the same numbers up to the order of floating-point sums, about 4× faster on the 82,115
WordNet nouns) and ``"auto"`` (native on the CPU where it builds, with a warning where it does not)."""


MIN_BOUNDARY_EPS = 1e-15
"""Smallest boundary margin ε of the float64 tables: 1 − 1e-15 is still below 1 in float64, and the
conformal factor 1 − ‖x‖² ≈ 2ε is then known to about 10% (rounding of ‖x‖² is 1.1e-16)."""


@dataclass
class EmbedConfig:
    """Configuration of ``hyperr1 embed``; every field is saved with the run."""

    data: str = "mammals"  # dataset name (hyperr1.hierarchy.KNOWN_DATASETS), "wordnet:<synset>" or a TSV path
    wordnet_dir: str = DEBIAN_WORDNET_DIR  # WordNet 3.0 dict dir read by data="wordnet:<synset>"
    wordnet_instances: bool = True  # "wordnet:<synset>" also follows instance hyponyms (82,115 nouns)
    manifold: str = "poincare"  # "poincare" (ball of curvature −c) or "euclidean"
    dim: int = 5  # embedding dimension d
    c: float = 1.0  # curvature parameter c (ball of radius 1/√c)
    epochs: int = 600  # passes over the closure pairs
    batch_size: int = 64  # closure pairs per optimizer step (paper: 10)
    negatives: int = 50  # K = |N(u)| negatives per positive pair (paper: 50); 0 = all non-neighbours
    lr: float = 2.0  # learning rate η after burn-in (the loss is a batch mean: η/batch per pair)
    burnin_epochs: int = 20  # epochs at reduced learning rate (paper: 10)
    burnin_multiplier: float = 0.1  # η_burnin / η (paper: 1/10)
    lr_decay: str = "none"  # "linear" (to 0 at the last epoch) or "none" after burn-in
    optimizer: str = "sgd"  # "sgd" (RiemannianSGD, the paper's) or "adam" (RiemannianAdam)
    boundary_eps: float | None = 1e-10  # points stay within (1 − ε)/√c; None: geoopt's 1e-5 (float64)
    init: float = 1e-3  # init_scheme "uniform": coordinates uniform in [−init, init] (paper: 1e-3)
    init_scheme: str = "uniform"  # "uniform" (the paper's) or "hierarchy" (hierarchy_init: radius ∝ depth)
    init_level: float = 1.8  # "hierarchy": a, hyperbolic distance from the origin per level of depth
    init_spread: float = 2.0  # "hierarchy": s₀, tangent offset of a depth-1 node from its parent's direction
    eval_every: int = 10  # evaluate reconstruction every this many epochs (0: only at the end)
    eval_sample: int | None = 2000  # periodic evaluations rank this many fixed random nodes (None: all); last: all
    max_seconds: float | None = None  # stop after the epoch in which training time passes this budget
    target_map: float | None = None  # stop early once MAP reaches this value
    kernel: str = "auto"  # Riemannian SGD step: "native" (C, float64 CPU), "eager" (PyTorch ops) or "auto"
    seed: int = 0  # seeds torch for initialisation and negative sampling
    out: str | None = None  # run directory; None writes nothing

    def validate(self) -> EmbedConfig:
        if self.manifold not in MANIFOLDS:
            raise ValueError(f"unknown manifold {self.manifold!r}; known: {list(MANIFOLDS)}")
        if self.kernel not in EMBED_KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; known: {list(EMBED_KERNELS)}")
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"unknown init_scheme {self.init_scheme!r}; known: {list(INIT_SCHEMES)}")
        if self.init_scheme == "hierarchy" and self.manifold != "poincare":
            raise ValueError("init_scheme='hierarchy' places nodes by hyperbolic radius; it needs manifold='poincare'")
        if self.init_level <= 0 or self.init_spread <= 0:
            raise ValueError(f"init_level and init_spread must be > 0, got {self.init_level}, {self.init_spread}")
        if self.lr_decay not in ("linear", "none"):
            raise ValueError(f"unknown lr_decay {self.lr_decay!r}; known: ['linear', 'none']")
        if self.negatives < 0:
            raise ValueError(f"negatives must be >= 0 (0: all non-neighbours), got {self.negatives}")
        for name in ("dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.c <= 0 or self.burnin_multiplier <= 0:
            raise ValueError("lr, c and burnin_multiplier must be > 0")
        if self.burnin_epochs < 0 or self.eval_every < 0:
            raise ValueError("burnin_epochs and eval_every must be >= 0")
        if self.eval_sample is not None and self.eval_sample < 1:
            raise ValueError(f"eval_sample must be >= 1 (or None), got {self.eval_sample}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0 (or None), got {self.max_seconds}")
        if self.boundary_eps is not None and not MIN_BOUNDARY_EPS <= self.boundary_eps < 1:
            raise ValueError(
                f"boundary_eps must be in [{MIN_BOUNDARY_EPS:g}, 1) (float64 rounds 1 − ε to 1 below that), "
                f"got {self.boundary_eps}"
            )
        return self


# --------------------------------------------------------------------------------------------
# closure index: positives as sorted integer keys u·n + v for vectorised membership tests
# --------------------------------------------------------------------------------------------


@dataclass
class ClosureIndex:
    """Integer view of a hierarchy's closure: ``pairs`` (P, 2) of (u, ancestor) ids and sorted keys."""

    nodes: list[str]
    pairs: torch.Tensor  # (P, 2) long
    keys: torch.Tensor = field(init=False)  # (P,) sorted u·n + v

    def __post_init__(self):
        n = len(self.nodes)
        self.keys = torch.sort(self.pairs[:, 0] * n + self.pairs[:, 1]).values

    @classmethod
    def from_hierarchy(cls, h: Hierarchy) -> ClosureIndex:
        pairs = [(h.index[u], h.index[v]) for u, v in h.closure_pairs()]
        return cls(list(h.nodes), torch.tensor(pairs, dtype=torch.long).reshape(-1, 2))

    def is_positive(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Elementwise: is (u, v) a closure pair?"""
        if self.keys.numel() == 0:
            return torch.zeros_like(u, dtype=torch.bool)
        key = u * len(self.nodes) + v
        pos = torch.searchsorted(self.keys, key).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == key


# --------------------------------------------------------------------------------------------
# model, loss and evaluation
# --------------------------------------------------------------------------------------------


def _longest_chain_parent(h: Hierarchy, x: str) -> str | None:
    """The parent of ``x`` with the most ancestors (ties: the last name); None for a root."""
    return max(h.parents(x), key=lambda p: (len(h.ancestors(p)), p), default=None)


def hierarchy_init(
    h: Hierarchy, dim: int, *, level: float, spread: float, c: float, max_norm: float, generator: torch.Generator
) -> torch.Tensor:
    """A (n, dim) float64 placement of ``h`` in the ball of curvature −c, built level by level.

    A node at depth k (shortest path to a root) sits at hyperbolic distance ρ = a·k from the
    origin, a = ``level``, in the direction of one parent plus a random tangent offset of length
    s_k = s₀·e^{−a(k−1)/2} (s₀ = ``spread``); the roots sit at the origin (with more than one root,
    at radius a in random directions, and every depth one level further). A node with several
    parents follows the one with the most ancestors: its longest chain of ancestors then ranks
    well, where the parents' mean direction put it between the branches, far from all of them
    (on the nouns at dim 10 that halved the construction's mean rank, 286 → 142, at the same MAP).
    Depths past the boundary margin, a·k > log((2 − ε)/ε) for boundary_eps ε (about 23.7 at
    ε = 1e-10, 32.9 at 1e-14), are clipped onto the margin's sphere with a warning: there the
    parent–child ranking of the deepest levels is lost (on the nouns at dim 5, a = 2.8, ε = 1e-10
    clips depths ≥ 9; ε = 1e-14 keeps every depth up to 11).

    Why e^{−a/2} per level: for points at radii ρ_u, ρ_w ≫ 1 with angle θ between them,
    d(u, w) ≈ ρ_u + ρ_w + 2 log sin(θ/2), while u's root ancestor is at d(u, root) = ρ_u. The root
    ranks above a non-ancestor w only if sin(θ/2) > e^{−ρ_w/2}; two branches that part at depth
    k have θ ≈ s_k, so the offset may shrink by at most e^{−a/2} per level, and shrinking it faster
    lets a branch's subtree spill into its siblings'. This is the spirit of Sarkar's (2011)
    construction as used by Sala et al. (2018), with random directions in place of a spherical code
    and ranking (MAP), not distortion, as the aim. On the 82,115 WordNet nouns at dim 10 it gives a
    reconstruction MAP near 0.9 before any training, with a poor mean rank (the ancestors of a
    node with two parents that lie on the other parent's chain rank far down);
    :func:`train_embedding` refines it.
    """
    n = len(h.nodes)
    sqrt_c = math.sqrt(c)
    directions = torch.zeros(n, dim, dtype=torch.float64)
    radius = torch.zeros(n, dtype=torch.float64)  # hyperbolic distance from the origin
    shift = 1 if len(h.roots) > 1 else 0
    # parents before children: topological generations of the child → parent graph, reversed
    generations = list(nx.topological_generations(h.graph.reverse(copy=False)))
    for generation in generations:
        rows = torch.tensor(sorted(h.index[x] for x in generation))
        parent = [_longest_chain_parent(h, h.nodes[i]) for i in rows.tolist()]
        depth = torch.tensor([h.depth(h.nodes[i]) + shift for i in rows.tolist()], dtype=torch.float64)
        base = torch.zeros(len(rows), dim, dtype=torch.float64)
        has = torch.tensor([p is not None for p in parent], dtype=torch.bool)
        if has.any():
            base[has] = directions[[h.index[p] for p in parent if p is not None]]
        noise = torch.randn(len(rows), dim, generator=generator, dtype=torch.float64)
        noise = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-300)
        offset = spread * torch.exp(-level * (depth - 1).clamp_min(0) / 2)
        v = torch.where(base.norm(dim=1, keepdim=True) > 0, base + offset[:, None] * noise, noise)
        directions[rows] = v / v.norm(dim=1, keepdim=True)
        radius[rows] = level * depth
    norm = torch.tanh(sqrt_c * radius / 2) / sqrt_c
    clipped = int((norm > max_norm).sum())
    if clipped:
        cap = 2 * math.atanh(min(sqrt_c * max_norm, 1 - 2**-53)) / sqrt_c
        warnings.warn(
            f"hierarchy_init: {clipped} of {n} nodes (radius a·depth > {cap:.1f}, from depth "
            f"{math.ceil(cap / level)}) sit on the boundary margin, where their subtrees collapse onto one "
            "sphere; a smaller boundary_eps or init_level keeps them apart",
            stacklevel=2,
        )
    return directions * norm.clamp_max(max_norm)[:, None]


def make_embedding(num: int, cfg: EmbedConfig, hierarchy: Hierarchy | None = None) -> geoopt.ManifoldParameter:
    """A (num, dim) table on the chosen manifold: uniform in [−init, init]^dim, or
    :func:`hierarchy_init` of ``hierarchy`` (seeded by ``cfg.seed``) when ``cfg.init_scheme == "hierarchy"``."""
    if cfg.manifold == "poincare":
        manifold = geometry.ball(cfg.c, boundary_eps=cfg.boundary_eps)
    else:
        manifold = geoopt.Euclidean()
    if cfg.init_scheme == "hierarchy":
        if hierarchy is None or len(hierarchy.nodes) != num:
            raise ValueError("init_scheme='hierarchy' needs the hierarchy whose nodes the table embeds")
        gen = torch.Generator().manual_seed(cfg.seed)
        max_norm = float(manifold.max_norm(torch.float64))
        data = hierarchy_init(
            hierarchy, cfg.dim, level=cfg.init_level, spread=cfg.init_spread, c=cfg.c, max_norm=max_norm, generator=gen
        )
    else:
        data = torch.empty(num, cfg.dim, dtype=torch.float64).uniform_(-cfg.init, cfg.init)
    return geoopt.ManifoldParameter(manifold.projx(data), manifold=manifold)


def paired_distance(x: torch.Tensor, y: torch.Tensor, *, manifold: str, c: float) -> torch.Tensor:
    """d(x, y) over the last dimension for either manifold."""
    if manifold == "poincare":
        return geometry.dist(x, y, c=c)
    # guard: √ has an infinite derivative at 0
    return (x - y).pow(2).sum(-1).clamp_min(torch.finfo(x.dtype).eps).sqrt()


def all_distances(emb: torch.Tensor, rows: torch.Tensor, *, manifold: str, c: float) -> torch.Tensor:
    """(len(rows), n) distances from the embeddings of ``rows`` to every node."""
    x = emb[rows]
    if manifold == "poincare":
        return geometry.pairwise_dist(x, emb, c=c)
    return torch.cdist(x, emb)


def draw_negatives(num_nodes: int, batch: int, negatives: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, K) uniform node ids from ``generator``: the draws of every kernel of the SGD step."""
    return torch.randint(0, num_nodes, (batch, negatives), generator=generator)


def sample_negatives(
    u: torch.Tensor, index: ClosureIndex, *, negatives: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """K uniform draws per anchor, (B, K), and the mask of draws that are not in N(u) (u or an ancestor)."""
    neg = draw_negatives(len(index.nodes), u.shape[0], negatives, generator).to(u.device)  # (B, K)
    invalid = index.is_positive(u[:, None].expand_as(neg), neg) | (neg == u[:, None])  # (B, K)
    return neg, invalid


def sampled_softmax_loss(
    x_u: torch.Tensor, x_cand: torch.Tensor, invalid: torch.Tensor, *, manifold: str, c: float
) -> torch.Tensor:
    """Batch mean of eq. (6): ``x_u`` (B, d) anchors, ``x_cand`` (B, 1+K, d) with the ancestor first,
    ``invalid`` (B, K) masks negatives that are not in N(u)."""
    d = paired_distance(x_u[:, None, :], x_cand, manifold=manifold, c=c)  # (B, 1+K)
    logits = (-d).masked_fill(F.pad(invalid, (1, 0), value=False), -math.inf)
    return F.cross_entropy(logits, torch.zeros(x_u.shape[0], dtype=torch.long, device=x_u.device))


def nickel_kiela_loss(
    emb: torch.Tensor,
    pairs: torch.Tensor,
    index: ClosureIndex,
    *,
    negatives: int,
    manifold: str,
    c: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Mean of eq. (6) over a batch of closure pairs (B, 2), with K uniform negatives each."""
    u, v = pairs[:, 0], pairs[:, 1]  # (B,)
    if negatives == 0:  # every node is a candidate: the exact normaliser over all of N(u)
        return _full_softmax_loss(emb, u, v, index, manifold=manifold, c=c)
    neg, invalid = sample_negatives(u, index, negatives=negatives, generator=generator)
    cand = torch.cat([v[:, None], neg], dim=1)  # (B, 1+K): the positive first
    return sampled_softmax_loss(emb[u], emb[cand], invalid, manifold=manifold, c=c)


def _full_softmax_loss(emb, u, v, index: ClosureIndex, *, manifold: str, c: float) -> torch.Tensor:
    """Eq. (6) with N(u) = all non-neighbours of u: one (B, n) distance matrix per batch."""
    n = emb.shape[0]
    d = all_distances(emb, u, manifold=manifold, c=c)  # (B, n)
    everyone = torch.arange(n, device=u.device).expand(len(u), n)  # (B, n)
    invalid = index.is_positive(u[:, None].expand(-1, n), everyone) | (everyone == u[:, None])
    invalid[torch.arange(len(u)), v] = False  # the positive itself stays in the softmax
    logits = (-d).masked_fill(invalid, -math.inf)
    return F.cross_entropy(logits, v)


def sampled_softmax_grad(
    x_u: torch.Tensor, x_cand: torch.Tensor, invalid: torch.Tensor, *, manifold: str, c: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sampled_softmax_loss` and its Euclidean gradients (loss, ∂/∂x_u (B, d), ∂/∂x_cand (B, 1+K, d)),
    in closed form: the same numbers as autograd at about half the cost of building the graph.

    With p the softmax over the candidates, ∂L/∂d_j = (1[j = 0] − p_j)/B. On the ball
    d = arcosh(1 + 2w)/√c with w = c‖x − y‖²/(αβ), α = 1 − c‖x‖², β = 1 − c‖y‖², so
    ∂d/∂w = 1/√(c(w + w²)), ∂w/∂x = 2c/(αβ)·((x − y) + wβ·x), ∂w/∂y = 2c/(αβ)·((y − x) + wα·y)
    (Nickel & Kiela 2017, eq. 4). In Euclidean space ∂d/∂x = (x − y)/d.
    """
    x = x_u[:, None, :]  # (B, 1, d)
    diff = x - x_cand  # (B, 1+K, d)
    sq = diff.pow(2).sum(-1)  # (B, 1+K) ‖x − y‖²
    floor = torch.finfo(x.dtype).eps
    if manifold == "poincare":
        # guard: conformal factors of points outside the ball (invalid input) stay positive, as in geometry.dist
        alpha = (1 - c * x.pow(2).sum(-1)).clamp_min(floor)  # (B, 1)
        beta = (1 - c * x_cand.pow(2).sum(-1)).clamp_min(floor)  # (B, 1+K)
        w_raw = c * sq / (alpha * beta)
        # guard: as in geometry.dist, w is floored at ε (∂d/∂w is infinite at w = 0); no gradient through the floor
        w = w_raw.clamp_min(floor)
        root = torch.sqrt(w + w * w)
        d = torch.log1p(2 * (w + root)) / math.sqrt(c)  # (B, 1+K)
    else:
        d = sq.clamp_min(floor).sqrt()  # guard: √ has an infinite derivative at 0
    logits = (-d).masked_fill(F.pad(invalid, (1, 0), value=False), -math.inf)
    logp = torch.log_softmax(logits, dim=1)  # (B, 1+K)
    loss = -logp[:, 0].mean()
    g_d = -logp.exp()  # ∂L/∂d_j · B = 1[j = 0] − p_j
    g_d[:, 0] += 1
    g_d /= x_u.shape[0]
    if manifold == "poincare":
        g_w = torch.where(w_raw > floor, g_d / (math.sqrt(c) * root), 0.0)  # (B, 1+K)
        coef = (2 * c * g_w / (alpha * beta))[..., None]  # (B, 1+K, 1)
        g_cand = coef * ((w * alpha)[..., None] * x_cand - diff)
        g_u = (coef * (diff + (w * beta)[..., None] * x)).sum(1)
    else:
        coef = torch.where(sq > floor, g_d / d, 0.0)[..., None]
        g_cand = -coef * diff
        g_u = (coef * diff).sum(1)
    return loss, g_u, g_cand


def resolve_embed_kernel(kernel: str, device: str | torch.device) -> str:
    """``"eager"`` or ``"native"``: what ``kernel`` (one of :data:`EMBED_KERNELS`) runs on ``device``.
    ``"native"`` off the CPU is an error, and so is a failed build (with the compiler's message);
    ``"auto"`` warns when it cannot use the native kernel on the CPU."""
    if kernel not in EMBED_KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {list(EMBED_KERNELS)}")
    on_cpu = torch.device(device).type == "cpu"
    if kernel == "native":
        if not on_cpu:
            raise ValueError(f"kernel='native' runs on the CPU, got device {device}; use kernel='eager' or 'auto'")
        native.embed_library()  # raises NativeUnavailable with the compiler's message
        return "native"
    if kernel == "auto" and on_cpu:
        try:
            native.embed_library()
        except native.NativeUnavailable as e:
            warnings.warn(
                f"hyperr1: the native embedding kernel is unavailable, using the eager one: {e}",
                RuntimeWarning,
                stacklevel=3,
            )
            return "eager"
        return "native"
    return "eager"


def sparse_sgd_step(
    emb: geoopt.ManifoldParameter,
    pairs: torch.Tensor,
    index: ClosureIndex,
    *,
    lr: float,
    negatives: int,
    manifold: str,
    c: float,
    generator: torch.Generator,
) -> float:
    """One Riemannian SGD step on the rows a batch touches; returns the batch loss.

    The same update as geoopt's dense ``RiemannianSGD`` (no momentum) — x ← R_x(−η ∇_R L), with
    ∇_R = ∇_E (1 − c‖x‖²)²/4 (Nickel & Kiela 2017, eqs. 4–5), geoopt's ``egrad2rgrad`` and
    ``retr`` — but only the ≤ B(2+K) rows in the batch are touched, so a step costs O(B·K·d) and
    an epoch O(P·K·d) instead of O(P/B · n·d): linear in the number of pairs P, whatever the
    number of nodes n. The gradients come from :func:`sampled_softmax_grad`.
    """
    u, v = pairs[:, 0], pairs[:, 1]  # (B,)
    neg, invalid = sample_negatives(u, index, negatives=negatives, generator=generator)  # (B, K)
    cand = torch.cat([v[:, None], neg], dim=1)  # (B, 1+K)
    table = emb.data
    loss, g_u, g_cand = sampled_softmax_grad(table[u], table[cand], invalid, manifold=manifold, c=c)
    rows, inv = torch.unique(torch.cat([u, cand.flatten()]), return_inverse=True)  # (R,), (B(2+K),)
    grad = torch.zeros(len(rows), table.shape[1], dtype=table.dtype, device=table.device)  # (R, d)
    grad.index_add_(0, inv, torch.cat([g_u, g_cand.reshape(-1, table.shape[1])]))
    x = table[rows]  # (R, d)
    table[rows] = emb.manifold.retr(x, -lr * emb.manifold.egrad2rgrad(x, grad))
    return loss.item()


@torch.no_grad()
def reconstruction(
    emb: torch.Tensor,
    index: ClosureIndex,
    *,
    manifold: str,
    c: float,
    rows: torch.Tensor | None = None,
    chunk: int | None = None,
    chunk_bytes: int = 2**30,
    progress: bool = False,
) -> dict[str, float]:
    """Mean rank and MAP of the closure pairs, by the protocol in the module docstring.

    For node u with m ancestors at distances t_1 ≤ … ≤ t_m, the k-th ancestor (1-based) has rank
    1 + n_k and precision k/(k + n_k), where n_k counts the non-neighbours w with d(u, w) ≤ t_k
    (a tie counts against the ancestor); AP(u) is the mean precision over u's ancestors.

    Rows are evaluated in chunks of (R, n) float64 distances, R = ``chunk`` or what fits
    ``chunk_bytes`` (about four (R, n) 8-byte tensors are live at once), so memory is O(R·n), never
    O(n²), and time O(n² log m): n_k comes from a per-row ``searchsorted`` of the n distances
    into the m sorted t_k, not from sorting the row. ``rows`` restricts the evaluation to those
    nodes (a fixed random sample gives a cheap estimate during training).
    """
    n = emb.shape[0]
    device = emb.device
    key_u, key_v = index.keys.div(n, rounding_mode="floor").to(device), index.keys.remainder(n).to(device)
    rows = torch.arange(n, device=device) if rows is None else rows.to(device)
    if chunk is None:
        chunk = max(1, chunk_bytes // (32 * n))
    rank_sum, ap_sum, num_nodes, num_pairs = 0.0, 0.0, 0, 0
    starts = range(0, len(rows), chunk)
    for start in tqdm(starts, desc="reconstruction", unit="chunk", disable=not progress, leave=False):
        r = rows[start : start + chunk]  # (R,)
        d = all_distances(emb, r, manifold=manifold, c=c)  # (R, n) float64 for a float64 table
        d[torch.arange(len(r), device=device), r] = math.inf  # exclude u itself
        # the ancestors of each row: a slice of the sorted keys, padded to (R, M) with +inf
        first = torch.searchsorted(key_u, r)
        count = torch.searchsorted(key_u, r, right=True) - first  # (R,) m per row
        m_max = int(count.max()) if len(r) else 0
        if m_max == 0:
            continue
        row_of = torch.repeat_interleave(torch.arange(len(r), device=device), count)  # (Σm,)
        slot = torch.arange(len(row_of), device=device) - torch.repeat_interleave(count.cumsum(0) - count, count)
        t = torch.full((len(r), m_max), math.inf, dtype=d.dtype, device=device)  # (R, M)
        t[row_of, slot] = d[row_of, key_v[torch.repeat_interleave(first, count) + slot]]
        t = t.sort(dim=1).values
        # bucket b of a distance: #{k : t_k < d}; d ≤ t_k ⟺ b ≤ k (0-based k)
        bucket = torch.searchsorted(t, d)  # (R, n) in [0, M]
        hist = torch.zeros(len(r), m_max + 1, dtype=torch.long, device=device)
        hist.scatter_add_(1, bucket, torch.ones(1, 1, dtype=torch.long, device=device).expand_as(bucket))
        del d, bucket
        at_or_below = hist.cumsum(1)[:, :m_max]  # (R, M): nodes w ≠ u with d(u, w) ≤ t_k
        ancestors_at_or_below = torch.searchsorted(t, t, right=True)  # (R, M)
        closer = (at_or_below - ancestors_at_or_below).double()  # n_k
        k = torch.arange(1, m_max + 1, dtype=torch.float64, device=device)  # (M,) 1-based
        valid = k <= count[:, None]  # (R, M)
        rank_sum += float(((1 + closer) * valid).sum())
        has = count > 0
        ap = (k / (k + closer) * valid).sum(1)[has] / count[has]
        ap_sum += float(ap.sum())
        num_nodes += int(has.sum())
        num_pairs += int(count.sum())
    return {
        "mean_rank": rank_sum / max(num_pairs, 1),
        "map": ap_sum / max(num_nodes, 1),
        "num_pairs": num_pairs,
        "num_nodes_evaluated": num_nodes,
    }


# --------------------------------------------------------------------------------------------
# training loop and run directory
# --------------------------------------------------------------------------------------------


def train_embedding(
    cfg: EmbedConfig,
    hierarchy: Hierarchy | None = None,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    state: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    final_eval: bool = True,
) -> dict:
    """Train embeddings of ``cfg.data`` and return ``{"embedding", "nodes", "metrics", "history"}``.

    ``history`` holds one record per evaluation with the epoch and the training seconds elapsed
    (evaluation time excluded), from which the time to reach a MAP level is read. With
    ``cfg.eval_sample`` the periodic evaluations rank a fixed random sample of nodes (``"sample"``
    in the record) and the last one ranks all nodes.

    Riemannian SGD with sampled negatives runs :func:`sparse_sgd_step` (cost linear in the pairs);
    Adam, or ``negatives=0``, steps geoopt's optimizer on the whole table. ``on_epoch(state)`` is
    called after every epoch with the training state (``epoch``, ``embedding``, ``optimizer``,
    ``generator``, ``train_seconds``, ``history``); passing such a state back as ``state`` resumes
    the run after that epoch, with the same result as an uninterrupted run. ``final_eval=False``
    skips the closing full evaluation (timing runs); the metrics then hold NaN.
    """
    cfg.validate()
    torch.manual_seed(cfg.seed)
    h = hierarchy if hierarchy is not None else load_dataset(cfg)
    index = ClosureIndex.from_hierarchy(h)
    if index.pairs.shape[0] == 0:
        raise ValueError(f"hierarchy {h.name!r} has no closure pairs to embed")
    t_init = time.perf_counter()
    emb = make_embedding(len(h.nodes), cfg, h)
    init_seconds = time.perf_counter() - t_init  # the construction counts as training time
    if state is not None:
        emb.data.copy_(state["embedding"])
    emb = geoopt.ManifoldParameter(emb.data.to(device), manifold=emb.manifold.to(device))
    index = ClosureIndex(index.nodes, index.pairs.to(device))
    sparse = cfg.optimizer == "sgd" and cfg.negatives > 0
    opt = None if sparse else riemannian_optimizer([emb], name=cfg.optimizer, lr=cfg.lr)
    native_step = None
    if sparse and resolve_embed_kernel(cfg.kernel, emb.device) == "native":
        native_step = native.EmbedStep(len(h.nodes), cfg.dim, index.keys, batch=cfg.batch_size, negatives=cfg.negatives)
        poincare = cfg.manifold == "poincare"
        maxnorm = float(emb.manifold.max_norm(emb.dtype)) if poincare else math.inf
    gen = torch.Generator().manual_seed(cfg.seed)  # on the CPU: the same draws on every device
    # the fixed evaluation sample is drawn from its own stream, so it does not shift the training draws
    sample = None
    if cfg.eval_sample is not None and cfg.eval_sample < len(h.nodes):
        pick = torch.Generator().manual_seed(cfg.seed + 1)
        sample = torch.randperm(len(h.nodes), generator=pick)[: cfg.eval_sample].sort().values
    history: list[dict] = []
    train_seconds, first_epoch = init_seconds, 1

    def evaluate(epoch: int, loss: float | None, rows: torch.Tensor | None) -> dict:
        """Reconstruction of ``rows`` (None: all) appended to ``history``, timed apart from training."""
        t_eval = time.perf_counter()
        rec = reconstruction(emb.detach(), index, manifold=cfg.manifold, c=cfg.c, rows=rows, progress=progress)
        rec = {"sample": rows is not None, **rec, "eval_seconds": time.perf_counter() - t_eval}
        history.append({"epoch": epoch, "seconds": train_seconds, "loss": loss, **rec})
        return rec

    if state is None and cfg.init_scheme == "hierarchy" and cfg.eval_every:  # where the construction starts
        evaluate(0, None, sample)
    if state is not None:
        gen.set_state(state["generator"])
        if opt is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            for entries in opt.state.values():  # torch loads "step" as a float32 tensor; geoopt counts in ints,
                if torch.is_tensor(entries.get("step")):  # and float32 bias corrections would change the result
                    entries["step"] = int(entries["step"])
        history, train_seconds, first_epoch = list(state["history"]), state["train_seconds"], state["epoch"] + 1
    bar = tqdm(
        range(first_epoch, cfg.epochs + 1),
        desc=f"embed {cfg.manifold} d={cfg.dim}",
        disable=not progress,
        initial=first_epoch - 1,
        total=cfg.epochs,
    )
    epoch = first_epoch - 1
    for epoch in bar:
        t0 = time.perf_counter()
        lr = learning_rate(cfg, epoch)
        if opt is not None:
            for group in opt.param_groups:
                group["lr"] = lr
        perm = torch.randperm(index.pairs.shape[0], generator=gen).to(device)
        losses = []
        for start in range(0, len(perm), cfg.batch_size):
            batch = index.pairs[perm[start : start + cfg.batch_size]]  # (B, 2)
            kw = {"negatives": cfg.negatives, "manifold": cfg.manifold, "c": cfg.c, "generator": gen}
            if native_step is not None:  # the same draws as sample_negatives
                neg = draw_negatives(len(h.nodes), len(batch), cfg.negatives, gen)
                loss = native_step(emb.data, batch, neg, c=cfg.c, lr=lr, maxnorm=maxnorm, poincare=poincare)
            elif sparse:
                loss = sparse_sgd_step(emb, batch, index, lr=lr, **kw)
            else:
                loss_t = nickel_kiela_loss(emb, batch, index, **kw)
                opt.zero_grad(set_to_none=True)
                loss_t.backward()
                opt.step()
                loss = loss_t.item()
            losses.append(loss * len(batch))
        if emb.device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: wait before reading the clock
        train_seconds += time.perf_counter() - t0
        mean_loss = sum(losses) / len(perm)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"non-finite loss {mean_loss} at epoch {epoch}")
        out_of_time = cfg.max_seconds is not None and train_seconds >= cfg.max_seconds
        last = epoch == cfg.epochs or out_of_time
        if (cfg.eval_every and epoch % cfg.eval_every == 0) or (last and final_eval):
            rec = evaluate(epoch, mean_loss, None if last else sample)
            bar.set_postfix(loss=f"{mean_loss:.3f}", map=f"{rec['map']:.3f}", rank=f"{rec['mean_rank']:.2f}")
            reached = cfg.target_map is not None and rec["map"] >= cfg.target_map
        else:
            bar.set_postfix(loss=f"{mean_loss:.3f}")
            reached = False
        if on_epoch is not None:
            on_epoch({**_training_state(epoch, emb, opt, gen, train_seconds, history), "loss": mean_loss})
        if reached or out_of_time:
            break
    bar.close()
    if not final_eval:
        history.append({"epoch": epoch, "seconds": train_seconds, "loss": mean_loss, "sample": False})
        history[-1].update(mean_rank=math.nan, map=math.nan, num_pairs=index.pairs.shape[0], num_nodes_evaluated=0)
    elif not history or history[-1]["epoch"] != epoch or history[-1]["sample"]:  # stopped on a sampled MAP
        rec = reconstruction(emb.detach(), index, manifold=cfg.manifold, c=cfg.c, progress=progress)
        history.append({"epoch": epoch, "seconds": train_seconds, "loss": math.nan, "sample": False, **rec})
    final = history[-1]
    metrics = {
        "mean_rank": final["mean_rank"],
        "map": final["map"],
        "epochs_run": final["epoch"],
        "train_seconds": train_seconds,
        "seed": cfg.seed,
        "num_nodes": len(h.nodes),
        "num_pairs": final["num_pairs"],
        **{f"seconds_to_map_{lvl:.2f}": seconds_to_map(history, lvl) for lvl in (0.90, 0.95)},
    }
    embedding = emb.detach().cpu()
    return {"embedding": embedding, "nodes": list(h.nodes), "metrics": metrics, "history": history, "hierarchy": h}


def _training_state(epoch, emb, opt, gen, train_seconds, history) -> dict:
    return {
        "epoch": epoch,
        "embedding": emb.detach().cpu().clone(),
        "optimizer": None if opt is None else copy.deepcopy(opt.state_dict()),  # its tensors change in place
        "generator": gen.get_state(),
        "train_seconds": train_seconds,
        "history": list(history),
    }


def save_training_state(path: str | Path, state: dict) -> None:
    """Write a :func:`train_embedding` state as one safetensors file, atomically (temp + rename).

    Tensors: the embedding, the sampler's RNG state and any optimizer tensors; the rest (epoch,
    seconds, history, optimizer scalars) is JSON in the metadata. Nothing is pickled.
    """
    tensors = {"embedding": state["embedding"].contiguous(), "generator": state["generator"]}
    opt_meta = None
    if state.get("optimizer") is not None:
        opt_meta = {"param_groups": state["optimizer"]["param_groups"], "state": {}}
        for pid, entries in state["optimizer"]["state"].items():
            opt_meta["state"][str(pid)] = {}
            for name, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{pid}.{name}"] = value.detach().cpu().contiguous()
                else:
                    opt_meta["state"][str(pid)][name] = value
    meta = {
        "epoch": str(state["epoch"]),
        "train_seconds": repr(state["train_seconds"]),
        "history": json.dumps(state["history"]),
        "optimizer": json.dumps(opt_meta),
    }
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_training_state(path: str | Path) -> dict:
    """Inverse of :func:`save_training_state`; pass the result to ``train_embedding(state=...)``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    optimizer = json.loads(meta["optimizer"])
    if optimizer is not None:
        state = {int(pid): dict(entries) for pid, entries in optimizer["state"].items()}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, pid, name = key.split(".", 2)
                state[int(pid)][name] = value
        optimizer = {"param_groups": optimizer["param_groups"], "state": state}
    return {
        "epoch": int(meta["epoch"]),
        "embedding": tensors["embedding"],
        "generator": tensors["generator"],
        "optimizer": optimizer,
        "train_seconds": float(meta["train_seconds"]),
        "history": json.loads(meta["history"]),
    }


def load_dataset(cfg: EmbedConfig) -> Hierarchy:
    """The hierarchy ``cfg.data`` names (``"wordnet:<synset>"`` reads ``cfg.wordnet_dir``)."""
    return load_hierarchy(cfg.data, wordnet_dir=cfg.wordnet_dir, instances=cfg.wordnet_instances)


def learning_rate(cfg: EmbedConfig, epoch: int) -> float:
    """η·burnin_multiplier during burn-in, then η, decayed linearly to 0 at the last epoch when
    ``cfg.lr_decay == "linear"`` (epochs are 1-based)."""
    if epoch <= cfg.burnin_epochs:
        return cfg.lr * cfg.burnin_multiplier
    if cfg.lr_decay == "linear":
        remaining = cfg.epochs - cfg.burnin_epochs
        return cfg.lr * (1 - (epoch - cfg.burnin_epochs - 1) / remaining)
    return cfg.lr


def seconds_to_map(history: list[dict], level: float) -> float | None:
    """Training seconds at the first evaluation whose MAP reached ``level`` (None if never)."""
    return next((r["seconds"] for r in history if r["map"] >= level), None)


def save_embedding(path: str | Path, embedding: torch.Tensor, nodes: list[str], cfg: EmbedConfig) -> None:
    """Write a safetensors file; node names and the manifold go into its metadata."""
    meta = {"nodes": json.dumps(nodes), "manifold": cfg.manifold, "c": str(cfg.c)}
    save_file({"embedding": embedding.contiguous()}, str(path), metadata=meta)


def load_embedding(path: str | Path) -> tuple[torch.Tensor, list[str], dict[str, str]]:
    """Inverse of :func:`save_embedding`: (embedding, nodes, metadata)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises several types for a corrupt header
        raise ValueError(f"cannot read embedding file {path}: {err}") from err
    if "embedding" not in tensors or "nodes" not in meta:
        raise ValueError(f"{path} is not a hyperr1 embedding file (missing 'embedding' or 'nodes')")
    nodes = json.loads(meta["nodes"])
    if len(nodes) != tensors["embedding"].shape[0]:
        raise ValueError(f"{path}: {len(nodes)} node names for {tensors['embedding'].shape[0]} rows")
    return tensors["embedding"], nodes, meta


def run_embed(cfg: EmbedConfig, *, progress: bool = True) -> dict:
    """Train, evaluate and (when ``cfg.out`` is set) write the run directory:
    ``config.json``, ``metrics.json``, ``history.jsonl``, ``embedding.safetensors`` and, for
    dim 2 on the ball, ``poincare_disk.png``."""
    result = train_embedding(cfg, progress=progress)
    if cfg.out is not None:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        write_record(out, asdict(cfg), kind="embed")
        write_json(out / "metrics.json", result["metrics"])
        with open(out / "history.jsonl", "w") as f:
            for rec in result["history"]:
                f.write(json.dumps(rec) + "\n")
        save_embedding(out / "embedding.safetensors", result["embedding"], result["nodes"], cfg)
        if cfg.dim == 2 and cfg.manifold == "poincare":
            from hyperr1.viz import plot_poincare_disk

            plot_poincare_disk(result["embedding"], result["hierarchy"], out / "poincare_disk.png", c=cfg.c)
    return result
