"""Figure: the 2-d Poincaré embedding of the WordNet mammals, and the same disk re-centred on dog.n.01.

Reads ``results/embeddings/poincare_d2/embedding.safetensors`` (made by
``experiments/embed_mammals.py``) and writes ``figures/poincare_mammals.png``, ``.pdf`` and the
interactive ``.html`` (hover names a concept, a click re-centres). The right panel is the Möbius
translation x ↦ (−a) ⊕ x with a = dog.n.01, an isometry that brings the dog subtree from the rim
to the middle of the disk (:func:`hyperr1.viz.recenter`).

    python figures/fig_poincare_mammals.py [--center dog.n.01] [--labels 40]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hyperr1.embeddings import load_embedding
from hyperr1.hierarchy import load_hierarchy
from hyperr1.viz import plot_panels, to_panel, write_html

RUN = Path("results/embeddings/poincare_d2")
OUT = Path("figures/poincare_mammals.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--center", default="dog.n.01", help="the concept of the re-centred panel")
    parser.add_argument("--labels", type=int, default=40, help="labels per panel")
    args = parser.parse_args()
    path = RUN / "embedding.safetensors"
    if not path.exists():
        sys.exit(f"error: {path} is missing; run `python experiments/embed_mammals.py` first")
    emb, nodes, meta = load_embedding(path)
    h = load_hierarchy("mammals")
    if nodes != h.nodes:
        sys.exit(f"error: {path} was trained on a different hierarchy than the shipped mammals")
    metrics = json.loads((RUN / "metrics.json").read_text())
    c = float(meta["c"])
    scores = f"MAP {metrics['map']:.3f}, mean rank {metrics['mean_rank']:.2f}"
    trained = f"as trained ({scores}); {args.center}'s subtree in red"
    panels = [
        to_panel(emb, h, c=c, title=trained, highlight=args.center),
        to_panel(emb, h, c=c, title=f"re-centred on {args.center} by x ↦ (−a) ⊕ x", center=args.center),
    ]
    title = f"WordNet mammals ({len(h.nodes)} synsets) on the Poincaré disk; edges are geodesics"
    plot_panels(panels, h, OUT, labels=args.labels, title=title)
    write_html(panels, h, OUT.with_suffix(".html"), title=title, labels=args.labels)
    print(f"wrote {OUT}, {OUT.with_suffix('.pdf')} and {OUT.with_suffix('.html')}")


if __name__ == "__main__":
    main()
