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

import matplotlib
import torch

from hyperr1 import geometry
from hyperr1.disk import (
    distance_rank_correlation,
    geodesic_arc,
    recenter,
    select_labels,
    tangent_pca,
    tree_distance_correlation,
)
from hyperr1.hierarchy import Hierarchy, load_hierarchy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

__all__ = [
    "VizConfig",
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


def _policy_points(directory: Path, hierarchy: Hierarchy) -> tuple[torch.Tensor, float, int, str]:
    """The concepts' points of a policy's output layer, (N, k), their c, the head dimension k and
    what the points are (for the panel's title).

    A Poincaré head gives its prototypes p_v. A Euclidean head (a distilled student) gives its
    output rows u_v mapped onto the unit ball by exp₀, the inverse of the log-map initialisation
    u_v = log₀ p_v (:func:`hyperr1.distill.init_student_from_teacher`): where the student keeps the
    teacher's arrangement, the two pictures agree.
    """
    from hyperr1.geometry import expmap0
    from hyperr1.model import HyperR1ForConditionalGeneration
    from hyperr1.tokenizer import concept_token_ids, load_tokenizer

    model = HyperR1ForConditionalGeneration.from_pretrained(directory)
    for d in (directory, *(up / "tokenizer" for up in (directory, directory.parent, directory.parent.parent))):
        if (d / "tokenizer.json").is_file():
            tokenizer = load_tokenizer(d)
            break
    else:
        raise FileNotFoundError(f"no tokenizer in {directory} or a tokenizer/ beside it")
    ids = concept_token_ids(tokenizer, hierarchy)
    k = model.config.head_dim
    if model.config.head == "poincare":
        return model.head.prototypes.detach()[ids], float(model.head.ball.c.detach()), k, "head prototypes"
    rows = model.head.weight.detach().double()[ids]  # (N, k) Euclidean output rows u_v
    points = expmap0(rows, c=torch.tensor(1.0, dtype=torch.float64)).float()
    return points, 1.0, k, "exp₀ of its Euclidean output rows"


def _sources(path: Path) -> list[tuple[Path, str]]:
    """(directory, panel title) of what ``path`` holds: a train run is its warm start and policy."""
    if (path / "warm_start" / "model").is_dir() and (path / "policy").is_dir():
        return [(path / "warm_start" / "model", "after the warm start"), (path / "policy", "after GRPO")]
    if (path / "student").is_dir() and (path / "distill").is_dir():  # a hyperr1 distill run
        return [(path / "student", "distilled Euclidean student")]
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
            emb, c, k, what = _policy_points(directory, h)
            label = f"{title}: {what}, dim {k}"
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
    fig.savefig(path.with_suffix(".pdf"), metadata={"CreationDate": None})  # byte-identical redraws
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

TEMPLATE = Path(__file__).with_name("data") / "viz_template.html"  # inline SVG + JS; __TITLE__, __DATA__ filled in


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
    page = TEMPLATE.read_text(encoding="utf-8").replace("__TITLE__", _escape(title))
    page = page.replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
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
