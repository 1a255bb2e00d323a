"""The hierarchy construction alone, over a grid of (a, s₀, ε): how the level spacing and the
boundary margin were chosen for the noun-closure runs.

For each grid point, :func:`hyperr1.embeddings.hierarchy_init` places the closure of ``--root`` and
the reconstruction is evaluated on a fixed random sample of nodes (the sampled MAP of the training
curves), overall and for the nodes at depth ≥ ``--deep`` (those that ε = 1e-10 clips at a ≥ 2.2).
No training. Writes ``<out>/init_grid.md`` and ``init_grid.jsonl``.

    python experiments/nouns_init_grid.py [--root entity.n.01] [--sample 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import torch

from hyperr1.embeddings import ClosureIndex, EmbedConfig, make_embedding, reconstruction
from hyperr1.hierarchy import load_hierarchy

GRID = [  # (dim, a, s₀, ε): the points probed, in the order they were tried
    (5, 2.2, 2.5, 1e-10),
    (5, 2.2, 2.5, 1e-12),
    (5, 1.8, 2.5, 1e-12),
    (5, 2.0, 2.5, 1e-12),
    (5, 2.2, 2.5, 1e-14),
    (5, 2.5, 2.5, 1e-14),
    (5, 2.8, 2.5, 1e-14),
    (5, 2.8, 3.0, 1e-14),
    (5, 2.8, 3.5, 1e-14),
    (5, 3.0, 3.0, 1e-14),
    (5, 3.2, 3.5, 1e-14),
    (10, 1.8, 2.0, 1e-10),
    (10, 1.8, 2.0, 1e-14),
    (10, 2.2, 2.0, 1e-14),
    (10, 2.5, 2.5, 1e-14),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="entity.n.01")
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--deep", type=int, default=11)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("results/embeddings_nouns"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    h = load_hierarchy(f"wordnet:{args.root}")
    index = ClosureIndex.from_hierarchy(h)
    n = len(h.nodes)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))[: args.sample]
    depth = torch.tensor([h.depth(x) for x in h.nodes])
    deep = rows[depth[rows] >= args.deep]
    results = []
    for dim, a, s0, eps in GRID:
        cfg = EmbedConfig(
            data=f"wordnet:{args.root}", dim=dim, init_scheme="hierarchy", init_level=a, init_spread=s0,
            boundary_eps=eps, seed=args.seed,
        ).validate()  # fmt: skip
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            emb = make_embedding(n, cfg, h).data
        clipped = sum(1 for w in caught if "hierarchy_init" in str(w.message))
        r = reconstruction(emb, index, manifold="poincare", c=1.0, rows=rows)
        rd = reconstruction(emb, index, manifold="poincare", c=1.0, rows=deep)
        cap = 2 * math.atanh(1 - eps)
        row = {
            "dim": dim, "a": a, "s0": s0, "eps": eps, "radius_cap": cap,
            "first_clipped_depth": math.ceil(cap / a), "clipped_nodes": int((depth >= math.ceil(cap / a)).sum()),
            "map": r["map"], "mean_rank": r["mean_rank"], "deep_map": rd["map"], "deep_mean_rank": rd["mean_rank"],
            "warned": bool(clipped), "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        results.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "init_grid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    lines = [
        f"The construction alone on wordnet:{args.root} ({n:,} nodes), no training: sampled reconstruction "
        f"({len(rows):,} fixed random nodes, seed {args.seed}; depth ≥ {args.deep}: {len(deep):,} of them).",
        "",
        "| dim | a | s₀ | ε | radius cap | clipped from depth | clipped nodes | MAP | mean rank "
        f"| MAP, depth ≥ {args.deep} | mean rank, depth ≥ {args.deep} |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['dim']} | {r['a']:g} | {r['s0']:g} | {r['eps']:g} | {r['radius_cap']:.1f} | "
            f"{r['first_clipped_depth']} | {r['clipped_nodes']:,} | {r['map']:.3f} | {r['mean_rank']:.1f} | "
            f"{r['deep_map']:.3f} | {r['deep_mean_rank']:.1f} |"
        )
    lines += ["", f"Command: `python experiments/nouns_init_grid.py --root {args.root} --sample {args.sample}`"]
    (args.out / "init_grid.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
