"""Print a train run's held-out accuracy before and after GRPO and the lift with its paired CI.

python scripts/show_lift.py runs/quick_poincare/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    path = Path(sys.argv[1])
    if not path.is_file():
        sys.exit(f"error: {path} does not exist (did the run finish?)")
    res = json.loads(path.read_text())
    if "lift" not in res:
        sys.exit(f"error: {path} has no lift (a run from before per-example evaluations); rerun it")
    print(f"{res['name']} (seed {res['seed']}), held-out accuracy, hops >= 3, 95% bootstrap CIs:")
    for split, lift in res["lift"].items():
        w, g = res["warm_start"][split]["accuracy"], res["grpo"][split]["accuracy"]
        lo, hi = lift["ci"]
        verdict = "excludes 0" if lo > 0 or hi < 0 else "includes 0"
        print(
            f"  {split:20s} warm start {w['value']:.3f}  GRPO {g['value']:.3f}  "
            f"lift {100 * lift['value']:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] ({verdict}, n = {lift['n']})"
        )


if __name__ == "__main__":
    main()
