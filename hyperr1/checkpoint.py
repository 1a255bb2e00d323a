"""Crash-consistent checkpoints: atomic save, validated load, keep-N pruning, RNG states.

A checkpoint is a directory ``<root>/step_NNNNNN/``::

    model/               the policy (``save_pretrained``: config.json + model.safetensors)
    optimizer.pt         the optimizer's ``state_dict`` (loaded with ``weights_only=True``)
    rng_rank<r>.pt       per rank: torch's global RNG state and the trainer's generators
    state.json           the manifest, written last: step, the trainer's JSON state, the
                         resolved config of the run, and every file above with its size and SHA-256

It is written into ``step_NNNNNN.tmp/`` and renamed into place, so a kill at any moment leaves
either the complete directory or no directory of that name. A directory counts as a checkpoint
only when its name is exactly ``step_NNNNNN``, its ``state.json`` parses and every file it lists
is present with the recorded size and hash; :func:`latest_checkpoint` skips a damaged one (a
truncated safetensors file, a garbage optimizer file, a bad manifest) with a warning naming it and
falls back to the newest intact one. Pruning renames an old checkpoint to ``*.trash`` before
deleting it, so no half-deleted directory ever looks complete. (Consistent against process kills;
files are not fsync'ed, so a power loss may still lose the newest checkpoint.)
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path

import torch

from hyperr1.distributed import barrier, world
from hyperr1.faults import crash_point
from hyperr1.model import save_policy

MANIFEST = "state.json"
_NAME = re.compile(r"step_(\d{6})")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason and the path."""


def checkpoint_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step:06d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(directory: Path) -> dict[str, dict]:
    """Every file under ``directory`` (but the manifest) with its size and SHA-256."""
    return {
        str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def problem(path: str | Path) -> str | None:
    """Why ``path`` is not an intact checkpoint, or None if it is."""
    path = Path(path)
    if not _NAME.fullmatch(path.name):
        return f"{path.name!r} is not a checkpoint name (step_NNNNNN)"
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST}"
    try:
        meta = json.loads(manifest.read_text())
        files, step = meta["files"], meta["step"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        return f"{manifest} does not parse: {err}"
    if step != int(_NAME.fullmatch(path.name).group(1)):
        return f"{MANIFEST} says step {step}"
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != want["bytes"]:
            return f"{rel} has {f.stat().st_size} bytes, the manifest recorded {want['bytes']}"
        if _sha256(f) != want["sha256"]:
            return f"{rel} does not match its recorded SHA-256"
    return None


def candidates(root: str | Path) -> list[Path]:
    """Directories named ``step_NNNNNN`` under ``root``, oldest first (temporary and trash
    directories are never candidates)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def intact_checkpoints(root: str | Path, *, warn: bool = True) -> list[Path]:
    """The intact checkpoints under ``root``, oldest first; a damaged one is skipped with a warning."""
    good = []
    for path in candidates(root):
        why = problem(path)
        if why is None:
            good.append(path)
        elif warn:
            warnings.warn(f"skipping damaged checkpoint {path}: {why}", stacklevel=2)
    return good


def latest_checkpoint(root: str | Path, *, warn: bool = True) -> Path | None:
    """The newest intact checkpoint under ``root`` (None if there is none)."""
    good = intact_checkpoints(root, warn=warn)
    return good[-1] if good else None


def step_of(path: str | Path) -> int:
    return int(_NAME.fullmatch(Path(path).name).group(1))


def _remove(path: Path) -> None:
    """Rename ``path`` out of the candidates, then delete it."""
    trash = path.with_name(path.name + ".trash")
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    crash_point("ckpt/pruning")
    shutil.rmtree(trash)


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    model,
    optimizer: torch.optim.Optimizer,
    state: dict,
    config: dict,
    rng: dict[str, torch.Tensor],
    keep: int,
) -> Path:
    """Write the checkpoint of ``step`` atomically (every rank calls this; rank 0 writes the shared
    files, each rank its own ``rng``), then prune to the newest ``keep``. Returns its path."""
    rank, size = world()
    root = Path(root)
    path = checkpoint_dir(root, step)
    tmp = path.with_name(path.name + ".tmp")
    if rank == 0:
        tidy(root, keep=None)
        tmp.mkdir(parents=True)
        save_policy(model, tmp / "model")
        crash_point("ckpt/model")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        crash_point("ckpt/optimizer")
    barrier()
    torch.save(rng, tmp / f"rng_rank{rank}.pt")
    barrier()
    if rank == 0:
        crash_point("ckpt/rng")
        meta = {"step": step, "world_size": size, "state": state, "config": config, "files": _files(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(meta) + "\n")
        crash_point("ckpt/manifest")
        if path.exists():  # the same step saved again after a rollback
            _remove(path)
        tmp.rename(path)
        crash_point("ckpt/renamed")
        tidy(root, keep=keep)
    barrier()
    return path


def tidy(root: str | Path, *, keep: int | None) -> None:
    """Delete what a killed save or prune left behind (``*.tmp``, ``*.trash``) and, with ``keep``,
    all but the newest ``keep`` intact checkpoints (rank 0 only; also run when a run resumes)."""
    root = Path(root)
    if not root.is_dir():
        return
    for stale in root.iterdir():
        if stale.is_dir() and _NAME.fullmatch(stale.name.rsplit(".", 1)[0]) and stale.suffix in (".tmp", ".trash"):
            shutil.rmtree(stale, ignore_errors=True)
    if keep is not None:
        for old in intact_checkpoints(root, warn=False)[:-keep]:
            _remove(old)


def load_checkpoint(path: str | Path, *, model, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Restore the model and optimizer in place from ``path``; returns ``(manifest, rng)`` where
    ``manifest`` holds ``step``, ``state`` and ``config`` and ``rng`` is this rank's RNG states.

    Raises :class:`CheckpointError` naming the path when it is not intact or was written by a
    different number of ranks.
    """
    path = Path(path)
    if (why := problem(path)) is not None:
        raise CheckpointError(f"{path} is not a complete checkpoint: {why}")
    meta = json.loads((path / MANIFEST).read_text())
    rank, size = world()
    if meta.get("world_size", 1) != size:
        raise CheckpointError(f"{path} was written by {meta['world_size']} ranks; this run has {size}")
    try:
        model.load_weights(path / "model")
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        rng = torch.load(path / f"rng_rank{rank}.pt", weights_only=True)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"cannot load checkpoint {path}: {err}") from err
    for st in optimizer.state.values():  # geoopt counts steps in a Python int; torch's loader
        if torch.is_tensor(st.get("step")):  # makes it a float32 tensor, which changes Adam's bias
            st["step"] = int(st["step"].item())  # correction in the 8th digit: resume would drift
    return meta, rng


__all__ = [
    "CheckpointError",
    "MANIFEST",
    "candidates",
    "checkpoint_dir",
    "intact_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "problem",
    "save_checkpoint",
    "step_of",
    "tidy",
]
