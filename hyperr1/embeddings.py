"""Poincaré embeddings of a hierarchy's transitive closure (Nickel & Kiela 2017).

Training data is every closure pair (u, v) with v a strict ancestor of u. For each pair the loss
is the softmax cross-entropy of eq. (6) of the paper,

    L(u, v) = −log( e^{−d(u, v)} / Σ_{v' ∈ N(u) ∪ {v}} e^{−d(u, v')} ),

with N(u) = K negatives drawn uniformly from the nodes v' for which (u, v') is not a closure pair
(v' ≠ u). Draws that hit a positive are masked out of the softmax instead of re-drawn, which keeps
the sampler a single vectorised ``randint``. The first ``burnin_epochs`` run at
``lr · burnin_multiplier`` (the paper's burn-in). ``manifold="euclidean"`` trains the same model
with Euclidean distance as the baseline.

Reconstruction evaluation (sec. 4.1): for every node u with at least one ancestor, each true
ancestor v is ranked by d(u, ·) among v itself and all of u's *non-neighbours* (nodes that are
neither u nor an ancestor of u; u itself is excluded). We report the mean rank over all closure
pairs and the mean over nodes of the average precision (MAP). This is the directed convention of
the paper's ``mammal_closure`` data (hyponym → hypernym pairs).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import geoopt
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hyperr1 import geometry
from hyperr1.hierarchy import Hierarchy, load_hierarchy
from hyperr1.optim import riemannian_optimizer
from hyperr1.runs import write_json, write_record

MANIFOLDS = ("poincare", "euclidean")


@dataclass
class EmbedConfig:
    """Configuration of ``hyperr1 embed``; every field is saved with the run."""

    data: str = "mammals"  # dataset name (see hyperr1.hierarchy.KNOWN_DATASETS) or a TSV path
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
    init: float = 1e-3  # initial coordinates uniform in [−init, init] (paper: 1e-3)
    eval_every: int = 10  # evaluate reconstruction every this many epochs (0: only at the end)
    target_map: float | None = None  # stop early once MAP reaches this value
    seed: int = 0  # seeds torch for initialisation and negative sampling
    out: str | None = None  # run directory; None writes nothing

    def validate(self) -> EmbedConfig:
        if self.manifold not in MANIFOLDS:
            raise ValueError(f"unknown manifold {self.manifold!r}; known: {list(MANIFOLDS)}")
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


def make_embedding(num: int, cfg: EmbedConfig) -> geoopt.ManifoldParameter:
    """A (num, dim) table on the chosen manifold, uniform in [−init, init]^dim."""
    if cfg.manifold == "poincare":
        manifold = geometry.ball(cfg.c, boundary_eps=cfg.boundary_eps)
    else:
        manifold = geoopt.Euclidean()
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
    n = emb.shape[0]
    if negatives == 0:  # every node is a candidate: the exact normaliser over all of N(u)
        return _full_softmax_loss(emb, u, v, index, manifold=manifold, c=c)
    neg = torch.randint(0, n, (u.shape[0], negatives), generator=generator)  # (B, K)
    cand = torch.cat([v[:, None], neg], dim=1)  # (B, 1+K): the positive first
    invalid = index.is_positive(u[:, None].expand_as(neg), neg) | (neg == u[:, None])  # (B, K)
    d = paired_distance(emb[u][:, None, :], emb[cand], manifold=manifold, c=c)  # (B, 1+K)
    logits = (-d).masked_fill(F.pad(invalid, (1, 0), value=False), -math.inf)
    return F.cross_entropy(logits, torch.zeros_like(u))


def _full_softmax_loss(emb, u, v, index: ClosureIndex, *, manifold: str, c: float) -> torch.Tensor:
    """Eq. (6) with N(u) = all non-neighbours of u: one (B, n) distance matrix per batch."""
    n = emb.shape[0]
    d = all_distances(emb, u, manifold=manifold, c=c)  # (B, n)
    everyone = torch.arange(n).expand(len(u), n)  # (B, n)
    invalid = index.is_positive(u[:, None].expand(-1, n), everyone) | (everyone == u[:, None])
    invalid[torch.arange(len(u)), v] = False  # the positive itself stays in the softmax
    logits = (-d).masked_fill(invalid, -math.inf)
    return F.cross_entropy(logits, v)


@torch.no_grad()
def reconstruction(
    emb: torch.Tensor, index: ClosureIndex, *, manifold: str, c: float, chunk: int = 1024
) -> dict[str, float]:
    """Mean rank and MAP of the closure pairs, by the protocol in the module docstring.

    For node u with distances sorted ascending (u itself removed), a positive at 0-based position
    k with j positives before it has rank k − j + 1 (one plus the negatives closer than it) and
    precision (j + 1)/(k + 1); AP(u) is the mean precision over u's positives.
    """
    n = emb.shape[0]
    us, vs = index.pairs[:, 0], index.pairs[:, 1]
    rank_sum, ap_sum, num_nodes = 0.0, 0.0, 0
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        d = all_distances(emb, rows, manifold=manifold, c=c)  # (R, n)
        d[torch.arange(len(rows)), rows] = math.inf  # exclude u itself: it sorts last
        pos = torch.zeros_like(d, dtype=torch.bool)
        sel = (us >= start) & (us < start + len(rows))
        pos[us[sel] - start, vs[sel]] = True
        order = d.argsort(dim=1)
        pos_sorted = pos.gather(1, order).double()  # (R, n) positives in distance order
        k = torch.arange(n, dtype=torch.float64)  # 0-based position
        j = pos_sorted.cumsum(1) - pos_sorted  # positives strictly before position k
        rank_sum += float(((k - j + 1) * pos_sorted).sum())
        num_pos = pos_sorted.sum(1)
        has = num_pos > 0
        ap = ((j + 1) / (k + 1) * pos_sorted).sum(1)[has] / num_pos[has]
        ap_sum += float(ap.sum())
        num_nodes += int(has.sum())
    num_pairs = index.pairs.shape[0]
    return {
        "mean_rank": rank_sum / max(num_pairs, 1),
        "map": ap_sum / max(num_nodes, 1),
        "num_pairs": num_pairs,
        "num_nodes_evaluated": num_nodes,
    }


# --------------------------------------------------------------------------------------------
# training loop and run directory
# --------------------------------------------------------------------------------------------


def train_embedding(cfg: EmbedConfig, hierarchy: Hierarchy | None = None, *, progress: bool = True) -> dict:
    """Train embeddings of ``cfg.data`` and return ``{"embedding", "nodes", "metrics", "history"}``.

    ``history`` holds one record per evaluation with the epoch and the training seconds elapsed
    (evaluation time excluded), from which the time to reach a MAP level is read.
    """
    cfg.validate()
    torch.manual_seed(cfg.seed)
    h = hierarchy if hierarchy is not None else load_hierarchy(cfg.data)
    index = ClosureIndex.from_hierarchy(h)
    if index.pairs.shape[0] == 0:
        raise ValueError(f"hierarchy {h.name!r} has no closure pairs to embed")
    emb = make_embedding(len(h.nodes), cfg)
    opt = riemannian_optimizer([emb], name=cfg.optimizer, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    train_seconds = 0.0
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"embed {cfg.manifold} d={cfg.dim}", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        lr = learning_rate(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        perm = torch.randperm(index.pairs.shape[0], generator=gen)
        total = 0.0
        for start in range(0, len(perm), cfg.batch_size):
            batch = index.pairs[perm[start : start + cfg.batch_size]]  # (B, 2)
            loss = nickel_kiela_loss(
                emb, batch, index, negatives=cfg.negatives, manifold=cfg.manifold, c=cfg.c, generator=gen
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        train_seconds += time.perf_counter() - t0
        mean_loss = total / len(perm)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"non-finite loss {mean_loss} at epoch {epoch}")
        if (cfg.eval_every and epoch % cfg.eval_every == 0) or epoch == cfg.epochs:
            rec = reconstruction(emb.detach(), index, manifold=cfg.manifold, c=cfg.c)
            history.append({"epoch": epoch, "seconds": train_seconds, "loss": mean_loss, **rec})
            bar.set_postfix(loss=f"{mean_loss:.3f}", map=f"{rec['map']:.3f}", rank=f"{rec['mean_rank']:.2f}")
            if cfg.target_map is not None and rec["map"] >= cfg.target_map:
                break
        else:
            bar.set_postfix(loss=f"{mean_loss:.3f}")
    bar.close()
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
    return {"embedding": emb.detach(), "nodes": list(h.nodes), "metrics": metrics, "history": history, "hierarchy": h}


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
