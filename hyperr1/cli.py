"""``hyperr1 <command>``: the command-line entry points.

Each command is one config dataclass; its fields become ``--flags`` (underscores as dashes),
a ``--config FILE.toml`` (or ``.json``) supplies defaults, and flags given on the command line
win over the file. Unknown keys in a config file are errors.

    hyperr1 embed --data mammals --manifold poincare --dim 5 --epochs 300 --seed 0 --out runs/emb
    hyperr1 tasks --data mammals --out runs/tasks
    hyperr1 train --config experiments/configs/mammals_poincare.toml --set grpo.steps=20
    hyperr1 distill --teacher runs/mammals_poincare --set distill.steps=200

``train`` and ``distill`` take a nested config (see :mod:`hyperr1.pipeline`), so instead of one flag per field it
has ``--set section.key=value`` overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path


def _field_type(f: dataclasses.Field, owner: type):
    hint = typing.get_type_hints(owner)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0] if len(args) == 1 else str
    return hint, optional


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per dataclass field, all defaulting to None (= "not given")."""
    parser.add_argument("--config", type=Path, help="TOML or JSON file with defaults for these flags")
    for f in dataclasses.fields(cls):
        hint, optional = _field_type(f, cls)
        conv = _parse_bool if hint is bool else hint if hint in (int, float, str) else str
        if optional:
            base = conv

            def conv(text, base=base):
                return None if text.lower() == "none" else base(text)

        doc = _field_docs(cls).get(f.name, "")
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=conv,
            default=None,
            help=f"{doc} (default: {f.default!r})",
        )


def _field_docs(cls: type) -> dict[str, str]:
    """The one-line ``# comment`` after each field in the class source."""
    import inspect

    docs = {}
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return docs
    for line in src.splitlines():
        line = line.strip()
        if ":" in line and "#" in line and not line.startswith(("#", "def", '"')):
            name = line.split(":", 1)[0].strip()
            docs[name] = line.split("#", 1)[1].strip()
    return docs


def config_from_args(cls: type, args: argparse.Namespace):
    """Defaults ← config file ← command-line flags, then the dataclass's own validation."""
    values = {}
    if getattr(args, "config", None) is not None:
        from hyperr1.runs import read_config_file

        values = read_config_file(args.config)
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"unknown keys {unknown} in {args.config}; known: {sorted(known)}")
    for f in dataclasses.fields(cls):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    cfg = cls(**values)
    if hasattr(cfg, "validate"):
        try:
            cfg.validate()
        except ValueError as err:
            raise ValueError(f"invalid {cls.__name__}: {err}") from err
    return cfg


def _cmd_embed(args):
    from hyperr1.embeddings import EmbedConfig, run_embed

    cfg = config_from_args(EmbedConfig, args)
    result = run_embed(cfg, progress=not args.quiet)
    print(json.dumps(result["metrics"], indent=2))


def _cmd_tasks(args):
    from hyperr1.splits import TasksConfig, run_tasks

    cfg = config_from_args(TasksConfig, args)
    result = run_tasks(cfg)
    print(result["summary"])


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML or JSON TrainConfig (experiments/configs/*.toml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set grpo.steps=20 (repeatable)",
    )
    parser.add_argument("--name", help="run name (output in <out>/<name>)")
    parser.add_argument("--out", help="parent directory of the run directory")
    parser.add_argument("--seed", type=int, help="seed of the whole run")
    parser.add_argument("--resume", action="store_true", help="continue the run from its newest intact checkpoint")
    parser.add_argument(
        "--overwrite", action="store_true", help="discard the files of an earlier run in the run directory first"
    )


def _cmd_train(args):
    from hyperr1.pipeline import load_train_config, run_train

    overrides = list(args.overrides)
    for key in ("name", "out", "seed"):
        if getattr(args, key) is not None:
            overrides.append(f"{key}={json.dumps(getattr(args, key))}")
    cfg = load_train_config(args.config, overrides)
    results = run_train(
        cfg, resume=args.resume, overwrite=args.overwrite, warm_start_from=args.warm_start_from, progress=not args.quiet
    )
    print(json.dumps(results, indent=2))


def _cmd_distill(args):
    from hyperr1.distill_pipeline import DistillRunConfig, run_distill
    from hyperr1.pipeline import load_config

    overrides = list(args.overrides)
    for key in ("name", "out", "seed", "teacher"):
        if getattr(args, key) is not None:
            overrides.append(f"{key}={json.dumps(getattr(args, key))}")
    cfg = load_config(DistillRunConfig, args.config, overrides)
    results = run_distill(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(json.dumps(results, indent=2))


def _cmd_viz(args):
    from hyperr1.viz import VizConfig, run_viz

    cfg = config_from_args(VizConfig, args)
    print(json.dumps(run_viz(cfg), indent=2))


COMMANDS = {
    "embed": (
        "Train Poincaré / Euclidean embeddings of a hierarchy (Nickel & Kiela 2017).",
        "EmbedConfig",
        "hyperr1.embeddings",
        _cmd_embed,
    ),
    "tasks": (
        "Build the reasoning-task splits of a hierarchy, with the contamination audit.",
        "TasksConfig",
        "hyperr1.splits",
        _cmd_tasks,
    ),
    "train": (
        "Warm start, GRPO and held-out evaluation of the policy (hyperr1.pipeline).",
        None,
        "hyperr1.pipeline",
        _cmd_train,
    ),
    "distill": (
        "Distil a trained Poincaré-head teacher into a small Euclidean student (hyperr1.distill_pipeline).",
        None,
        "hyperr1.distill_pipeline",
        _cmd_distill,
    ),
    "viz": (
        "Draw an embedded hierarchy on the Poincaré disk (embed output, policy or train run) as PNG, PDF and HTML.",
        "VizConfig",
        "hyperr1.viz",
        _cmd_viz,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="hyperr1", description="Hyperbolic representations for R1-style reasoning.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, cls_name, module, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if cls_name is None:
            _add_train_arguments(p)
            if name == "distill":
                p.add_argument("--teacher", help="the teacher's run directory (runs/<name> of a finished train)")
            else:
                p.add_argument(
                    "--warm-start-from",
                    help="reuse the finished warm start of this run directory (same data, seed, model, tasks, sft)",
                )
        else:
            add_config_arguments(p, getattr(importlib.import_module(module), cls_name))
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    from hyperr1.allocator import keep_freed_memory
    from hyperr1.runs import RunLockedError

    args = build_parser().parse_args(argv)
    keep_freed_memory()  # training, distillation, evaluation: large buffers reuse freed pages (hyperr1.allocator)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RunLockedError) as err:
        print(f"error: {err}", file=sys.stderr)  # bad input or a busy run directory: one clear line
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
