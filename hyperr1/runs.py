"""Run-directory plumbing shared by every entry point: metadata and JSON writing.

Every run saves its resolved config next to its metrics together with :func:`run_metadata`
(package version, git commit, torch version, host, time), so a result can be traced to code.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from pathlib import Path

import torch

import hyperr1


def git_commit() -> str | None:
    """The commit of the working tree holding this package, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(hyperr1.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_metadata() -> dict:
    return {
        "hyperr1_version": hyperr1.__version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "num_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _clean(obj):
    """JSON has no NaN/inf: write them as strings rather than invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically (temp file + rename), so no half-written results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
