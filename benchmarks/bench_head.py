"""Forward + backward time of HyperbolicDistanceHead against nn.Linear and the naive geoopt broadcast.

Batch 4,096, dim 16, 1,200 classes (float32, CPU), all in one process. Each head runs in
interleaved rounds with the linear layer (linear, head, linear, head, …) so that a slow spell of a
shared machine hits both alike; each ratio is the median over rounds of the per-round ratio, and
the medians of the times are printed beside it. The two heads are not interleaved with each
other: the eager kernel's nine N×M buffers per step churn glibc's heap, and the page faults of
that churn would then be charged to whatever runs next. Two losses are timed: a fixed random upstream
gradient (the head alone) and cross-entropy over the logits (the head as it is trained).

    python benchmarks/bench_head.py [--rounds 40] [--threads N]

``head`` is the default kernel (the native one for float32 on the CPU), ``head_eager`` the
PyTorch-ops kernel; the naive broadcast (``ball.dist(x[:, None], protos[None])``, an
N×M×d tensor) is timed in a few separate rounds since one call takes seconds.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import geoopt
import torch
import torch.nn.functional as F
from report import add_out_argument, write_result

from hyperr1.native import dispatch
from hyperr1.nn import HyperbolicDistanceHead


def seconds(step) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def interleaved(cases: dict, rounds: int, warmup: int = 10) -> dict[str, list[float]]:
    """Per-case lists of times, the cases run one after another in each round."""
    times = {name: [] for name in cases}
    for r in range(warmup + rounds):
        for name, step in cases.items():
            t = seconds(step)
            if r >= warmup:
                times[name].append(t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--classes", type=int, default=1200)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--naive-rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    add_out_argument(p, "results/bench_head.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, d, k = args.batch, args.dim, args.classes

    ball = geoopt.PoincareBall()
    x = ball.projx(torch.randn(n, d) * 0.1).requires_grad_()  # inputs on the ball
    xe = torch.randn(n, d).requires_grad_()  # inputs for the linear layer
    head = HyperbolicDistanceHead(d, k, init_std=0.1)  # kernel="auto": native here
    eager = HyperbolicDistanceHead(d, k, init_std=0.1, kernel="eager")
    eager.load_state_dict(head.state_dict())
    linear = torch.nn.Linear(d, k)
    upstream = torch.randn(n, k)
    target = torch.randint(0, k, (n,))
    protos = head.prototypes

    forwards = {"linear": lambda: linear(xe), "head": lambda: head(x), "head_eager": lambda: eager(x)}
    losses = {
        "upstream_grad": lambda out: out.backward(upstream),
        "cross_entropy": lambda out: F.cross_entropy(out, target).backward(),
    }
    results = {}
    for loss_name, backward in losses.items():
        for name in ("head", "head_eager"):  # each against its own linear rounds: see the docstring
            cases = {case: (lambda fwd=forwards[case], bw=backward: bw(fwd())) for case in ("linear", name)}
            times = interleaved(cases, args.rounds)
            results[f"{loss_name}/{name}_ms"] = round(1e3 * statistics.median(times[name]), 3)
            results[f"{loss_name}/linear_ms ({name} rounds)"] = round(1e3 * statistics.median(times["linear"]), 3)
            ratios = [h / lin for h, lin in zip(times[name], times["linear"], strict=True)]
            results[f"{loss_name}/{name}_over_linear"] = round(statistics.median(ratios), 3)
    naive_cases = {
        "head": lambda: head(x).backward(upstream),
        "naive": lambda: (-ball.dist(x[:, None, :], protos[None, :, :])).backward(upstream),
    }
    naive = interleaved(naive_cases, args.naive_rounds, warmup=1)
    results["upstream_grad/naive_ms"] = round(1e3 * statistics.median(naive["naive"]), 1)
    results["upstream_grad/naive_over_head"] = round(
        statistics.median(nv / h for nv, h in zip(naive["naive"], naive["head"], strict=True)), 1
    )
    results["head_kernel"] = dispatch.resolve_kernel(head.kernel, x.detach())
    results["rounds"] = args.rounds
    results["machine"] = f"{platform.machine()} {platform.processor() or ''} threads={torch.get_num_threads()}"
    results["shape"] = {"batch": n, "dim": d, "classes": k}
    write_result(results, args.out, "results/bench_head.json")


if __name__ == "__main__":
    main()
