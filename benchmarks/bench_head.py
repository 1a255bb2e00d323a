"""Forward + backward time of HyperbolicDistanceHead against nn.Linear and the naive geoopt broadcast.

Batch 4,096, dim 16, 1,200 classes (float32, CPU), all three in one process, each timed as the
median of repeated runs after warm-up. Two losses are timed: a fixed random upstream gradient
(the head alone) and cross-entropy over the logits (the head as it is trained).

    python benchmarks/bench_head.py [--repeats 30] [--threads N]

Prints the medians and the ratios head/linear (eager and ``kernel="compiled"``) and naive/head.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import geoopt
import torch
import torch.nn.functional as F

from hyperr1.nn import HyperbolicDistanceHead


def median_ms(step, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--classes", type=int, default=1200)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--naive-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, d, k = args.batch, args.dim, args.classes

    ball = geoopt.PoincareBall()
    x = ball.projx(torch.randn(n, d) * 0.1).requires_grad_()  # inputs on the ball
    xe = torch.randn(n, d).requires_grad_()  # inputs for the linear layer
    head = HyperbolicDistanceHead(d, k, init_std=0.1)
    compiled = HyperbolicDistanceHead(d, k, init_std=0.1, kernel="compiled")
    compiled.load_state_dict(head.state_dict())
    linear = torch.nn.Linear(d, k)
    upstream = torch.randn(n, k)
    target = torch.randint(0, k, (n,))
    protos = head.prototypes

    def naive_logits():
        return -ball.dist(x[:, None, :], protos[None, :, :])  # (N, K, d) broadcast

    cases = {
        "linear": lambda: linear(xe),
        "head": lambda: head(x),
        "head_compiled": lambda: compiled(x),
        "naive": naive_logits,
    }
    results = {}
    for loss_name, backward in {
        "upstream_grad": lambda out: out.backward(upstream),
        "cross_entropy": lambda out: F.cross_entropy(out, target).backward(),
    }.items():
        for name, fwd in cases.items():
            reps = args.naive_repeats if name == "naive" else args.repeats
            results[f"{loss_name}/{name}_ms"] = median_ms(lambda fwd=fwd, backward=backward: backward(fwd()), reps)
        for variant in ("head", "head_compiled"):
            results[f"{loss_name}/{variant}_over_linear"] = (
                results[f"{loss_name}/{variant}_ms"] / results[f"{loss_name}/linear_ms"]
            )
        results[f"{loss_name}/naive_over_head"] = results[f"{loss_name}/naive_ms"] / results[f"{loss_name}/head_ms"]
    results["machine"] = f"{platform.machine()} {platform.processor() or ''} threads={torch.get_num_threads()}"
    results["shape"] = {"batch": n, "dim": d, "classes": k}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
