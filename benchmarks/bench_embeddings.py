"""Wall-clock time to a reconstruction MAP on the mammal closure: hyperr1 against gensim.

gensim's ``PoincareModel`` (pure NumPy) is what a user would otherwise pick. Both train on the
same 6,448 (node, ancestor) pairs at dim 5 and are scored by the same
:func:`hyperr1.embeddings.reconstruction`. gensim is an optional benchmark dependency
(``pip install gensim``); without it only hyperr1 runs.

    python benchmarks/bench_embeddings.py [--target 0.90] [--gensim-epochs 50] [--gensim-budget 300]

Prints seconds to reach the target MAP for each and their ratio.

    python benchmarks/bench_embeddings.py --step-ab wordnet:entity.n.01 [--steps 200]

times one training step of three kernels, alternating: the first loop (autograd through the
whole table, geoopt's dense ``RiemannianSGD``), :func:`hyperr1.embeddings.sparse_sgd_step`
(closed-form gradients of the touched rows only, PyTorch ops) and the fused C step
(:class:`hyperr1.native.EmbedStep`, the default ``kernel="auto"``), in CPU seconds
(``time.process_time``, steadier than the wall clock on a shared machine) and wall seconds.

The time-to-MAP run writes ``results/bench_embeddings.json`` (``--out``; ``''``: nowhere), the
step A/B ``results/bench_embeddings_steps.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from report import add_out_argument, write_result

from hyperr1.embeddings import ClosureIndex, EmbedConfig, reconstruction, seconds_to_map, train_embedding
from hyperr1.hierarchy import load_hierarchy


def run_gensim(h, index, *, target: float, epochs_per_round: int, budget_s: float, seed: int) -> dict:
    from gensim.models.poincare import PoincareModel

    relations = [(u, v) for u, v in h.closure_pairs()]
    model = PoincareModel(relations, size=5, negative=10, burn_in=10, seed=seed, workers=1)
    history, elapsed = [], 0.0
    while elapsed < budget_s:
        t0 = time.perf_counter()
        model.train(epochs=epochs_per_round, print_every=10**9)
        elapsed += time.perf_counter() - t0
        emb = torch.from_numpy(np.stack([model.kv[v] for v in h.nodes])).double()
        rec = reconstruction(emb, index, manifold="poincare", c=1.0)
        history.append({"seconds": elapsed, "map": rec["map"], "mean_rank": rec["mean_rank"]})
        print(f"gensim: {elapsed:6.1f}s  MAP {rec['map']:.3f}  mean rank {rec['mean_rank']:.2f}", flush=True)
        if rec["map"] >= target:
            break
    return {"seconds_to_target": seconds_to_map(history, target), "history": history}


def step_ab(data: str, steps: int, repeats: int = 2) -> dict:
    from hyperr1 import geometry, native
    from hyperr1.embeddings import draw_negatives, make_embedding, nickel_kiela_loss, sparse_sgd_step
    from hyperr1.optim import riemannian_optimizer

    torch.set_num_threads(1)
    h = load_hierarchy(data)
    index = ClosureIndex.from_hierarchy(h)
    cfg = EmbedConfig(dim=10)
    kw = {"negatives": cfg.negatives, "manifold": "poincare", "c": 1.0}
    times: dict[str, list[tuple[float, float]]] = {"dense": [], "sparse": [], "native": []}
    fused = native.EmbedStep(len(h), cfg.dim, index.keys, batch=cfg.batch_size, negatives=cfg.negatives)
    maxnorm = float(geometry.ball(cfg.c, boundary_eps=cfg.boundary_eps).max_norm(torch.float64))
    for _ in range(repeats):
        for mode in times:
            torch.manual_seed(0)
            emb, gen = make_embedding(len(h), cfg), torch.Generator().manual_seed(0)
            opt = riemannian_optimizer([emb], name="sgd", lr=cfg.lr)
            perm = torch.randperm(index.pairs.shape[0], generator=gen)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for s in range(steps):
                batch = index.pairs[perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]]
                if mode == "native":
                    neg = draw_negatives(len(h), len(batch), cfg.negatives, gen)
                    fused(emb.data, batch, neg, c=1.0, lr=cfg.lr, maxnorm=maxnorm, poincare=True)
                elif mode == "sparse":
                    sparse_sgd_step(emb, batch, index, lr=cfg.lr, generator=gen, **kw)
                else:
                    loss = nickel_kiela_loss(emb, batch, index, generator=gen, **kw)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss.item()
            times[mode].append(((time.process_time() - cpu0) / steps, (time.perf_counter() - wall0) / steps))
    best = {m: tuple(min(t[i] for t in v) for i in range(2)) for m, v in times.items()}
    return {
        "data": data,
        "nodes": len(h),
        "pairs": int(index.pairs.shape[0]),
        **{f"{m}_ms_per_step_cpu": 1e3 * b[0] for m, b in best.items()},
        **{f"{m}_ms_per_step_wall": 1e3 * b[1] for m, b in best.items()},
        "batch": cfg.batch_size,
        "negatives": cfg.negatives,
        "dense_over_sparse_cpu": best["dense"][0] / best["sparse"][0],
        "dense_over_sparse_wall": best["dense"][1] / best["sparse"][1],
        "sparse_over_native_cpu": best["sparse"][0] / best["native"][0],
        "sparse_over_native_wall": best["sparse"][1] / best["native"][1],
        "machine": f"{platform.machine()} cpus={os.cpu_count()} threads=1",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--gensim-epochs", type=int, default=20, help="gensim epochs between evaluations")
    p.add_argument("--gensim-budget", type=float, default=600.0, help="seconds before gensim is stopped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step-ab", metavar="DATA", help="time dense vs sparse training steps on DATA instead")
    p.add_argument("--steps", type=int, default=200, help="steps per timing of --step-ab")
    add_out_argument(p, "results/bench_embeddings.json, or results/bench_embeddings_steps.json with --step-ab")
    args = p.parse_args()
    if args.step_ab:
        write_result(step_ab(args.step_ab, args.steps), args.out, "results/bench_embeddings_steps.json")
        return
    load_at_start = os.getloadavg()[0]  # another busy process skews every figure
    h = load_hierarchy("mammals")
    index = ClosureIndex.from_hierarchy(h)

    cfg = EmbedConfig(dim=5, seed=args.seed, eval_every=5, target_map=args.target)
    run = train_embedding(cfg, hierarchy=h, progress=False)
    ours, ours_s = run["metrics"], seconds_to_map(run["history"], args.target)
    print(f"hyperr1: MAP {ours['map']:.3f} after {ours['train_seconds']:.1f}s", flush=True)
    result = {"target_map": args.target, "hyperr1_seconds": ours_s, "hyperr1_final_map": ours["map"]}
    try:
        import gensim  # noqa: F401
    except ImportError:
        result["gensim"] = "not installed (pip install gensim)"
    else:
        g = run_gensim(
            h,
            index,
            target=args.target,
            epochs_per_round=args.gensim_epochs,
            budget_s=args.gensim_budget,
            seed=args.seed,
        )
        result["gensim_seconds"] = g["seconds_to_target"]
        result["gensim_history"] = g["history"]
        if g["seconds_to_target"] and ours_s:
            result["gensim_over_hyperr1"] = g["seconds_to_target"] / ours_s
    result["machine"] = f"{platform.machine()} cpus={os.cpu_count()} threads={torch.get_num_threads()}"
    result["load_average_at_start"] = load_at_start
    write_result(result, args.out, "results/bench_embeddings.json")


if __name__ == "__main__":
    main()
