"""Run a benchmark several times and record the run-to-run range of one of its ratios.

Each run writes its own JSON (``--out``); the run with the median ratio becomes the benchmark's
result file, and ``results/bench_repeats.json`` keeps every run's ratio under the benchmark's name
(with min / median / max), which the README quotes as the range.

    python benchmarks/repeat.py --runs 3 --key generate_over_hyperr1_sample -- python benchmarks/bench_sampler.py
    python benchmarks/repeat.py --runs 3 --key trl_over_hyperr1 --name bench_grpo_question \\
        -- /work/trlenv/bin/python benchmarks/bench_grpo.py --prompt question
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--key", required=True, help="the ratio in the benchmark's JSON (dotted for nested keys)")
    p.add_argument("--name", default=None, help="result name (default: the benchmark script's stem)")
    p.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: results/)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- the benchmark command")
    args = p.parse_args(argv)
    command = [c for c in args.command if c != "--"] if args.command[:1] == ["--"] else args.command
    if not command or args.runs < 1:
        p.error("give --runs >= 1 and the benchmark command after --")
    name = args.name or Path(next(c for c in command if c.endswith(".py"))).stem
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}.json"
            subprocess.run([*command, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
            value = json.loads(out.read_text())
            for part in args.key.split("."):
                value = value[part]
            runs.append((float(value), out))
            print(f"{name} run {i + 1}/{args.runs}: {args.key} = {value:.3f} (load {os.getloadavg()[0]:.2f})")
        ordered = sorted(runs, key=lambda r: r[0])
        median_run = ordered[(len(ordered) - 1) // 2][1]
        shutil.copy(median_run, args.results / f"{name}.json")
    ratios = [r[0] for r in runs]
    path = args.results / "bench_repeats.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table[name] = {
        "key": args.key, "runs": ratios, "min": min(ratios), "median": statistics.median(ratios), "max": max(ratios),
        "command": " ".join(command),
    }  # fmt: skip
    path.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    print(json.dumps(table[name]))


if __name__ == "__main__":
    sys.exit(main())
