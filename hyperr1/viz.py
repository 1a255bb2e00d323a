"""Plotting helpers: the Poincaré disk of a 2-d embedding, and curves from saved metrics.

Figures are drawn from saved results only (STYLE.md: figure scripts read results and never
train); matplotlib runs on the non-interactive Agg backend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from hyperr1.hierarchy import Hierarchy  # noqa: E402


def plot_poincare_disk(
    embedding: torch.Tensor,
    hierarchy: Hierarchy,
    path: str | Path,
    *,
    c: float = 1.0,
    label_depth: int = 1,
    title: str | None = None,
) -> Path:
    """Draw a 2-d embedding on the Poincaré disk of radius 1/√c and save it (PNG, and PDF alongside).

    Edges are the hierarchy's transitive reduction (its parent edges), nodes are coloured by
    depth, and nodes with depth ≤ ``label_depth`` are labelled with their synset lemma.
    """
    if embedding.dim() != 2 or embedding.shape[1] != 2:
        raise ValueError(f"the Poincaré disk needs a (N, 2) embedding, got {tuple(embedding.shape)}")
    if embedding.shape[0] != len(hierarchy.nodes):
        raise ValueError(f"{embedding.shape[0]} embedding rows for {len(hierarchy.nodes)} nodes")
    pts = embedding.detach().double().cpu() * c**0.5  # rescale to the unit disk
    idx = hierarchy.index
    depth = torch.tensor([hierarchy.depth(v) for v in hierarchy.nodes], dtype=torch.float64)
    segments = [(pts[idx[u]].tolist(), pts[idx[p]].tolist()) for u, p in hierarchy.edges]

    fig, ax = plt.subplots(figsize=(7, 7))
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="black", lw=1.0))
    ax.add_collection(LineCollection(segments, colors="0.6", linewidths=0.3, zorder=1))
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=depth, cmap="viridis", s=6, zorder=2)
    for v in hierarchy.nodes:
        if hierarchy.depth(v) <= label_depth:
            x, y = pts[idx[v]].tolist()
            ax.annotate(v.split(".")[0], (x, y), fontsize=7, zorder=3, xytext=(2, 2), textcoords="offset points")
    fig.colorbar(sc, ax=ax, shrink=0.7, label="depth in the hierarchy")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"{hierarchy.name}: {len(hierarchy.nodes)} nodes on the Poincaré disk")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
    return path
