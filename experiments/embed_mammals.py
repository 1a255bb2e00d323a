"""Experiment: Poincaré vs Euclidean embeddings of the WordNet mammal closure, dims 2/5/10.

Writes ``results/embeddings/<manifold>_d<dim>/`` (config, metrics, history, embedding) for every
cell and ``results/embeddings/table.md`` / ``table.json`` with MAP, mean rank, seconds and the
time to reach MAP 0.90 / 0.95. Hyperparameters are the defaults of
:class:`hyperr1.embeddings.EmbedConfig`; this script only chooses the grid.

    python experiments/embed_mammals.py [--dims 2 5 10] [--manifolds poincare euclidean] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from hyperr1.embeddings import EmbedConfig, run_embed
from hyperr1.runs import write_json


@dataclasses.dataclass
class ExperimentConfig:
    dims: tuple[int, ...] = (2, 5, 10)  # embedding dimensions of the table
    manifolds: tuple[str, ...] = ("poincare", "euclidean")  # geometries compared
    seed: int = 0  # seed of every cell
    out: str = "results/embeddings"  # results directory


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=list(ExperimentConfig.dims))
    p.add_argument("--manifolds", nargs="+", default=list(ExperimentConfig.manifolds))
    p.add_argument("--seed", type=int, default=ExperimentConfig.seed)
    p.add_argument("--out", default=ExperimentConfig.out)
    args = p.parse_args()
    exp = ExperimentConfig(tuple(args.dims), tuple(args.manifolds), args.seed, args.out)
    rows = []
    for dim in exp.dims:
        for manifold in exp.manifolds:
            cfg = EmbedConfig(manifold=manifold, dim=dim, seed=exp.seed, out=f"{exp.out}/{manifold}_d{dim}")
            metrics = run_embed(cfg)["metrics"]
            rows.append({"manifold": manifold, "dim": dim, **metrics})
            print(json.dumps(rows[-1]))
    write_json(Path(exp.out) / "table.json", {"experiment": dataclasses.asdict(exp), "rows": rows})
    lines = [
        "| dim | manifold | MAP | mean rank | train s | s to MAP 0.90 | s to MAP 0.95 | seed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dim']} | {r['manifold']} | {r['map']:.3f} | {r['mean_rank']:.2f} | {r['train_seconds']:.0f} | "
            f"{fmt(r['seconds_to_map_0.90'], '.0f')} | {fmt(r['seconds_to_map_0.95'], '.0f')} | {r['seed']} |"
        )
    table = "\n".join(lines) + "\n"
    (Path(exp.out) / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
