"""Where a benchmark's result goes: printed as JSON and written to ``results/bench_<name>.json``,
which ``paper/make_tables.py`` reads for the paper's speed table."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(result: dict, out: str | None, default: str) -> None:
    """Print ``result`` as JSON and write it to ``out`` (``default`` when None, nowhere when '')."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    path = default if out is None else out
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def add_out_argument(parser, default: str) -> None:
    parser.add_argument("--out", default=None, help=f"JSON output (default {default}; '': nowhere)")
