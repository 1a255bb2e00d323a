"""Reward speed on adversarial completions: every reward must take time linear in the text length.

Each reward of :mod:`hyperr1.rewards` scores one completion of n bytes, for n = 1 KB, 64 KB and
1 MB and for 4n beside each n; the best of ``--repeats`` runs is printed with the growth ratio

    ratio(n) = time(4n) / time(n)        ≈ 4 for O(n) work, ≈ 16 for O(n²).

The inputs are the ones that made a reward quadratic or are likely to: runs of special tokens
(``</s> </s> ...``, glued ``</s></s>...``, leading ``<s> <pad> ...``), a run of open tags, one long
well-formed chain, many one-concept chains (with and without ``;``), a chain of retractions, and a
single huge token. A case whose time passes ``--budget`` seconds skips its larger sizes (printed as
``skipped``), so that the quadratic version of the code can be measured too. Times are wall-clock,
or this process's CPU time with ``--clock cpu`` (steadier on a shared machine); the header gives
the load average, since other work on the machine slows every row alike.

    python benchmarks/bench_rewards.py [--repeats 3] [--budget 20] [--clock wall|cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

from hyperr1 import rewards as R
from hyperr1.hierarchy import Hierarchy

KB = 1024
SIZES = (KB, 64 * KB, 1024 * KB)  # n; each is also timed at 4n for the growth ratio


def _repeat(unit: str, n: int, head: str = "", tail: str = "") -> str:
    """``head + unit * k + tail`` with k chosen so that the text is about ``n`` characters."""
    k = max(1, (n - len(head) - len(tail)) // len(unit))
    return head + unit * k + tail


CASES: dict[str, Callable[[int], str]] = {
    "eos_run": lambda n: _repeat("</s> ", n, "<think> a -> b </think> <answer> b </answer> "),
    "eos_glued": lambda n: _repeat("</s>", n, "<think> a -> b </think> <answer> b </answer>"),
    "bos_pad_run": lambda n: _repeat("<s> <pad> ", n, tail="<think> a -> b </think> <answer> b </answer>"),
    "open_tags": lambda n: _repeat("<answer> ", n),
    "long_chain": lambda n: _repeat("n0.1 -> ", n, "<think> ", "n0 </think> <answer> n0 </answer>"),
    "many_chains": lambda n: _repeat("n0 ; ", n, "<think> ", "n0 </think> <answer> n0 </answer>"),
    "concept_soup": lambda n: _repeat("n0 ", n, "<think> ", "</think>"),  # each concept its own chain
    "retractions": lambda n: _repeat("wait n0.1 ", n, "<think> n0.1.0 -> n0.0 ", "</think> <answer> n0.1 </answer>"),
    "one_token": lambda n: "x" * n,
}


def reward_fns(h: Hierarchy) -> dict[str, Callable[[list[str]], list[float]]]:
    """Every reward as a function of a list of completions (gold answers bound where needed)."""
    gold = {"answers": [["n0.1", "b"]]}
    composite = R.composite_reward(R.RewardWeights(1, 1, 1, 1), h)
    fns = {
        "format": lambda c: R.format_reward(c),
        "tag_count": lambda c: R.tag_count_reward(c),
        "accuracy": lambda c: R.accuracy_reward(c, **gold),
        "faithfulness": R.make_faithfulness_reward(h),
        "composite": lambda c: composite(c, **gold),
    }
    if hasattr(R, "score_completions"):  # the single-parse API (absent before it was added)
        w = R.RewardWeights(1, 1, 1, 1)
        fns["score_completions"] = lambda c: R.score_completions(c, gold["answers"], w, h).total
    return fns


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: this process only, steadier on a busy machine


def best_time(fn: Callable[[list[str]], list[float]], text: str, repeats: int, clock=time.perf_counter) -> float:
    """Best time of ``repeats`` calls on ``[text]`` (the least disturbed by the machine)."""
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn([text])
        times.append(clock() - t0)
    return min(times)


def _ms(t: float | None) -> str:
    return "skipped" if t is None else f"{t * 1e3:9.2f}ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=20.0, help="skip larger sizes of a case past this many seconds")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall-clock or this process's CPU time")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    clock = CLOCKS[args.clock]
    h = Hierarchy.balanced_tree(2, 3)
    rows = []
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    where = f"python {platform.python_version()} {platform.machine()}, load average {load}"
    print(f"{where}; {args.clock} time, best of {args.repeats}")
    print(f"{'reward':<18} {'case':<12} {'n':>8} {'time(n)':>11} {'time(4n)':>11} {'ratio':>7}")
    for rname, fn in reward_fns(h).items():
        for cname, make in CASES.items():
            over = False
            for n in SIZES:
                row = {"reward": rname, "case": cname, "n": n, "t_n": None, "t_4n": None, "ratio": None}
                if not over:
                    row["t_n"] = best_time(fn, make(n), args.repeats, clock)
                    over = row["t_n"] > args.budget
                if not over:
                    row["t_4n"] = best_time(fn, make(4 * n), args.repeats, clock)
                    over = row["t_4n"] > args.budget
                    row["ratio"] = row["t_4n"] / max(row["t_n"], 1e-9)  # guard: a clock tick of 0
                rows.append(row)
                ratio = "" if row["ratio"] is None else f"{row['ratio']:7.1f}"
                print(f"{rname:<18} {cname:<12} {n // KB:>6}KB {_ms(row['t_n']):>11} {_ms(row['t_4n']):>11} {ratio:>7}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
