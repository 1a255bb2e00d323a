"""Run-directory plumbing shared by every entry point: the run record, the lock, JSON and JSONL.

**The run record** (``config.json``, one layout for ``hyperr1 embed | tasks | train`` and the warm
start)::

    {"kind": "train", "config": {...resolved config...},
     "meta": {"hyperr1_version", "git_commit", "torch_version", "python", "machine", "host",
              "num_threads", "command", "start_time"},
     "resumes": [{"time", "command", "overrides": {key: [old, new]}}, ...]}

:func:`write_record` writes it when a run starts; :func:`append_resume` keeps the first config
and appends each resume. :func:`config_changes` lists the keys a resume would change, so the
caller can refuse any change but the step budget.

**One writer per run directory**: :class:`RunLock` holds an exclusive ``flock`` on
``<dir>/.lock`` (which records the holder's PID and command). A second process fails at once
with :class:`RunLockedError` naming the holder; the kernel drops the lock of a process that dies,
so a stale lock file of a dead process is simply taken over.

**Append-only logs**: :func:`read_jsonl` names the file and line of every parse error; with
``repair_tail`` a torn last line (a kill mid-write) is cut with a warning instead.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import tomllib
import torch

import hyperr1

RECORD = "config.json"
LOCK = ".lock"


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


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


def run_metadata() -> dict:
    """Package version, git commit, versions, machine, thread count, command line and start time."""
    return {
        "hyperr1_version": hyperr1.__version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "host": platform.node(),
        "num_threads": torch.get_num_threads(),
        "command": command_line(),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---------------------------------------------------------------- JSON


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


def read_json(path: str | Path):
    """Parse a JSON file; ``ValueError`` naming the file, line and column on bad content."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err


def read_jsonl(path: str | Path, *, repair_tail: bool = False) -> list[dict]:
    """The rows of a JSON-lines file ([] if it does not exist).

    A line that does not parse is a ``ValueError`` naming the file and line — except, with
    ``repair_tail``, a torn *last* line without its newline (what a kill mid-write leaves), which
    is cut from the file with a warning.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="strict")
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            torn = i == len(lines) and not text.endswith("\n")
            if torn and repair_tail:
                warnings.warn(f"{path}: cutting a torn last line {i} ({len(line)} characters)", stacklevel=2)
                write_jsonl(path, rows)
                return rows
            raise ValueError(f"{path}, line {i}: invalid JSON ({err.msg}): {line[:80]!r}") from err
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Replace ``path`` by ``rows``, atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def append_jsonl(path: str | Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_config_file(path: str | Path) -> dict:
    """The table of a TOML (or ``.json``) config file; a UTF-8 byte-order mark is dropped. Errors
    name the file: missing, a directory, not UTF-8, or not parseable."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"config path {path} is a directory, not a TOML or JSON file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: strip a BOM, which tomllib rejects
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"cannot parse config file {path}: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a table, got {type(values).__name__}")
    return values


# ---------------------------------------------------------------- the run record


def write_record(directory: str | Path, config: dict, *, kind: str) -> dict:
    """Write the run record of a new run into ``directory/config.json``; returns it."""
    record = {"kind": kind, "config": config, "meta": run_metadata(), "resumes": []}
    write_json(Path(directory) / RECORD, record)
    return record


def read_record(directory: str | Path) -> dict:
    """The run record of ``directory``; ``FileNotFoundError`` naming what was looked for."""
    path = Path(directory) / RECORD
    if not path.is_file():
        raise FileNotFoundError(f"no run record {path} (is the run name or --out mistyped?)")
    record = read_json(path)
    if not isinstance(record, dict) or "config" not in record:
        raise ValueError(f"{path} is not a hyperr1 run record (no 'config')")
    return record


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


# settings added after runs were first recorded, with the value that reproduces a run recorded without them
ADDED_SETTINGS = {"sft.warmup_steps": 0, "sft.schedule": "constant", "sft.restarts": 1}


def config_changes(old: dict, new: dict) -> dict[str, list]:
    """``{dotted key: [old, new]}`` for every value that differs between two config dicts; a key of
    :data:`ADDED_SETTINGS` that ``old`` (an older record) lacks counts as its reproducing value."""
    a, b = _flatten(old), _flatten(new)
    for key, value in ADDED_SETTINGS.items():
        if key in b and key not in a:
            a[key] = value
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def append_resume(directory: str | Path, changes: dict) -> dict:
    """Append one resume (time, command line, the changed keys) to the record; the first config stays."""
    record = read_record(directory)
    record.setdefault("resumes", []).append(
        {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command_line(), "overrides": changes}
    )
    write_json(Path(directory) / RECORD, record)
    return record


def open_run_directory(
    run: str | Path, config: dict, *, kind: str, resumable: tuple[str, ...], resume: bool, overwrite: bool
) -> None:
    """Check that ``run`` may be written by this run (the caller holds its lock), and write or
    extend its record: a resume must find a record and may change only the keys in ``resumable``;
    a new run refuses a directory that holds files unless ``overwrite``, which clears it."""
    run = Path(run)
    if resume:
        record = read_record(run)
        changes = config_changes(record["config"], config)
        if refused := sorted(set(changes) - set(resumable)):
            detail = ", ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused)
            raise ValueError(
                f"--resume of {run} would change {refused} ({detail}); a resumed run keeps its config "
                f"(only {list(resumable)} may change): start a new run under another --name instead"
            )
        append_resume(run, changes)
        return
    if others := holds_other_files(run):
        if not overwrite:
            raise FileExistsError(
                f"run directory {run} already holds a run ({', '.join(others[:6])}); pass --resume to "
                "continue it or --overwrite to discard it and start again"
            )
        clear_directory(run)
    write_record(run, config, kind=kind)


# ---------------------------------------------------------------- one writer per directory


class RunLockedError(RuntimeError):
    """Another live process owns the run directory."""


class RunLock:
    """Exclusive lock on a run directory for the life of a ``with`` block (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.directory} is in use by another process ({holder}); "
                "wait for it, or use another --name / --out"
            ) from None
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if previous:  # the holder died without releasing it (the kernel released the flock)
            warnings.warn(f"taking over the stale lock of {self.directory} ({previous})", stacklevel=2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}: {command_line()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean exit leaves an empty (not stale) lock file
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holds_other_files(directory: str | Path) -> list[str]:
    """Names in ``directory`` other than its lock file (what a new run would mix with)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name != LOCK)


def clear_directory(directory: str | Path) -> None:
    """Delete everything in ``directory`` but its lock file (the caller holds the lock)."""
    import shutil

    for name in holds_other_files(directory):
        p = Path(directory) / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


__all__ = [
    "ADDED_SETTINGS",
    "RunLock",
    "RunLockedError",
    "append_jsonl",
    "append_resume",
    "clear_directory",
    "config_changes",
    "git_commit",
    "holds_other_files",
    "open_run_directory",
    "read_config_file",
    "read_json",
    "read_jsonl",
    "read_record",
    "run_metadata",
    "write_json",
    "write_jsonl",
    "write_record",
]
