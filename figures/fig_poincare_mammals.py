"""Figure: the 2-d Poincaré embedding of the WordNet mammals, from saved results.

Reads ``results/embeddings/poincare_d2/embedding.safetensors`` (made by
``experiments/embed_mammals.py``) and writes ``figures/poincare_mammals.png`` and ``.pdf``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hyperr1.embeddings import load_embedding
from hyperr1.hierarchy import load_hierarchy
from hyperr1.viz import plot_poincare_disk

RUN = Path("results/embeddings/poincare_d2")
OUT = Path("figures/poincare_mammals.png")


def main() -> None:
    path = RUN / "embedding.safetensors"
    if not path.exists():
        sys.exit(f"error: {path} is missing; run `python experiments/embed_mammals.py` first")
    emb, nodes, meta = load_embedding(path)
    h = load_hierarchy("mammals")
    if nodes != h.nodes:
        sys.exit(f"error: {path} was trained on a different hierarchy than the shipped mammals")
    metrics = json.loads((RUN / "metrics.json").read_text())
    title = f"WordNet mammals on the Poincaré disk (MAP {metrics['map']:.3f}, mean rank {metrics['mean_rank']:.2f})"
    plot_poincare_disk(emb, h, OUT, c=float(meta["c"]), title=title)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
