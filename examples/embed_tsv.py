"""Poincaré embeddings of your own hierarchy, from a ``child<TAB>parent`` TSV file.

Reads the file (one is-a edge per line; ``#`` comments and blank lines skipped; several parents
per concept allowed), trains Poincaré embeddings of its transitive closure (Nickel & Kiela 2017,
Riemannian SGD on the softmax loss of their eq. 6), prints the reconstruction MAP and mean rank
(their sec. 4.1) and the concepts nearest the centre of the ball and nearest its boundary, and
with ``--out`` saves the points as safetensors, which this script loads back and scores again.

    python examples/embed_tsv.py my_hierarchy.tsv --dim 5 --out my_hierarchy.safetensors
    python examples/embed_tsv.py --tiny      # no file: a small built-in example, a few seconds

``hyperr1 embed --data my_hierarchy.tsv`` is the same from the command line, with a run directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hyperr1 import embeddings
from hyperr1.hierarchy import HierarchyError, load_hierarchy

DEMO = """\
# a small hierarchy in the format this script reads: child<TAB>parent
mammal\tanimal
bird\tanimal
fish\tanimal
dog\tmammal
cat\tmammal
horse\tmammal
beagle\tdog
poodle\tdog
terrier\tdog
siamese\tcat
parrot\tbird
eagle\tbird
salmon\tfish
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tsv", nargs="?", help="child<TAB>parent file (default: a small built-in hierarchy)")
    p.add_argument("--dim", type=int, default=5, help="embedding dimension (default 5)")
    p.add_argument("--epochs", type=int, default=200, help="epochs (default 200; EmbedConfig's is 600)")
    p.add_argument("--negatives", type=int, default=50, help="negatives per pair; 0: all non-neighbours")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the embedding here (.safetensors), then load it back and score it")
    p.add_argument("--tiny", action="store_true", help="30 epochs: a smoke run")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs = 30

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.tsv
        if path is None:
            path = Path(tmp) / "demo.tsv"
            path.write_text(DEMO)
        try:
            hierarchy = load_hierarchy(Path(path))  # a Path is always a file, never a shipped dataset's name
        except HierarchyError as e:  # unreadable file, malformed line, cycle: the message names it
            p.error(str(e))
    pairs = len(hierarchy.closure_pairs())
    print(f"{args.tsv or 'built-in example'}: {len(hierarchy.nodes)} concepts, {pairs} (concept, ancestor) pairs")

    cfg = embeddings.EmbedConfig(
        dim=args.dim, epochs=args.epochs, negatives=args.negatives, eval_every=0, seed=args.seed
    )
    result = embeddings.train_embedding(cfg, hierarchy, progress=False)
    metrics = result["metrics"]
    print(f"MAP {metrics['map']:.3f}, mean rank {metrics['mean_rank']:.2f} ({metrics['train_seconds']:.1f} s)")

    emb, nodes = result["embedding"], result["nodes"]  # (n, dim) float64 points on the ball
    order = emb.norm(dim=-1).argsort()
    show = max(1, min(5, len(nodes) // 2))
    print("nearest the centre:  ", ", ".join(nodes[i] for i in order[:show].tolist()))
    print("nearest the boundary:", ", ".join(nodes[i] for i in order[-show:].tolist()))

    if args.out:
        embeddings.save_embedding(args.out, emb, nodes, cfg)
        loaded, loaded_nodes, meta = embeddings.load_embedding(args.out)
        index = embeddings.ClosureIndex.from_hierarchy(hierarchy)
        again = embeddings.reconstruction(loaded, index, manifold=meta["manifold"], c=float(meta["c"]))
        assert loaded_nodes == nodes
        print(f"saved {args.out}; reloaded: MAP {again['map']:.3f}, mean rank {again['mean_rank']:.2f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
