"""The paper's tables, figure slots and quoted numbers, generated from the committed results.

    python paper/make_tables.py [--out paper/generated]

Reads ``results/`` (and the experiment configs, for the hyperparameter tables) and writes into
``--out``:

* ``macros.tex``: one ``\\newcommand`` per number the text quotes (names are letters only);
* one ``<name>.tex`` fragment per table (a complete ``tabular``) or figure slot
  (``\\includegraphics`` of ``figures/<name>.pdf``, or a box saying what draws it);
* for each result that does not exist yet, a fragment holding the sentence that says so and
  which command produces it, so the PDF never claims a number that is not in ``results/``.

It never trains and never draws. The output is a function of the committed files only (sorted,
fixed formatting): running it twice gives byte-identical files, and ``tests/test_paper.py`` checks
that the committed ``paper/generated/`` is what this script writes today.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import statistics
from pathlib import Path

import tomllib
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
SPLITS = ("test_unseen_pair", "test_unseen_subject")
HEAD_NAMES = {"poincare": "Poincaré", "euclidean": "Euclidean"}
LEVEL = 0.95  # confidence level of every interval: t over seeds here, bootstrap over queries in the runs

# Figures the paper shows: name -> (width as a share of \linewidth, what draws figures/<name>.pdf,
# caption). Without a caption the fragment is the figure's body and hyperr1.tex holds the float;
# with one (figures that may not exist yet) the fragment is the whole float, or, while the PDF is
# missing, the sentence saying what draws it.
FIGURES = {
    "poincare_mammals": (
        0.9,
        r"\texttt{python figures/fig\_poincare\_mammals.py} (part of \texttt{make reproduce})",
        None,
    ),
    "poincare_policy": (1.0, r"\texttt{make reproduce-grpo-quick} (\texttt{hyperr1 viz} of the quick run)", None),
    "heads": (0.55, r"\texttt{make figures} (\texttt{figures/fig\_heads.py})", None),
    "grpo_curves": (0.9, r"\texttt{make figures} (\texttt{figures/fig\_grpo\_curves.py})", None),
    "grpo_curves_quick": (0.9, r"\texttt{make reproduce-grpo-quick}", None),
    "heads_per_hop": (
        0.8,
        r"\texttt{make figures} (\texttt{figures/fig\_heads.py}), once "
        r"\nolinkurl{results/heads/runs.jsonl} holds finished runs",
        "Held-out accuracy per hop count for each head and head dimension.",
    ),
    "reflection": (
        0.8,
        r"\texttt{make figures} (\texttt{figures/fig\_heads.py}), once "
        r"\nolinkurl{results/heads/reflection.json} exists",
        "Reflection rate and share of good retractions, per head.",
    ),
    "nouns_map": (
        0.7,
        r"\texttt{make figures} (\texttt{figures/fig\_nouns.py}), once a run of "
        r"\nolinkurl{experiments/embed_nouns.py} has written its history",
        "Reconstruction MAP of the WordNet noun closure against training minutes.",
    ),
    "distill_retention": (
        0.8,
        r"\texttt{make figures} (\texttt{figures/fig\_distill.py}), once "
        r"\nolinkurl{results/distill/runs.jsonl} exists",
        "Retention of held-out accuracy by the distilled students, per setup.",
    ),
    "distill_sizes": (
        0.6,
        r"\texttt{make figures} (\texttt{figures/fig\_distill\_sizes.py}), once "
        r"\nolinkurl{results/distill_chain_hard_d8/runs.jsonl} exists",
        "Retention against student size at sixteen times the main sweep's student compute: the warm start, "
        "GRPO on it and on-policy distillation with hard targets.",
    ),
}

# What produces each result file that may not exist yet
PRODUCERS = {
    "heads": r"\texttt{make reproduce-heads} (issue 11), which writes \nolinkurl{results/heads/runs.jsonl}",
    "reflection": r"\texttt{make reproduce-heads} (issue 11), which writes \nolinkurl{results/heads/reflection.json}",
    "collapses": r"\texttt{make reproduce-heads} (issue 11), which writes \nolinkurl{results/heads/collapses.json}",
    "distill": r"\texttt{python} \nolinkurl{experiments/distill_mammals.py} (issue 12), which writes "
    r"\nolinkurl{results/distill/runs.jsonl}",
    **{
        f"bench_{name}": rf"\texttt{{python}} \nolinkurl{{benchmarks/bench_{name}.py}}"
        + (" (needs gensim)" if name == "embeddings" else " (TRL in its own environment)" if name == "grpo" else "")
        for name in ("grpo", "sampler", "head", "embeddings")
    },
    "bench_embeddings_steps": r"\texttt{python} \nolinkurl{benchmarks/bench_embeddings.py} \texttt{--step-ab "
    r"wordnet:entity.n.01}",
    "bench_grpo_question": r"\texttt{python} \nolinkurl{benchmarks/bench_grpo.py} \texttt{--prompt question} "
    "(TRL in its own environment)",
}

# ---------------------------------------------------------------- formatting


_UNICODE = {"η": r"$\eta$", "τ": r"$\tau$", "≥": r"$\geq$", "≤": r"$\leq$", "→": r"$\to$", "—": "---", "–": "--"}
_SPECIAL = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "^": r"\^{}",
    "~": r"\~{}",
}


def tex(text: str) -> str:
    """Plain text from a results file, escaped for LaTeX."""
    return "".join(_SPECIAL.get(ch, _UNICODE.get(ch, ch)) for ch in str(text))


def fixed(x: float, digits: int = 3) -> str:
    """A number in text mode with a real minus sign: ``0.897``, ``\\ensuremath{-0.012}``."""
    s = f"{x:.{digits}f}"
    return rf"\ensuremath{{{s}}}" if s.startswith("-") else s


def signed(x: float, digits: int = 1) -> str:
    """A difference with its sign: ``\\ensuremath{+25.4}``."""
    return rf"\ensuremath{{{x:+.{digits}f}}}"


def count(n: int) -> str:
    """An integer with thousands separators: ``82{,}115``."""
    return f"{int(n):,}".replace(",", "{,}")


def pm(m: float, h: float, digits: int = 3, sign: bool = False) -> str:
    body = f"{m:+.{digits}f}" if sign else f"{m:.{digits}f}"
    return rf"${body} \pm {h:.{digits}f}$"


def interval(lo: float, hi: float, digits: int = 2, sign: bool = False) -> str:
    f = (lambda v: f"{v:+.{digits}f}") if sign else (lambda v: f"{v:.{digits}f}")
    return rf"\ensuremath{{[{f(lo)}, {f(hi)}]}}"


def pvalue(p: float | None) -> str:
    return "---" if p is None else f"{p:.3g}"


def sci(v) -> str:
    """A config value for a table: ``2\\times10^{-4}``, ``0.04``, ``1{,}500``, ``none``."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return count(v)
    if isinstance(v, float):
        if v != 0 and abs(v) < 1e-2:
            mant, exp = f"{v:.0e}".split("e")
            return rf"\ensuremath{{{mant}\times10^{{{int(exp)}}}}}"
        return f"{v:g}"
    return rf"\texttt{{{tex(v)}}}"


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width t_{(1+LEVEL)/2, n-1} sd / sqrt(n) of its t-interval (0 for n = 1);
    the statistics of ``experiments/mammals_heads.py``."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    return m, float(stats.t.ppf((1 + LEVEL) / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


def paired(a: list[float], b: list[float]) -> dict:
    """The paired difference a - b: mean, t-interval (LEVEL), Wilcoxon signed-rank p, per-pair values."""
    diff = [x - y for x, y in zip(a, b, strict=True)]
    m, h = mean_ci(diff)
    p = float(stats.wilcoxon(a, b).pvalue) if len(diff) >= 2 and any(d != 0 for d in diff) else None
    return {"mean": m, "lo": m - h, "hi": m + h, "p": p, "per_seed": diff}


def tabular(spec: str, header: list[str], rows: list[list[str]], *, size: str = r"\small") -> str:
    lines = [size, rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(r) + r" \\" for r in rows]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}", ""])


def float_table(table: str, caption: str, label: str) -> str:
    """A table float around a generated ``tabular``, shrunk to the line width only if wider."""
    return (
        f"\\begin{{table}}[tbp]\n\\centering\n\\caption{{{caption}}}\n\\label{{{label}}}\n"
        f"\\resizebox{{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}}{{!}}{{%\n"
        f"{table.strip()}\n}}\n\\end{{table}}\n"
    )


def pending(what: str, producer: str) -> str:
    """The sentence a section prints while its result does not exist."""
    return f"This result is not yet available: {what} is produced by {producer}.\n"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- the output


class Paper:
    """What one run writes: the macros and the fragments, rendered deterministically."""

    def __init__(self):
        self.macros: dict[str, str] = {}
        self.fragments: dict[str, str] = {}

    def macro(self, name: str, value: str) -> None:
        if not re.fullmatch(r"[A-Z][A-Za-z]*", name):
            raise ValueError(f"macro names are letters only, starting uppercase: {name!r}")
        if name in self.macros:
            raise ValueError(f"macro {name} defined twice")
        self.macros[name] = value

    def fragment(self, name: str, text: str) -> None:
        if name in self.fragments or name == "macros":
            raise ValueError(f"fragment {name} written twice")
        self.fragments[name] = text if text.endswith("\n") else text + "\n"

    def files(self) -> dict[str, str]:
        head = "% generated by paper/make_tables.py from results/; do not edit\n"
        out = {f"{k}.tex": head + v for k, v in self.fragments.items()}
        macros = sorted(self.macros.items())
        out["macros.tex"] = head + "".join(rf"\newcommand{{\{k}}}{{{v}}}" + "\n" for k, v in macros)
        return dict(sorted(out.items()))


# ---------------------------------------------------------------- configs (read from source, no torch)


_CLASSES: dict[str, ast.ClassDef] = {}


def dataclass_defaults(cls: str, refs: dict | None = None) -> dict:
    """The literal defaults of the dataclass ``cls`` of the package and of its bases, read from the
    source with ``ast`` (so neither torch nor the package is imported); ``_DEFAULTS.x`` defaults
    resolve through ``refs``. Fields whose default is not a literal (a ``default_factory``) are
    left out."""
    if not _CLASSES:
        for path in sorted((ROOT / "hyperr1").glob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef):
                    if node.name in _CLASSES:
                        raise ValueError(f"class {node.name} is defined twice in hyperr1/")
                    _CLASSES[node.name] = node
    node, out = _CLASSES[cls], {}
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in _CLASSES:
            out.update(dataclass_defaults(base.id, refs))
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None):
            continue
        v = stmt.value
        if isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and v.value.id == "_DEFAULTS":
            out[stmt.target.id] = (refs or {}).get(v.attr)  # None: a field BartConfig defines
            continue
        try:
            out[stmt.target.id] = ast.literal_eval(v)
        except ValueError:
            pass  # a default_factory: a nested config, filled in by resolved_config
    return out


def resolved_config(toml_path: Path, kind: str) -> dict:
    """The config of an experiment: the dataclass defaults overlaid with its TOML file."""
    model = dataclass_defaults("ModelConfig", refs=dataclass_defaults("HyperR1Config"))
    if kind == "train":
        cfg = {
            **dataclass_defaults("TrainConfig"),
            "model": model,
            "tasks": dataclass_defaults("TasksConfig"),
            "sft": dataclass_defaults("SFTConfig"),
            "grpo": dataclass_defaults("GRPOConfig"),
            "eval": dataclass_defaults("EvalConfig"),
        }
    else:
        cfg = {
            **dataclass_defaults("DistillRunConfig"),
            "student": dict(model),
            "distill": dataclass_defaults("DistillConfig"),
            "eval": dataclass_defaults("EvalConfig"),
        }
    for key, value in tomllib.loads(toml_path.read_text()).items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


TRAIN_ROWS = [  # (section, key, symbol, meaning)
    ("model", "d_model", "$D$", "transformer width"),
    ("model", "layers", "", "encoder layers = decoder layers"),
    ("model", "attention_heads", "", "attention heads"),
    ("model", "ffn_dim", "", "MLP width"),
    ("model", "head_dim", "$k$", "head dimension"),
    ("model", "curvature", "$c$", "curvature parameter of the ball"),
    ("model", "clip_r", "$r$", "feature clipping radius"),
    ("model", "head_init_scale", "$s_0$", "initial logit scale"),
    ("tasks", "warm_max_hops", "", "longest warm-start chain (hops)"),
    ("tasks", "warm_no_think_frac", "", "warm-start targets without think"),
    ("tasks", "retraction_rate", r"$\rho$", "training targets with a retraction"),
    ("tasks", "unseen_subject_frac", "", "concepts held out as subjects"),
    ("sft", "epochs", "", "warm-start epochs"),
    ("sft", "lr", r"$\eta$", "warm-start learning rate"),
    ("sft", "manifold_lr", "", "same, of the prototypes"),
    ("grpo", "steps", "", "GRPO steps"),
    ("grpo", "prompts_per_step", "$B$", "prompts per step"),
    ("grpo", "num_generations", "$G$", "completions per prompt"),
    ("grpo", "max_completion_length", "", "longest completion (tokens)"),
    ("grpo", "lr", r"$\eta$", "GRPO learning rate"),
    ("grpo", "manifold_lr", "", "same, of the prototypes"),
    ("grpo", "beta", r"$\beta$", "KL coefficient"),
    ("grpo", "epsilon_low", r"$\epsilon_{\mathrm{low}}$", "lower clip"),
    ("grpo", "epsilon_high", r"$\epsilon_{\mathrm{high}}$", r"upper clip (none: $\epsilon_{\mathrm{low}}$)"),
    ("grpo", "mu", r"$\mu$", "updates per batch of samples"),
    ("grpo", "loss_type", "", "token aggregation"),
    ("grpo", "scale_rewards", "", "advantage scaling"),
    ("grpo", "w_accuracy", r"$w_{\mathrm{acc}}$", "accuracy reward weight"),
    ("grpo", "w_format", r"$w_{\mathrm{fmt}}$", "format reward weight"),
    ("grpo", "w_faithfulness", r"$w_{\mathrm{faith}}$", "faithfulness reward weight"),
    ("grpo", "curriculum_start_hops", "", "initial $h_{\\max}$ of the hop curriculum"),
    ("grpo", "curriculum_threshold", r"$\tau$", "accuracy that widens $h_{\\max}$"),
    ("eval", "k", "$k$", "samples per prompt (pass@1, maj@$k$)"),
    ("eval", "temperature", "", "sampling temperature at evaluation"),
    ("eval", "top_p", "", "nucleus mass at evaluation"),
]

DISTILL_ROWS = [
    ("", "init", "", "student initialisation"),
    ("", "max_param_ratio", "", "largest student / teacher size"),
    ("", "prompt_share", "", "training queries used as prompts"),
    ("student", "d_model", "$D$", "student width"),
    ("student", "layers", "", "student layers (each side)"),
    ("student", "head_dim", "$k_S$", "student head dimension"),
    ("distill", "divergence", "", "divergence"),
    ("distill", "tau", r"$\tau$", "temperature"),
    ("distill", "beta", r"$\beta$", "JSD mixture weight"),
    ("distill", "lam", r"$\lambda$", "share of on-policy steps"),
    ("distill", "steps", "", "steps"),
    ("distill", "prompts_per_step", "$B$", "prompts per step"),
    ("distill", "lr", r"$\eta$", "learning rate"),
]


def _flat(cfg: dict) -> dict:
    """``{"section.key": value}`` of a resolved config's tables."""
    return {f"{sec}.{k}": v for sec, table in cfg.items() if isinstance(table, dict) for k, v in table.items()}


def _get(cfg: dict, section: str, key: str):
    return cfg[key] if not section else cfg[section][key]


def _set(cfg: dict, dotted: str, value) -> None:
    """``cfg`` with ``section.key`` (or a top-level ``key``) set to ``value``, as ``--set`` does."""
    *path, key = dotted.split(".")
    for part in path:
        cfg = cfg[part]
    cfg[key] = value


def sweep_plan() -> dict | None:
    """The settled head sweep (``experiments/configs/heads_sweep.toml``): its planned runs and the
    resolved config of each head, or None if there is no such file."""
    path = ROOT / "experiments" / "configs" / "heads_sweep.toml"
    if not path.exists():
        return None
    sweep = tomllib.loads(path.read_text())
    heads = {}
    for label, spec in sweep["heads"].items():
        cfg = resolved_config(ROOT / "experiments" / "configs" / spec["config"], "train")
        for dotted, value in {**sweep.get("overrides", {}), **spec.get("overrides", {})}.items():
            _set(cfg, dotted, value)
        heads[label] = cfg
    runs = len(sweep["seeds"]) * len(sweep["dims"]) * len(heads)
    return {"seeds": sweep["seeds"], "dims": sweep["dims"], "heads": heads, "runs": runs}


# (section, key) of the settings every run of the paper shares; configs() checks that they agree
SHARED = [
    ("grpo", "num_generations"),
    ("grpo", "prompts_per_step"),
    ("grpo", "beta"),
    ("grpo", "epsilon_low"),
    ("grpo", "epsilon_high"),
    ("grpo", "mu"),
    ("grpo", "loss_type"),
    ("grpo", "scale_rewards"),
    ("grpo", "curriculum_start_hops"),
    ("grpo", "curriculum_threshold"),
    ("model", "d_model"),
    ("tasks", "retraction_rate"),
    ("tasks", "warm_no_think_frac"),
    ("", "eval_min_hops"),
]


def configs(paper: Paper) -> None:
    conf = ROOT / "experiments" / "configs"
    prelim = resolved_config(conf / "mammals_poincare.toml", "train")
    euclid = resolved_config(conf / "mammals_euclidean.toml", "train")
    teacher = resolved_config(conf / "mammals_teacher.toml", "train")
    plan = sweep_plan()
    columns = {"preliminary sweep": prelim}
    if plan:
        columns["settled sweep"] = plan["heads"]["poincare"]
    columns["teacher"] = teacher
    rows = []
    for section, key, symbol, meaning in TRAIN_ROWS:
        swept = (section, key) == ("model", "head_dim")
        cells = ["swept" if swept and name != "teacher" else sci(_get(c, section, key)) for name, c in columns.items()]
        rows.append([symbol, meaning, *cells])
    if plan:
        poincare, euclidean = (_flat(plan["heads"][h]) for h in ("poincare", "euclidean"))
        only = {k: v for k, v in euclidean.items() if v != poincare.get(k) and k != "model.head"}
        if only:
            text = ", ".join(rf"\texttt{{{tex(k)}}} = {sci(v)}" for k, v in sorted(only.items()))
            rows.append([rf"\multicolumn{{{2 + len(columns)}}}{{l}}{{settled sweep, Euclidean head only: {text}}}"])
    paper.fragment("hyperparameters", tabular("ll" + "r" * len(columns), ["", "", *columns], rows, size=r"\scriptsize"))
    distill = resolved_config(conf / "distill_mammals.toml", "distill")
    rows = [[s, m, sci(_get(distill, sec, k))] for sec, k, s, m in DISTILL_ROWS]
    paper.fragment("hyperparameters_distill", tabular("llr", ["", "", "value"], rows, size=r"\scriptsize"))

    differ = sorted(k for k in prelim["grpo"] if prelim["grpo"][k] != euclid["grpo"][k])
    if differ or prelim["sft"] != euclid["sft"] or prelim["tasks"] != euclid["tasks"]:
        raise ValueError(f"the Poincaré and Euclidean sweep configs differ beyond the head: {differ}")
    every = [prelim, euclid, teacher, *(plan["heads"].values() if plan else [])]
    for section, key in SHARED:
        if len({repr(_get(c, section, key)) for c in every}) != 1:
            raise ValueError(f"the text says every run shares {section}.{key}, but the configs differ")
    g, t = prelim["grpo"], teacher
    paper.macro("GroupSize", str(g["num_generations"]))
    paper.macro("GRPOMu", str(g["mu"]))
    paper.macro("PromptsPerStep", str(g["prompts_per_step"]))
    paper.macro("KLBeta", sci(g["beta"]))
    paper.macro("ClipEps", sci(g["epsilon_low"]))
    paper.macro("CurriculumStart", str(g["curriculum_start_hops"]))
    paper.macro("CurriculumTau", sci(g["curriculum_threshold"]))
    paper.macro("EvalMinHops", str(prelim["eval_min_hops"]))
    paper.macro("EvalSamples", str(prelim["eval"]["k"]))
    paper.macro("EvalTemperature", sci(prelim["eval"]["temperature"]))
    paper.macro("EvalTopP", sci(prelim["eval"]["top_p"]))
    if prelim["eval"]["confidence"] != LEVEL:
        raise ValueError(f"the runs' bootstrap level {prelim['eval']['confidence']} is not the paper's {LEVEL}")
    paper.macro("CILevel", f"{100 * LEVEL:g}\\%")
    paper.macro("BaseWarmMaxHops", str(prelim["tasks"]["warm_max_hops"]))
    paper.macro("TeacherWarmMaxHops", str(t["tasks"]["warm_max_hops"]))
    paper.macro("BaseGRPOLr", sci(g["lr"]))
    paper.macro("TeacherGRPOLr", sci(t["grpo"]["lr"]))
    paper.macro("TeacherHeadDim", str(t["model"]["head_dim"]))
    paper.macro("DModel", str(prelim["model"]["d_model"]))
    paper.macro("RetractionRate", sci(prelim["tasks"]["retraction_rate"]))
    paper.macro("WarmNoThinkFrac", sci(prelim["tasks"]["warm_no_think_frac"]))
    paper.macro("DistillTau", sci(distill["distill"]["tau"]))
    paper.macro("DistillLambda", sci(distill["distill"]["lam"]))


# ---------------------------------------------------------------- embeddings


def embeddings(paper: Paper) -> None:
    path = RESULTS / "embeddings" / "table.json"
    if not path.exists():
        paper.fragment(
            "embeddings_table",
            pending(r"\nolinkurl{results/embeddings/table.json}", r"\texttt{python experiments/embed\_mammals.py}"),
        )
        return
    rows = sorted(json.loads(path.read_text())["rows"], key=lambda r: (r["dim"], r["manifold"] != "poincare"))

    def secs(v):
        return "---" if v is None else f"{v:.0f}"

    body = [
        [
            str(r["dim"]),
            HEAD_NAMES[r["manifold"]],
            f"{r['map']:.3f}",
            f"{r['mean_rank']:.2f}",
            secs(r["train_seconds"]),
            secs(r["seconds_to_map_0.90"]),
            secs(r["seconds_to_map_0.95"]),
        ]
        for r in rows
    ]
    header = ["dim", "manifold", "MAP", "mean rank", "train s", r"s to MAP $0.90$", r"s to MAP $0.95$"]
    paper.fragment("embeddings_table", tabular("rlrrrrr", header, body))
    cell = {(r["manifold"], r["dim"]): r for r in rows}
    paper.macro("EmbNodes", count(rows[0]["num_nodes"]))
    paper.macro("EmbPairs", count(rows[0]["num_pairs"]))
    paper.macro("EmbEpochs", count(rows[0]["epochs_run"]))
    dims = sorted({r["dim"] for r in rows})
    for manifold in ("poincare", "euclidean"):
        for d, size in ((dims[0], "Small"), (dims[-1], "Large")):
            paper.macro(f"EmbMap{manifold.capitalize()}{size}", f"{cell[manifold, d]['map']:.3f}")
    paper.macro("EmbDimSmall", str(dims[0]))
    paper.macro("EmbDimLarge", str(dims[-1]))
    mid = dims[len(dims) // 2]
    paper.macro("EmbDimMid", str(mid))
    paper.macro("EmbMapPoincareMid", f"{cell['poincare', mid]['map']:.3f}")
    paper.macro("EmbRankPoincareMid", f"{cell['poincare', mid]['mean_rank']:.2f}")
    paper.macro("EmbRankEuclideanMid", f"{cell['euclidean', mid]['mean_rank']:.2f}")


def nouns(paper: Paper) -> None:
    path = RESULTS / "embeddings_nouns" / "scaling.json"
    if not path.exists():
        paper.fragment(
            "nouns_scaling",
            pending(
                r"\nolinkurl{results/embeddings_nouns/scaling.json}",
                r"\texttt{python experiments/embed\_nouns.py --scaling}",
            ),
        )
    else:
        data = json.loads(path.read_text())
        body = [
            [
                r"\texttt{" + tex(r["root"]) + "}",
                count(r["nodes"]),
                count(r["pairs"]),
                f"{r['seconds_per_epoch']:.1f}",
                f"{r['cpu_seconds_per_epoch']:.1f}",
                f"{r['full_eval_seconds']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
            ]
            for r in data["rows"]
        ]
        header = ["root", "nodes", "pairs", "wall s/epoch", "CPU s/epoch", "full eval s", "peak RSS MB"]
        paper.fragment("nouns_scaling", tabular("lrrrrrr", header, body))
        paper.macro("NounsAlphaTrain", f"{data['alpha_train_vs_pairs']:.2f}")
        paper.macro("NounsAlphaEval", f"{data['alpha_eval_vs_nodes']:.2f}")
    sentences = []
    for dim in (10, 5):
        run = RESULTS / "embeddings_nouns" / f"entity.n.01_d{dim}"
        if not (run / "metrics.json").exists():
            command = rf"\texttt{{python experiments/embed\_nouns.py --root entity.n.01 --dim {dim}}}"
            what = rf"\nolinkurl{{results/embeddings_nouns/entity.n.01_d{dim}/metrics.json}}"
            sentences.append(pending(what, command))
            continue
        m = json.loads((run / "metrics.json").read_text())
        cfg = json.loads((run / "config.json").read_text())["config"]
        ref = m["reference_nickel_kiela"][str(cfg["dim"])]
        stopped = "stopped by its time budget" if cfg.get("max_seconds") else "its full epoch budget"
        sentences.append(
            f"From the uniform initialisation, at dimension {cfg['dim']} the noun closure ({count(m['num_nodes'])} "
            f"nodes, {count(m['num_pairs'])} pairs) reached MAP {m['map']:.3f} and mean rank {m['mean_rank']:.1f} "
            f"after {m['epochs_run']} epochs ({count(round(m['train_seconds']))} training seconds, {stopped}), "
            f"against MAP {ref['map']:.3f} and mean rank {ref['mean_rank']:.2f} reported by "
            "\\citet{nickel2017poincare}.\n"
        )
    paper.fragment("nouns_result", "".join(sentences))
    built = []
    for dim, tag in ((10, ""), (10, "_long"), (5, "")):
        run = RESULTS / "embeddings_nouns" / f"entity.n.01_d{dim}_hierarchy{tag}"
        if not (run / "metrics.json").exists():
            continue
        m = json.loads((run / "metrics.json").read_text())
        cfg = json.loads((run / "config.json").read_text())["config"]
        history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
        start = history[0]
        best = max((r for r in history if r["sample"]), key=lambda r: r["map"])
        built.append(
            f"At dimension {dim} with $a = {cfg['init_level']:g}$, $s_0 = {cfg['init_spread']:g}$ and "
            f"$\\eta = {cfg['lr']:g}$, the construction alone scored MAP {start['map']:.3f} and mean rank "
            f"{start['mean_rank']:.0f} (sampled, before any training); after {m['epochs_run']} epochs "
            f"({count(round(m['train_seconds']))} training seconds) the full evaluation gave MAP {m['map']:.3f} "
            f"and mean rank {m['mean_rank']:.1f} (the sampled MAP peaked at {best['map']:.3f}, epoch "
            f"{best['epoch']}).\n"
        )
    built += _nouns_margin_runs()
    paper.fragment("nouns_built", "".join(built) or pending(
        r"\nolinkurl{results/embeddings_nouns/entity.n.01_d10_hierarchy/metrics.json}",
        r"\texttt{python experiments/embed\_nouns.py --root entity.n.01 --dim 10 --init-scheme hierarchy --lr 0.1}",
    ))  # fmt: skip


def _nouns_margin_runs() -> list[str]:
    """Sentences on the construction runs with the boundary margin lowered (tag ``eps14``, one run
    per seed: ``_eps14`` is seed 0, ``_eps14_s<k>`` seed k): means with t-intervals and per-seed values."""
    sentences = []
    for dim in (10, 5):
        runs = sorted(RESULTS.joinpath("embeddings_nouns").glob(f"entity.n.01_d{dim}_hierarchy_eps14*/metrics.json"))
        if not runs:
            continue
        ms = [json.loads(r.read_text()) for r in runs]
        cfgs = [json.loads((r.parent / "config.json").read_text())["config"] for r in runs]
        cfg = cfgs[0]
        keys = ("init_level", "init_spread", "lr", "boundary_eps", "epochs")
        if any(any(c[k] != cfg[k] for k in keys) for c in cfgs):
            raise SystemExit(f"the eps14 runs at dim {dim} differ in more than their seed")
        eps = cfg["boundary_eps"]
        cap = 2 * math.atanh(1 - eps)
        seeds = ", ".join(str(c["seed"]) for c in cfgs)
        map_m, map_h = mean_ci([m["map"] for m in ms])
        rank_m, rank_h = mean_ci([m["mean_rank"] for m in ms])
        per_seed = "; ".join(f"{m['map']:.3f} / {m['mean_rank']:.1f}" for m in ms)
        train = ", ".join(count(round(m["train_seconds"])) for m in ms)
        sentences.append(
            f"With the boundary margin lowered to $\\varepsilon = {sci(eps)}$ (radius cap "
            f"$\\log((2-\\varepsilon)/\\varepsilon) = {cap:.1f}$, so that depths up to "
            f"{math.ceil(cap / cfg['init_level']) - 1} keep their own level), at dimension {dim} with "
            f"$a = {cfg['init_level']:g}$, $s_0 = {cfg['init_spread']:g}$, $\\eta = {cfg['lr']:g}$ and "
            f"{cfg['epochs']} epochs, "
            + (
                f"over {len(ms)} seeds ({seeds}), the full evaluation gave MAP {map_m:.3f} $\\pm$ {map_h:.3f} "
                f"and mean rank {rank_m:.1f} $\\pm$ {rank_h:.1f} ({100 * LEVEL:g}\\% $t$-intervals; per seed "
                f"MAP / rank: {per_seed}; training seconds {train}).\n"
                if len(ms) > 1
                else f"one seed ({seeds}), the full evaluation gave MAP / mean rank {per_seed} in {train} "
                "training seconds.\n"
            )
        )
    return sentences


# ---------------------------------------------------------------- teacher variants and diagnosis


def _acc(row: dict, phase: str, split: str) -> str:
    return f"{row[f'{phase}/{split}/accuracy']:.3f}"


def teacher(paper: Paper) -> None:
    path = RESULTS / "teacher" / "variants.jsonl"
    if not path.exists():
        paper.fragment(
            "teacher_variants",
            pending(r"\nolinkurl{results/teacher/variants.jsonl}", r"\texttt{python experiments/teacher\_variants.py}"),
        )
        return
    variants = read_jsonl(path)
    body = []
    for r in variants:
        over = ", ".join(r"\texttt{" + tex(o) + "}" for o in r["overrides"]) or "---"
        if r.get("warm_from"):
            over += r" (warm start of \texttt{" + tex(r["warm_from"]) + "})"
        body.append(
            [
                r"\texttt{" + tex(r["variant"]) + "}",
                over,
                f"{_acc(r, 'warm_start', SPLITS[0])} / {_acc(r, 'warm_start', SPLITS[1])}",
                f"{_acc(r, 'grpo', SPLITS[0])} / {_acc(r, 'grpo', SPLITS[1])}",
                count(r["grpo_steps"]),
                f"{r['collapse_episodes']} / {r['rollbacks']}",
                f"{r['wall_s'] / 60:.0f}",
            ]
        )
    header = [
        "variant",
        "overrides of the shipped config",
        r"\shortstack{warm start\\pair / subject}",
        r"\shortstack{GRPO\\pair / subject}",
        "steps",
        r"\shortstack{episodes /\\rollbacks}",
        "min",
    ]
    paper.fragment("teacher_variants", tabular(r"lp{5.2cm}ccrcr", header, body, size=r"\scriptsize"))
    by_name = {r["variant"]: r for r in variants}
    t, b = by_name["teacher"], by_name["base"]
    for prefix, row in (("Teacher", t), ("Base", b)):
        for phase, tag in (("warm_start", "Warm"), ("grpo", "")):
            for split, name in zip(SPLITS, ("Pair", "Subject"), strict=True):
                paper.macro(f"{prefix}{tag}{name}Acc", f"{row[f'{phase}/{split}/accuracy']:.3f}")
    for split, name in zip(SPLITS, ("Pair", "Subject"), strict=True):
        paper.macro(f"Teacher{name}CI", interval(*t[f"grpo/{split}/accuracy_ci"], digits=3))
    paper.macro("TeacherParams", count(t["parameters"]))
    paper.macro("VariantCount", str(len(variants)))
    paper.macro("VariantRollbacks", str(sum(r["rollbacks"] for r in variants)))
    every = by_name["warm15_e20"]  # the warm start on every training query, GRPO at the shipped η
    paper.macro("WarmAllVariant", r"\texttt{" + tex(every["variant"]) + "}")
    paper.macro("WarmAllSubjectWarm", f"{every[f'warm_start/{SPLITS[1]}/accuracy']:.3f}")
    paper.macro("WarmAllSubjectGRPO", f"{every[f'grpo/{SPLITS[1]}/accuracy']:.3f}")


def diagnosis(paper: Paper) -> None:
    files = {name: RESULTS / "diagnosis" / f"{name}.json" for name in ("diag_base", "teacher")}
    if not all(p.exists() for p in files.values()):
        paper.fragment(
            "diagnosis_steps",
            pending(
                r"\nolinkurl{results/diagnosis/teacher.json}",
                r"\texttt{python experiments/diagnose.py runs/teacher/teacher}",
            ),
        )
        return
    diag = {k: json.loads(p.read_text()) for k, p in files.items()}
    label = {"diag_base": "shipped config", "teacher": "teacher"}
    phase_label = {"warm_start": "warm start", "grpo": "GRPO"}

    # (d) teacher-forced step accuracy per step index
    steps = sorted(
        {
            int(i)
            for d in diag.values()
            for m in d["models"].values()
            for i, v in m["teacher_forced"]["step_by_index"].items()
            if v["n"]
        },
        key=int,
    )
    body = []
    for name, d in diag.items():
        for phase, m in d["models"].items():
            tf = m["teacher_forced"]
            cells = [f"{tf['step_by_index'][str(i)]['value']:.2f}" for i in steps]
            body.append([label[name], phase_label[phase], f"{tf['step_all']['value']:.3f}", *cells])
    header = ["recipe", "model", "all", *[str(i) for i in steps]]
    paper.fragment("diagnosis_steps", tabular("ll" + "r" * (len(steps) + 1), header, body, size=r"\footnotesize"))
    n_steps = diag["teacher"]["models"]["grpo"]["teacher_forced"]["step_all"]["n"]
    paper.macro("TeacherForcedSteps", count(n_steps))

    base_tf = diag["diag_base"]["models"]["warm_start"]["teacher_forced"]["step_by_index"]
    warm_hops = int(
        resolved_config(ROOT / "experiments" / "configs" / "mammals_poincare.toml", "train")["tasks"]["warm_max_hops"]
    )
    early = [v["value"] for i, v in base_tf.items() if int(i) <= warm_hops and v["n"]]
    late = [v["value"] for i, v in base_tf.items() if int(i) > warm_hops and v["n"]]
    paper.macro("BaseStepAccEarlyMin", f"{min(early):.2f}")
    paper.macro("BaseStepAccLateMax", f"{max(late):.2f}")
    late_grpo = [
        v["value"]
        for i, v in diag["diag_base"]["models"]["grpo"]["teacher_forced"]["step_by_index"].items()
        if int(i) > warm_hops and v["n"]
    ]
    paper.macro("BaseStepAccLateMaxGRPO", f"{max(late_grpo):.2f}")
    valid = [m[s]["taxonomy"]["shares"]["correct"] for m in diag["diag_base"]["models"].values() for s in SPLITS]
    paper.macro("BaseValidShareMax", f"{max(valid):.3f}")
    paper.macro("TeacherStepAccAll", f"{diag['teacher']['models']['grpo']['teacher_forced']['step_all']['value']:.3f}")

    # (c) error taxonomy on the held-out splits
    cols = [("diag_base", "grpo"), ("teacher", "warm_start"), ("teacher", "grpo")]
    cats = list(diag["teacher"]["models"]["grpo"][SPLITS[0]]["taxonomy"]["shares"])
    body = []
    for cat in cats:
        vals = [diag[n]["models"][p][s]["taxonomy"]["shares"][cat] for n, p in cols for s in SPLITS]
        if any(vals):
            body.append([tex(cat), *[f"{v:.3f}" for v in vals]])
    header = [
        "outcome",
        *[f"{label[n]}, {phase_label[p]}, {s.removeprefix('test_unseen_')}" for n, p in cols for s in SPLITS],
    ]
    header = ["outcome"] + [r"\shortstack{" + h.replace(", ", r"\\") + "}" for h in header[1:]]
    paper.fragment("diagnosis_taxonomy", tabular("l" + "r" * (len(header) - 1), header, body, size=r"\scriptsize"))

    tg, tw = diag["teacher"]["models"]["grpo"], diag["teacher"]["models"]["warm_start"]
    paper.macro("HeldOutPairN", count(diag["teacher"]["sizes"][SPLITS[0]]))
    paper.macro("HeldOutSubjectN", count(diag["teacher"]["sizes"][SPLITS[1]]))
    paper.macro("TeacherRecallHeldOutWarm", f"{tw['parent_recall']['answer_held_out_subjects']['value']:.3f}")
    paper.macro("TeacherRecallHeldOutGRPO", f"{tg['parent_recall']['answer_held_out_subjects']['value']:.3f}")
    paper.macro("TeacherRecallOtherGRPO", f"{tg['parent_recall']['answer_other_subjects']['value']:.3f}")
    shares = "right answer, invalid chain"
    paper.macro("TeacherInvalidChainSubjectWarm", f"{tw[SPLITS[1]]['taxonomy']['shares'][shares]:.3f}")
    paper.macro("TeacherInvalidChainSubjectGRPO", f"{tg[SPLITS[1]]['taxonomy']['shares'][shares]:.3f}")
    paper.macro("TeacherLcaPairAcc", f"{tg[SPLITS[0]]['accuracy']['by_task']['lca']['value']:.3f}")
    paper.macro("TeacherAncestorPairAcc", f"{tg[SPLITS[0]]['accuracy']['by_task']['ancestor_k']['value']:.3f}")

    # per-hop accuracy of the teacher
    hops = sorted({int(h) for m in (tw, tg) for s in SPLITS for h, v in m[s]["accuracy"]["by_hops"].items() if v["n"]})
    body = []
    for h in hops:
        row = [str(h)]
        for s in SPLITS:
            cell = tw[s]["accuracy"]["by_hops"][str(h)]
            row.append(str(cell["n"]))
            for m in (tw, tg):
                v = m[s]["accuracy"]["by_hops"][str(h)]["value"]
                row.append("---" if v is None else f"{v:.2f}")
        body.append(row)
    header = ["hops", "$n$ pair", "warm", "GRPO", "$n$ subject", "warm", "GRPO"]
    paper.fragment("teacher_per_hop", tabular("rrrrrrr", header, body, size=r"\footnotesize"))


# ---------------------------------------------------------------- the head comparison


def _per_seed(rows: list[dict], seeds: list[int], phase: str, metric: str) -> list[float]:
    """Per seed, ``metric`` averaged over the held-out splits (as ``experiments/mammals_heads.py``)."""
    return [statistics.fmean(r[metric] for r in rows if r["seed"] == s and r["phase"] == phase) for s in seeds]


def _hop_cell(cell) -> tuple[float | None, float]:
    """(accuracy, weight) of a ``per_hop`` entry: ``[accuracy, n]``, ``{"value", "n"}`` or a number."""
    if isinstance(cell, (list, tuple)):
        return cell[0], float(cell[1]) if len(cell) > 1 else 1.0
    if isinstance(cell, dict):
        return cell.get("value"), float(cell.get("n") or 1)
    return cell, 1.0


def _paired_seeds(rows: list[dict], dim: int) -> list[int]:
    """Seeds that both heads finished (both phases) at head dimension ``dim``."""
    done = {
        h: {r["seed"] for r in rows if r["head"] == h and r["head_dim"] == dim and r["phase"] == "grpo"}
        for h in HEAD_NAMES
    }
    return sorted(done["poincare"] & done["euclidean"])


def _heads_rows(results: Path) -> tuple[list[dict], str, str, str]:
    """The rows the head comparison uses, their path, and the generated sentences on where they come
    from (for Section 3.3) and what that means (for the limitations): the settled sweep once both
    heads have two paired seeds at some dimension, the preliminary sweep until then."""
    settled, prelim = results / "heads" / "runs.jsonl", results / "mammals_heads" / "runs.jsonl"
    plan = sweep_plan()
    planned = f"{plan['runs']} planned runs" if plan else "its planned runs"
    rows = read_jsonl(settled) if settled.exists() else []
    finished = len({(r["head"], r["head_dim"], r["seed"]) for r in rows if r["phase"] == "grpo"})
    spec = r"\nolinkurl{experiments/configs/heads_sweep.toml}"
    if any(len(_paired_seeds(rows, d)) >= 2 for d in {r["head_dim"] for r in rows}):
        source = (
            f"The runs are those of the head sweep of {spec} (\\texttt{{make reproduce-heads}}; "
            "\\nolinkurl{results/heads/runs.jsonl}), with the settings of its column of Table~\\ref{tab:hyper}."
        )
        if plan and finished < plan["runs"]:
            source += f" The sweep is still running: {finished} of its {planned} are finished; the tables show those."
        limitation = (
            "The head comparison uses a warm start and a GRPO budget chosen so that a run takes minutes "
            "(Table~\\ref{tab:hyper}), not the teacher recipe."
        )
        return rows, "results/heads/runs.jsonl", source, limitation
    if not prelim.exists():
        return [], "", pending("the head comparison", PRODUCERS["heads"]), ""
    source = (
        "The runs are a preliminary sweep (\\nolinkurl{results/mammals_heads/runs.jsonl}) made with the shipped "
        "configuration, whose warm start Section~\\ref{sec:diagnosis} finds to limit accuracy, so absolute "
        "accuracies are low. "
    )
    if rows:
        source += (
            f"The settled sweep of {spec} has finished {finished} of its {planned} "
            "(\\nolinkurl{results/heads/runs.jsonl}); this section switches to it once both heads have two "
            "paired seeds at a head dimension."
        )
    else:
        source += pending("the settled comparison", PRODUCERS["heads"])
    limitation = (
        "The head comparison shown is the preliminary sweep, run with the shipped warm start that the "
        "diagnosis identified as the limit on accuracy; its conclusion is provisional until the settled "
        "sweep is finished."
    )
    return read_jsonl(prelim), "results/mammals_heads/runs.jsonl", source, limitation


def heads(paper: Paper, results: Path = RESULTS) -> None:
    rows, rel, source, limitation = _heads_rows(results)
    paper.fragment("heads_source", source)
    paper.fragment("heads_limitation", limitation)
    if not rows:
        for name in ("heads_table", "heads_paired", "heads_per_hop", "heads_abstract"):
            paper.fragment(name, pending("the head comparison", PRODUCERS["heads"]))
        return
    keys = sorted({(r["head"], r["head_dim"]) for r in rows}, key=lambda k: (k[1], k[0] != "poincare"))
    body, lift = [], {}
    for head, dim in keys:
        sel = [r for r in rows if r["head"] == head and r["head_dim"] == dim]
        seeds = sorted({r["seed"] for r in sel if r["phase"] == "grpo"})
        wa, ga = _per_seed(sel, seeds, "warm_start", "accuracy"), _per_seed(sel, seeds, "grpo", "accuracy")
        gf = _per_seed(sel, seeds, "grpo", "format")
        li = [100 * (g - w) for g, w in zip(ga, wa, strict=True)]
        lift[head, dim] = mean_ci(li)[0]
        body.append(
            [
                HEAD_NAMES[head],
                str(dim),
                str(len(seeds)),
                pm(*mean_ci(wa)),
                pm(*mean_ci(ga)),
                pm(*mean_ci(li), digits=1, sign=True),
                pm(*mean_ci(gf)),
            ]
        )
    header = ["head", "dim", "seeds", "warm-start acc", "GRPO acc", "lift (points)", "GRPO format"]
    paper.fragment("heads_table", tabular("lrrcccc", header, body))

    dims = sorted({d for _, d in keys})
    body, diffs = [], {}
    for dim in dims:
        seeds = _paired_seeds(rows, dim)
        if not seeds:
            continue
        acc = {
            h: _per_seed([r for r in rows if r["head"] == h and r["head_dim"] == dim], seeds, "grpo", "accuracy")
            for h in HEAD_NAMES
        }
        d = paired([100 * x for x in acc["poincare"]], [100 * x for x in acc["euclidean"]])
        diffs[dim] = d | {"n": len(seeds)}
        per_seed = ", ".join(f"{v:+.1f}" for v in d["per_seed"])
        body.append(
            [
                str(dim),
                str(len(seeds)),
                f"${d['mean']:+.1f}$",
                interval(d["lo"], d["hi"], 1, sign=True),
                pvalue(d["p"]),
                f"${per_seed}$",
            ]
        )
    header = ["dim", "seeds", r"Poincaré $-$ Euclidean (points)", f"{100 * LEVEL:g}\\% CI", "Wilcoxon $p$", "per seed"]
    paper.fragment("heads_paired", tabular("rrrccl", header, body))

    small, large = min(diffs), max(diffs)
    n = diffs[large]["n"]
    above = [v for dim, d in diffs.items() if dim != small for v in d["per_seed"]]
    runs = len({(r["head"], r["head_dim"], r["seed"]) for r in rows if r["phase"] == "grpo"})
    paper.macro(
        "HeadsDims",
        " and ".join([", ".join(str(d) for d in dims[:-1]), str(dims[-1])] if len(dims) > 1 else [str(dims[0])]),
    )
    paper.macro("HeadsSeedCount", str(n))
    paper.macro("HeadsSmallestDim", str(small))
    paper.macro("HeadsLargestDim", str(large))
    paper.macro("HeadsDiffLargest", signed(diffs[large]["mean"]))
    paper.macro("HeadsDiffCILargest", interval(diffs[large]["lo"], diffs[large]["hi"], 1, sign=True))
    paper.macro("HeadsPLargest", pvalue(diffs[large]["p"]))
    paper.macro("HeadsCIExcludesZero", "excludes" if diffs[large]["lo"] > 0 or diffs[large]["hi"] < 0 else "includes")
    paper.macro("HeadsPoincareWins", str(sum(v > 0 for v in above)))
    paper.macro("HeadsPairsCompared", str(len(above)))
    paper.macro("HeadsMinP", f"{2 / 2**n:.3g}")
    for head in HEAD_NAMES:
        paper.macro(f"HeadsLift{head.capitalize()}Largest", signed(lift[head, large]))
        paper.macro(f"HeadsLift{head.capitalize()}Smallest", signed(lift[head, small]))

    def cell_format(phase: str, key: tuple) -> float:
        return statistics.fmean(r["format"] for r in rows if r["phase"] == phase and (r["head"], r["head_dim"]) == key)

    fmt = {phase: [cell_format(phase, k) for k in keys] for phase in ("warm_start", "grpo")}
    paper.macro("HeadsWarmFormatMin", f"{min(fmt['warm_start']):.2f}")
    paper.macro("HeadsWarmFormatMax", f"{max(fmt['warm_start']):.2f}")
    paper.macro("HeadsGRPOFormatMin", f"{min(fmt['grpo']):.3f}")
    settled = rel == "results/heads/runs.jsonl"
    which = "the settled sweep" if settled else "a preliminary sweep with the shipped configuration"
    d, ci = diffs[large], interval(diffs[large]["lo"], diffs[large]["hi"], 1, sign=True)
    paper.fragment(
        "heads_abstract",
        (
            f"In {which} ({runs} runs), the paired difference of held-out GRPO accuracy, "
            "Poincaré minus Euclidean head, "
            f"is {signed(d['mean'])} points at head dimension {large} "
            f"({100 * LEVEL:g}\\% $t$-interval {ci}, Wilcoxon $p = {pvalue(d['p'])}$, "
            f"{n} seeds)."
        ),
    )

    hop_rows = [r for r in rows if r.get("per_hop") and r["phase"] == "grpo"]
    if not hop_rows:
        paper.fragment("heads_per_hop", pending(r"GRPO accuracy per hop count for each head", PRODUCERS["heads"]))
        return
    hops = sorted({int(h) for r in hop_rows for h in r["per_hop"]})
    body = []
    for head, dim in keys:
        sel = [r for r in hop_rows if r["head"] == head and r["head_dim"] == dim]
        cells = []
        for h in hops:
            per_seed = []  # the splits pooled, weighted by their queries; then the mean over seeds
            for seed in sorted({r["seed"] for r in sel}):
                got = [_hop_cell(r["per_hop"][str(h)]) for r in sel if r["seed"] == seed and str(h) in r["per_hop"]]
                got = [(a, w) for a, w in got if a is not None and w > 0]
                if got:
                    per_seed.append(sum(a * w for a, w in got) / sum(w for _, w in got))
            cells.append(f"{statistics.fmean(per_seed):.2f}" if per_seed else "---")
        body.append([HEAD_NAMES[head], str(dim), *cells])
    table = tabular("lr" + "r" * len(hops), ["head", "dim", *[str(h) for h in hops]], body, size=r"\footnotesize")
    caption = (
        "GRPO accuracy per hop count (the two held-out splits pooled, then the mean over seeds), from "
        "\\nolinkurl{" + rel + "}."
    )
    paper.fragment("heads_per_hop", float_table(table, caption, "tab:heads-per-hop"))


# ---------------------------------------------------------------- results of other shapes


def generic_table(data, caption: str, label: str) -> str:
    """A table of any JSON list of flat rows (or ``{"rows": [...]}``, or ``{key: row}``): one column
    per scalar key, in first-seen order; nested values are left out."""
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if isinstance(data, dict):
        data = [{"name": k, **v} if isinstance(v, dict) else {"name": k, "value": v} for k, v in data.items()]
    rows = [r for r in data if isinstance(r, dict)]
    cols: list[str] = []
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and (v is None or isinstance(v, (str, int, float, bool)))]

    def cell(v) -> str:
        if isinstance(v, bool) or v is None:
            return {True: "yes", False: "no", None: "---"}[v]
        if isinstance(v, float):
            return fixed(v)
        return str(v) if isinstance(v, int) else tex(v)

    body = [[cell(r.get(c)) for c in cols] for r in rows]
    table = tabular("l" * len(cols), [tex(c) for c in cols], body, size=r"\scriptsize")
    return float_table(table, caption, label)


def _cells_of(data: dict) -> list[tuple[str, str, str, dict]]:
    """``(name, head, dim, value)`` of a ``{"<head>_d<dim>": value}`` mapping, by dimension then head."""
    out = []
    for name, value in data.items():
        head, _, dim = name.rpartition("_d")
        out.append((name, HEAD_NAMES.get(head, tex(head)), dim, value))
    return sorted(out, key=lambda c: (int(c[2]) if c[2].isdigit() else 0, c[1] != "Poincaré", c[0]))


def reflection_table(data) -> str | None:
    """Per head and dimension: seeds, the reflection rate at the first and the last logged GRPO step and
    its mean over training, and the mean share of good retractions; None when no cell has steps yet."""
    body = []
    for _, head, dim, c in _cells_of(data):
        if not c.get("step"):
            continue
        rate, good = c["reflection_rate"], [g for g in c.get("good_share", []) if g is not None]
        body.append(
            [
                head,
                dim,
                str(max(c["seeds"])),
                f"{c['step'][0]}--{c['step'][-1]}",
                f"{rate[0]:.3f}",
                f"{rate[-1]:.3f}",
                f"{statistics.fmean(rate):.3f}",
                f"{statistics.fmean(good):.3f}" if good else "---",
            ]
        )
    if not body:
        return None
    header = ["head", "dim", "seeds", "steps", "rate, first", "rate, last", "rate, mean", "good share, mean"]
    return tabular("lrrcrrrr", header, body)


def collapse_table(data) -> str | None:
    """Per head and dimension, from the ``summary`` of ``collapses.json``: runs, runs with an
    episode, episodes, steps inside episodes and what triggered them."""
    body = []
    for _, head, dim, c in _cells_of(data.get("summary", {})):
        triggers = ", ".join(f"{tex(k)}: {v}" for k, v in sorted(c.get("triggers", {}).items())) or "---"
        body.append(
            [
                head,
                dim,
                str(c["runs"]),
                str(c["runs_with_episode"]),
                str(c["episodes"]),
                str(c["steps_in_episode"]),
                triggers,
            ]
        )
    if not body:
        return None
    return tabular(
        "lrrrrrl", ["head", "dim", "runs", "with an episode", "episodes", "steps in episodes", "triggers"], body
    )


def reflection_and_collapses(paper: Paper, results: Path = RESULTS) -> None:
    specs = {
        "reflection": (
            reflection_table,
            "Reflection during GRPO, per head and head dimension: the share of "
            "sampled completions with a \\texttt{wait} retraction (mean over seeds) at the first and the "
            "last logged step and over training, and the share of retractions that replace a wrong step "
            "by a true parent edge, from \\nolinkurl{results/heads/reflection.json}.",
        ),
        "collapses": (
            collapse_table,
            "Collapse-guard episodes of the head sweep, per head and head dimension, "
            "from \\nolinkurl{results/heads/collapses.json}.",
        ),
    }
    for name, (render, caption) in specs.items():
        path = results / "heads" / f"{name}.json"
        if not path.exists():
            paper.fragment(name, pending(rf"\nolinkurl{{results/heads/{name}.json}}", PRODUCERS[name]))
            continue
        data = json.loads(path.read_text())
        try:
            table = render(data)
        except (AttributeError, KeyError, TypeError, ValueError):  # a shape this script does not know
            paper.fragment(name, generic_table(data, caption, f"tab:{name}"))
            continue
        if table is None:
            paper.fragment(name, f"\\nolinkurl{{results/heads/{name}.json}} holds no finished run yet.\n")
        else:
            lead = f"Table~\\ref{{tab:{name}}} summarises \\nolinkurl{{results/heads/{name}.json}}.\n\n"
            paper.fragment(name, lead + float_table(table, caption, f"tab:{name}"))


SETUPS = (  # experiments/distill_mammals.py
    "sft_only", "student_grpo", "seq_kd", "word_kd", "sft_word_kd", "sft_word_kd_hard", "sft_continued", "sft_gkd",
    "sft_gkd_hard", "gkd", "gold_sft", "gold_sft_gkd_hard"
)  # fmt: skip
SHORT = {
    "test_unseen_pair": "pair",
    "test_unseen_subject": "subject",
    "test_unseen_subtree": "subtree",
    "distill_unseen": "unseen",
    "distill_subtree": "subtree",
}


def _acc_of(r: dict, who: str, split: str) -> float | None:
    """``r[who][split]["value"]`` of a distillation row, None where that set was not evaluated."""
    cell = (r.get(who) or {}).get(split)
    return cell.get("value") if isinstance(cell, dict) else None


def _held_out(r: dict, who: str) -> float:
    """``who``'s accuracy on the two held-out splits of a distillation row, averaged."""
    return statistics.fmean(_acc_of(r, who, s) for s in SPLITS)


def _summary(vals: list) -> str:
    vals = [v for v in vals if v is not None]
    return pm(*mean_ci(vals)) if vals else "---"


def distillation(paper: Paper, results: Path = RESULTS) -> None:
    """Retention, benchmark-bias and size tables from ``results/distill/runs.jsonl``: one row per run
    with setup, init, seed, size (``default`` when absent), student_params, teacher_params, ratio,
    per evaluation set ``{"value", "ci", "n"}`` of the teacher and the student, and optionally
    ``student_confidence`` ``{"seen", "unseen"}``."""
    path = results / "distill" / "runs.jsonl"
    if not path.exists():
        paper.fragment("distill", pending(r"\nolinkurl{results/distill/runs.jsonl}", PRODUCERS["distill"]))
        return
    runs = read_jsonl(path)
    main = [r for r in runs if r.get("size", "default") == "default"]
    held = [*SPLITS, *(["test_unseen_subtree"] if any("test_unseen_subtree" in r["student"] for r in main) else [])]
    against = [s for s in ("distill_unseen", "distill_subtree") if any(s in r["student"] for r in main)]
    groups = sorted(
        {(r["setup"], r["init"]) for r in main},
        key=lambda k: (SETUPS.index(k[0]) if k[0] in SETUPS else len(SETUPS), k),
    )

    retention_rows, bias_rows = [], []
    for setup, init in groups:
        sel = [r for r in main if r["setup"] == setup and r["init"] == init]
        row = [
            r"\texttt{" + tex(setup) + "}",
            tex(init),
            str(len(sel)),
            f"{100 * statistics.fmean(r['ratio'] for r in sel):.1f}\\%",
        ]
        for split in held:
            teacher, student = ([_acc_of(r, who, split) for r in sel] for who in ("teacher", "student"))
            kept = [s / t for s, t in zip(student, teacher, strict=True) if s is not None and t]
            row += [_summary(teacher), _summary(student), f"{statistics.fmean(kept):.2f}" if kept else "---"]
        retention_rows.append(row)
        bias = [r"\texttt{" + tex(setup) + "}", tex(init)]
        for who in ("teacher", "student"):
            bias.append(_summary([_acc_of(r, who, "distill_seen") for r in sel]))
            for other in against:
                gap = [
                    _acc_of(r, who, "distill_seen") - _acc_of(r, who, other)
                    for r in sel
                    if _acc_of(r, who, "distill_seen") is not None and _acc_of(r, who, other) is not None
                ]
                bias.append(pm(*mean_ci(gap), sign=True) if gap else "---")
        conf = [r.get("student_confidence") or {} for r in sel]
        for key in ("seen", "unseen"):
            vals = [c[key] for c in conf if c.get(key) is not None]
            bias.append(f"{statistics.fmean(vals):.3f}" if vals else "---")
        bias_rows.append(bias)
    header = ["setup", "init", "runs", "size"]
    for split in held:
        header += [f"teacher {SHORT[split]}", f"student {SHORT[split]}", "kept"]
    retention = tabular("llrr" + "ccr" * len(held), header, retention_rows, size=r"\scriptsize")
    header = ["setup", "init"]
    for who in ("teacher", "student"):
        header += [f"{who} seen", *[f"seen $-$ {SHORT[o]}" for o in against]]
    header += ["conf.\\ seen", "conf.\\ unseen"]
    bias = tabular("ll" + "c" * (2 + 2 * len(against)) + "rr", header, bias_rows, size=r"\scriptsize")
    text = (
        "Table~\\ref{tab:distill-retention} lists the held-out accuracy of teacher and student per setup "
        f"(mean $\\pm$ {100 * LEVEL:g}\\% $t$-interval over runs; ``kept'' is student / teacher accuracy, "
        "averaged over runs), and Table~\\ref{tab:distill-bias} the gap between the distillation prompts (seen) "
        "and training queries that were not used as prompts (unseen) or that come from the held-out subtree.\n\n"
        + float_table(
            retention,
            "Distillation: held-out accuracy of teacher and student, from \\nolinkurl{results/distill/runs.jsonl}.",
            "tab:distill-retention",
        )
        + float_table(
            bias,
            "Benchmark bias: accuracy on the distillation prompts (seen), its gap to the other "
            "sets, and the student's confidence, from \\nolinkurl{results/distill/runs.jsonl}.",
            "tab:distill-bias",
        )
    )
    sized = sorted({r.get("size", "default") for r in runs} - {"default"})
    if sized:
        body = []
        for size in sized:
            sel = [r for r in runs if r.get("size") == size]
            student = [_held_out(r, "student") for r in sel]
            kept = [_held_out(r, "student") / _held_out(r, "teacher") for r in sel]
            body.append(
                [
                    tex(size),
                    r"\texttt{" + tex(sel[0]["setup"]) + "}",
                    count(sel[0]["student_params"]),
                    f"{100 * sel[0]['ratio']:.1f}\\%",
                    str(len(sel)),
                    pm(*mean_ci(student)),
                    f"{statistics.fmean(kept):.2f}",
                ]
            )
        table = tabular(
            "llrrrcr",
            ["size", "setup", "parameters", "share", "runs", "student held-out", "kept"],
            body,
            size=r"\scriptsize",
        )
        text += float_table(
            table,
            "Retention against student size (held-out accuracy, mean of the two "
            "splits), from \\nolinkurl{results/distill/runs.jsonl}.",
            "tab:distill-sizes",
        )
    paper.fragment("distill", text)


def distillation_long(paper: Paper, results: Path = RESULTS) -> None:
    """The 4x-compute sweep (``results/distill_long/runs.jsonl``, same row schema as the main sweep)."""
    _sweep_table(
        paper, results, "distill_long", "tab:distill-long",
        "Four times the student compute (\\nolinkurl{experiments/configs/distill_sweep_long.toml}): held-out "
        "accuracy (mean of the two splits) of the student, from \\nolinkurl{results/distill_long/runs.jsonl}.",
    )  # fmt: skip


def distillation_chain(paper: Paper, results: Path = RESULTS) -> None:
    """The two-stage sweep (``results/distill_chain/runs.jsonl``): warm start + word-level KD against
    warm start + GRPO at equal student compute, with the paired difference by seed."""
    _sweep_table(
        paper, results, "distill_chain", "tab:distill-chain",
        "Two stages at four times the student compute (\\nolinkurl{experiments/configs/distill_sweep_chain.toml}): "
        "the student's own warm start, then word-level distillation (\\texttt{sft\\_word\\_kd}) or GRPO on "
        "itself (\\texttt{student\\_grpo}); held-out accuracy (mean of the two splits), from "
        "\\nolinkurl{results/distill_chain/runs.jsonl}.",
        paired_with="student_grpo",
    )  # fmt: skip


def distillation_chain_long(paper: Paper, results: Path = RESULTS) -> None:
    """The two-stage sweep at four times its compute (``results/distill_chain_long/runs.jsonl``)."""
    _sweep_table(
        paper, results, "distill_chain_long", "tab:distill-chain-long",
        "The two stages of Table~\\ref{tab:distill-chain} at four times their student compute "
        "(\\nolinkurl{experiments/configs/distill_sweep_chain_long.toml}), from "
        "\\nolinkurl{results/distill_chain_long/runs.jsonl}.",
        paired_with="student_grpo",
    )  # fmt: skip


def distillation_chain_hard(paper: Paper, results: Path = RESULTS) -> None:
    """The long two-stage sweep at the lower second-stage rate, with hard targets and their control
    (``results/distill_chain_hard/runs.jsonl``)."""
    _sweep_table(
        paper, results, "distill_chain_hard", "tab:distill-chain-hard",
        "The two stages of Table~\\ref{tab:distill-chain-long} with the distillation stage at a tenth of "
        "its learning rate, alone (\\texttt{sft\\_word\\_kd}), with the gold completions' NLL beside the "
        "teacher's term (\\texttt{sft\\_word\\_kd\\_hard}, Hinton et al.'s hard targets) and that NLL "
        "alone (\\texttt{sft\\_continued}, no teacher), and on-policy GKD from the same warm start without and "
        "with that NLL (\\texttt{sft\\_gkd}, \\texttt{sft\\_gkd\\_hard}) "
        "(\\nolinkurl{experiments/configs/distill_sweep_chain_hard.toml}), from "
        "\\nolinkurl{results/distill_chain_hard/runs.jsonl}.",
        paired_with="student_grpo",
    )  # fmt: skip


def distillation_d4(paper: Paper, results: Path = RESULTS) -> None:
    """The width-4 student over three seeds (``results/distill_chain_hard_d4/runs.jsonl``): where the
    one-seed size sweep showed distillation ahead of GRPO by R1's ten points."""
    _sweep_table(
        paper, results, "distill_chain_hard_d4", "tab:distill-d4",
        "The smallest student of Table~\\ref{tab:distill-sizes-16x} that learns the format (width 4) over "
        "three seeds, all trained on one machine with its own teacher: its warm start, GRPO on it and on-policy "
        "GKD with hard targets from that warm start "
        "(\\nolinkurl{experiments/configs/distill_sweep_chain_hard_d4.toml}), from "
        "\\nolinkurl{results/distill_chain_hard_d4/runs.jsonl}.",
        paired_with="student_grpo",
    )  # fmt: skip


def warm_start_order(paper: Paper, results: Path = RESULTS) -> None:
    """One student's warm start from fixed initial weights with only the example order moving
    (``results/warm_start_order/runs.jsonl``, ``experiments/warm_start_order.py``): per sampling and
    settings the held-out accuracy over order seeds, and the scheduled runs paired with the constant
    ones at the same order seeds."""
    path = results / "warm_start_order" / "runs.jsonl"
    if not path.exists():
        producer = r"\texttt{python experiments/warm\_start\_order.py}"
        paper.fragment("warm_start_order", pending(r"\nolinkurl{results/warm_start_order/runs.jsonl}", producer))
        return
    runs = read_jsonl(path)
    body, held = [], {}
    for sampling, tag in sorted({(r["sampling"], r.get("tag", "")) for r in runs}):
        sel = [r for r in runs if (r["sampling"], r.get("tag", "")) == (sampling, tag)]
        sel.sort(key=lambda r: r["order_seed"])
        accs = [r["held_out"] for r in sel]
        held[(sampling, tag)] = {r["order_seed"]: r["held_out"] for r in sel}
        settings = ", ".join(tex(o) for o in sel[0].get("overrides", [])) or "constant $\\eta$"
        distilled = ", ".join(f"{r['distilled']['held_out']:.3f}" if "distilled" in r else "---" for r in sel)
        body.append([tex(sampling), settings, str(len(sel)), pm(*mean_ci(accs)), f"{min(accs):.3f}--{max(accs):.3f}",
                     ", ".join(f"{a:.3f}" for a in accs), distilled])  # fmt: skip
    constant = held.get(("epochs", ""), {})
    for (sampling, tag), per in sorted(held.items()):
        if not tag:
            continue
        seeds = sorted(set(per) & set(held.get((sampling, ""), {})))
        if len(seeds) >= 2:
            d = paired([per[k] for k in seeds], [held[(sampling, "")][k] for k in seeds])
            name = "WarmOrder" + "".join(w.capitalize() for w in f"{sampling} {tag}".split() if w.isalpha())
            paper.macro(name + "Diff", signed(100 * d["mean"]))
            paper.macro(name + "DiffCI", interval(100 * d["lo"], 100 * d["hi"], digits=1, sign=True))
            paper.macro(name + "P", pvalue(d["p"]))
    epochs = [r for r in runs if r["sampling"] == "epochs"]  # their sft/loss is the last epoch's
    if len(epochs) >= 3:
        rho = stats.spearmanr([r["final_sft_loss"] for r in epochs], [r["held_out"] for r in epochs])
        paper.macro("WarmOrderNLLRho", fixed(float(rho.statistic), 2))
        paper.macro("WarmOrderNLLP", pvalue(float(rho.pvalue)))
        paper.macro("WarmOrderNLLRuns", str(len(epochs)))
    if constant:
        paper.macro("WarmOrderEpochsMin", fixed(min(constant.values())))
        paper.macro("WarmOrderEpochsMax", fixed(max(constant.values())))
    header = ["sampling", "settings", "orders", "held-out", "range", "per order seed", "distilled"]
    caption = (
        "The warm start of the student of Table~\\ref{tab:distill-chain-hard} (its sweep's settings) from the same "
        "initial weights, only the order of the gold examples moving: epochs shuffled by the order seed, or "
        "draws with replacement (the distillation runner's sampling); held-out accuracy is the mean of the two "
        "held-out splits; distilled: the sweep's \\texttt{sft\\_gkd\\_hard} from that warm start, where it was run, "
        "from \\nolinkurl{results/warm_start_order/runs.jsonl} "
        "(\\nolinkurl{experiments/warm_start_order.py})."
    )
    paper.fragment("warm_start_order", float_table(tabular("llrccll", header, body), caption, "tab:warm-start-order"))


def distillation_select(paper: Paper, results: Path = RESULTS) -> None:
    """The 16x sweep with each seed's warm start chosen among restarts by its gold NLL
    (``results/distill_chain_hard_select/runs.jsonl``, ``sft.restarts = 3``): the sweep's table, and a
    paragraph with the restarts table saying what the choice did, written from the rows that exist."""
    name = "distill_chain_hard_select"
    runs = _sweep_table(
        paper, results, name, "tab:distill-select",
        "The student of Table~\\ref{tab:distill-chain-hard} with each seed's warm start chosen among three example "
        "orders by its own gold NLL (\\texttt{sft.restarts = 3}, warmup and cosine decay), GRPO on the chosen warm "
        "start and on-policy GKD with hard targets from it, on one machine with its own teacher "
        "(\\nolinkurl{experiments/configs/distill_sweep_chain_hard_select.toml}), from "
        "\\nolinkurl{results/distill_chain_hard_select/runs.jsonl}.",
        paired_with="student_grpo",
    )  # fmt: skip
    if runs is None:
        paper.fragment("distill_select_text", "")
        return
    warm = sorted((r for r in runs if r.get("warm_start_restarts")), key=lambda r: r["seed"])
    by = {setup: {r["seed"]: _held_out(r, "student") for r in runs if r["setup"] == setup} for setup in SETUPS}
    body, agree = [], 0
    for r in warm:
        info = r["warm_start_restarts"]
        tried = info["tried"]
        monitor = [t["monitor_held_out"] for t in tried]
        agree += all(m is not None for m in monitor) and monitor.index(max(monitor)) == info["chosen"]

        def mark(t: dict, text: str, chosen: int = info["chosen"]) -> str:
            return rf"\textbf{{{text}}}" if t["restart"] == chosen else text

        body.append([
            str(r["seed"]), ", ".join(str(t["order_seed"]) for t in tried),
            ", ".join(mark(t, f"{t['gold_nll']:.3f}") for t in tried),
            ", ".join(mark(t, "---" if m is None else f"{m:.3f}") for t, m in zip(tried, monitor, strict=True)),
            f"{_held_out(r, 'student'):.3f}",
        ])  # fmt: skip
    order_path = results / "warm_start_order" / "runs.jsonl"
    single = [
        r["held_out"]
        for r in (read_jsonl(order_path) if order_path.exists() else [])
        if r["sampling"] == "epochs" and r.get("tag") == "wcos"
    ]
    chosen = [by["sft_only"][k] for k in sorted(by["sft_only"])]
    text = (
        "Choosing each seed's warm start by that NLL is the cheap fix this suggests: train it from the seed's initial "
        "weights in three orders and keep the one whose weights give its own gold data the lowest NLL, without "
        "looking at a held-out query (\\texttt{sft.restarts}"
        + ("; Table~\\ref{tab:distill-select-restarts}). " if warm else "). ")
        + f"The chosen warm starts of seeds {', '.join(str(k) for k in sorted(by['sft_only']))} reached "
        f"{', '.join(f'{a:.3f}' for a in chosen)} held-out ({pm(*mean_ci(chosen))})"
    )
    if len(single) >= 2:
        text += f", against {pm(*mean_ci(single))} for one order at a time with the same schedule"
    text += ". "
    if warm:
        text += (
            f"The lowest NLL was also the best restart by the warm start's own held-out monitor on {agree} of "
            f"{len(warm)} seeds. "
        )
    unrecorded = sorted(set(by["sft_only"]) - {r["seed"] for r in warm})
    if unrecorded:
        plural = "s" if len(unrecorded) > 1 else ""
        text += (
            f"The rows of seed{plural} {', '.join(map(str, unrecorded))} carry no per-restart record (the run was "
            "collected by code that predates it). "
        )
    seeds = sorted(set(by["student_grpo"]) & set(by["sft_only"]))
    if seeds:
        grpo = [by["student_grpo"][k] for k in seeds]
        gain = [100 * (by["student_grpo"][k] - by["sft_only"][k]) for k in seeds]
        text += (
            f"GRPO on them reached {', '.join(f'{a:.3f}' for a in grpo)} "
            f"({', '.join(signed(g) for g in gain)} points over the warm start). "
        )
    kd = sorted(set(by["sft_gkd_hard"]) & set(by["student_grpo"]))
    if kd:
        kd_acc = ", ".join(f"{by['sft_gkd_hard'][k]:.3f}" for k in kd)
        lead = ", ".join(signed(100 * (by["sft_gkd_hard"][k] - by["student_grpo"][k])) for k in kd)
        text += (
            f"On-policy GKD with hard targets from the same warm starts reached {kd_acc} on seeds "
            f"{', '.join(str(k) for k in kd)} ({lead} points over GRPO); Table~\\ref{{tab:distill-select}} has the "
            "retention. "
        )
    missing = sorted(set(by["sft_only"]) - set(by["sft_gkd_hard"]))
    if missing:
        plural = "s" if len(missing) > 1 else ""
        text += f"The distillation run{plural} of seed{plural} {', '.join(map(str, missing))} did not finish yet. "
    header = ["seed", "order seeds", "gold NLL per restart", "monitor held-out per restart", "chosen held-out"]
    caption = (
        "The warm-start restarts of Table~\\ref{tab:distill-select}: each restart's order seed, the gold NLL of its "
        "final weights on the warm-start data (the choice, in bold: the lowest), the greedy held-out accuracy the "
        "warm start's monitor logged at its last epoch (a subset of the held-out queries, not used in the choice), "
        "and the chosen warm start's held-out accuracy on the full evaluation."
    )
    table = float_table(tabular("rllll", header, body), caption, "tab:distill-select-restarts") if warm else ""
    paper.fragment("distill_select_text", text.strip() + "\n" + table)


SELECT_WORDS = {"sft_only": "its chosen warm start", "student_grpo": "GRPO on it", "sft_gkd_hard": "GKD from it"}


def _setups_sentence(runs: list[dict]) -> str:
    """ "<setup in words> <held-out per seed> on seed(s) … (<share of the teacher>)" for each setup of
    :data:`SELECT_WORDS` that has rows, joined by semicolons, then which of them have none."""
    parts = []
    for setup, word in SELECT_WORDS.items():
        sel = sorted((r for r in runs if r["setup"] == setup), key=lambda r: r["seed"])
        if sel:
            seeds = ", ".join(str(r["seed"]) for r in sel)
            accs = ", ".join(f"{_held_out(r, 'student'):.3f}" for r in sel)
            kept = ", ".join(f"{100 * _held_out(r, 'student') / _held_out(r, 'teacher'):.1f}\\%" for r in sel)
            plural = "s" if len(sel) > 1 else ""
            parts.append(f"{word} {accs} held-out on seed{plural} {seeds} ({kept} of the teacher)")
    text = "; ".join(parts) + ". "
    missing = [word for setup, word in SELECT_WORDS.items() if not any(r["setup"] == setup for r in runs)]
    return text + (f"Not run yet: {', '.join(missing)}. " if missing else "")


def distillation_select_d14(paper: Paper, results: Path = RESULTS) -> None:
    """The same sweep with the largest student the 10% budget allows
    (``results/distill_chain_hard_select_d14/runs.jsonl``), beside the 16x student of the same seeds
    rerun on the same machine and teacher (``results/distill_chain_hard_select_avx512/``, when it
    exists): a sentence per setup that has run, and the sweep's table."""
    name = "distill_chain_hard_select_d14"
    runs = _sweep_table(
        paper, results, name, "tab:distill-select-d14",
        "Table~\\ref{tab:distill-select} with the largest student within the budget ($d_\\text{model} = 14$, "
        "feed-forward width 28, head dimension 6; "
        "\\nolinkurl{experiments/configs/distill_sweep_chain_hard_select_d14.toml}), from "
        "\\nolinkurl{results/distill_chain_hard_select_d14/runs.jsonl}.",
        paired_with="student_grpo",
    )  # fmt: skip
    if runs is None:
        paper.fragment("distill_select_d14_text", "")
        return
    r0 = runs[0]
    text = (
        f"The budget leaves room for a larger student: {r0['student_params']:,} parameters, "
        f"{100 * r0['ratio']:.1f}\\% of the teacher (Table~\\ref{{tab:distill-select-d14}}). "
        f"At this size, against a teacher of {_held_out(r0, 'teacher'):.3f}, " + _setups_sentence(runs)
    )
    control_path = results / "distill_chain_hard_select_avx512" / "runs.jsonl"
    if control_path.exists():
        control = read_jsonl(control_path)
        text += (
            "The 16$\\times$ student of Table~\\ref{tab:distill-select}, rerun on the same machine with the same "
            "teacher (\\nolinkurl{results/distill_chain_hard_select_avx512/}; the table's runs are from another "
            "CPU, whose float rounding gives another teacher): " + _setups_sentence(control)
        )
    paper.fragment("distill_select_d14_text", text.strip() + "\n")


SIZE_SWEEPS = ("distill_chain_hard", "distill_chain_hard_d8", "distill_chain_hard_d4", "distill_chain_hard_d2")
SIZE_SETUPS = ("sft_only", "student_grpo", "sft_gkd_hard")


def distillation_sizes(paper: Paper, results: Path = RESULTS) -> None:
    """Retention against student size at 16x: the chain_hard sweep (7.9%) and its copies with smaller
    students (``results/distill_chain_hard_<size>/runs.jsonl``), seed 0, per setup of SIZE_SETUPS."""
    runs = [r for name in SIZE_SWEEPS if (results / name / "runs.jsonl").exists()
            for r in read_jsonl(results / name / "runs.jsonl")]  # fmt: skip
    runs = [r for r in runs if r["seed"] == 0 and r["setup"] in SIZE_SETUPS and r.get("size") == "default"]
    if len({r["student_params"] for r in runs}) < 2:
        producer = (
            r"\texttt{python experiments/distill\_mammals.py --sweep "
            r"experiments/configs/distill\_sweep\_chain\_hard\_d8.toml} (and \_d4, \_d2)"
        )
        paper.fragment("distill_sizes", pending(r"\nolinkurl{results/distill_chain_hard_d8/runs.jsonl}", producer))
        return
    body = []
    for params in sorted({r["student_params"] for r in runs}, reverse=True):
        sel = {r["setup"]: r for r in runs if r["student_params"] == params}
        ratio = next(iter(sel.values()))["ratio"]
        cells = [count(params), f"{100 * ratio:.1f}\\%"]
        for setup in SIZE_SETUPS:
            r = sel.get(setup)
            if r is None:
                cells.append("---")
                continue
            acc = _held_out(r, "student")
            cells.append(f"{acc:.3f} ({100 * acc / _held_out(r, 'teacher'):.0f}\\%)")
        body.append(cells)
    header = ["parameters", "share", *[r"\texttt{" + tex(s) + "}" for s in SIZE_SETUPS]]
    caption = (
        "Retention against student size at sixteen times the main sweep's student compute, seed 0: held-out "
        "accuracy (mean of the two splits) and its share of the teacher's, from "
        "\\nolinkurl{results/distill_chain_hard*/runs.jsonl} "
        "(\\nolinkurl{experiments/configs/distill_sweep_chain_hard_<size>.toml})."
    )
    paper.fragment("distill_sizes", float_table(tabular("rr" + "c" * len(SIZE_SETUPS), header, body), caption,
                                                "tab:distill-sizes-16x"))  # fmt: skip


def _sweep_table(
    paper: Paper, results: Path, name: str, label: str, caption: str, paired_with: str = ""
) -> list[dict] | None:
    """Per setup and init of the sweep ``name``: the student's held-out accuracy (mean of the two
    splits) with its t-interval, the per-seed values and the retention; with ``paired_with``, the
    paired difference (points) to that setup over the seeds both have, and its Wilcoxon p. Returns
    the sweep's rows, or ``None`` (and a pending note) when its ``runs.jsonl`` does not exist."""
    path = results / name / "runs.jsonl"
    sweep = rf"experiments/configs/{tex(name.replace('distill_', 'distill_sweep_'))}.toml"
    producer = rf"\texttt{{python experiments/distill\_mammals.py --sweep {sweep}}}"
    if not path.exists():
        paper.fragment(name, pending(rf"\nolinkurl{{results/{name}/runs.jsonl}}", producer))
        return None
    runs = read_jsonl(path)
    groups = sorted({(r["setup"], r["init"]) for r in runs}, key=lambda k: (SETUPS.index(k[0]), k))
    base = {r["seed"]: _held_out(r, "student") for r in runs if r["setup"] == paired_with}
    body = []
    for setup, init in groups:
        sel = sorted((r for r in runs if (r["setup"], r["init"]) == (setup, init)), key=lambda r: r["seed"])
        student = [_held_out(r, "student") for r in sel]
        teacher = [_held_out(r, "teacher") for r in sel]
        kept = [a / t for a, t in zip(student, teacher, strict=True)]
        row = [
            r"\texttt{" + tex(setup) + "}",
            tex(init),
            str(len(sel)),
            pm(*mean_ci(student)),
            ", ".join(f"{a:.3f}" for a in student),
            f"{statistics.fmean(kept):.2f}",
        ]
        if paired_with:
            both = [r for r in sel if r["seed"] in base]
            if setup != paired_with and len(both) >= 2:
                d = paired([100 * _held_out(r, "student") for r in both], [100 * base[r["seed"]] for r in both])
                row += [pm(d["mean"], d["hi"] - d["mean"], digits=1, sign=True), pvalue(d["p"])]
            else:
                row += ["---", "---"]
        body.append(row)
    header = ["setup", "init", "runs", "student held-out", "per seed", "kept"]
    if paired_with:
        header += [rf"$-$ \texttt{{{tex(paired_with)}}} (points)", "Wilcoxon $p$"]
    table = tabular("llrcll" + ("rr" if paired_with else ""), header, body)
    paper.fragment(name, float_table(table, caption, label))
    return runs


def speed(paper: Paper, results: Path = RESULTS) -> None:
    path = results / "bench_distill.json"
    if not path.exists():
        paper.fragment(
            "speed_distill",
            pending(r"\nolinkurl{results/bench_distill.json}", r"\texttt{python benchmarks/bench\_distill.py}"),
        )
    else:
        b = json.loads(path.read_text())
        reps = b["repeats"]
        ours = reps[0]["hyperr1"]
        paper.fragment("speed_distill", "")
        paper.macro("DistillSpeedup", f"{b['trl_over_hyperr1']['median']:.2f}")
        paper.macro("DistillSpeedupMin", f"{b['trl_over_hyperr1']['min']:.2f}")
        paper.macro("DistillSpeedupMax", f"{b['trl_over_hyperr1']['max']:.2f}")
        paper.macro("DistillCPUSpeedup", f"{b['cpu_trl_over_hyperr1']['median']:.2f}")
        paper.macro("DistillBenchRepeats", str(len(reps)))
        paper.macro("DistillBenchPrompts", str(b["workload"]["prompts"]))
        paper.macro("DistillBenchTokens", str(b["workload"]["max_new_tokens"]))
        paper.macro("DistillBenchSteps", str(b["workload"]["steps"]))
        paper.macro("DistillBenchLambda", sci(float(b["workload"]["lam"])))
        paper.macro("DistillBenchLoadMin", f"{min(r['load_average_1min'] for r in reps):.1f}")
        paper.macro("DistillBenchLoadMax", f"{max(r['load_average_1min'] for r in reps):.1f}")
        paper.macro("TRLVersion", tex(b["versions"]["trl"]))
        paper.macro("StudentParams", count(ours["params"]["student"]))
        paper.macro("StudentRatio", f"{100 * ours['params']['student'] / ours['params']['teacher']:.1f}\\%")
        paper.macro("CPUCount", tex(b["machine"].split("cpus=")[-1]))
    rows, missing = [], []
    repeats_path = results / "bench_repeats.json"  # benchmarks/repeat.py: every run's ratio
    repeats = json.loads(repeats_path.read_text()) if repeats_path.exists() else {}
    names = (
        "bench_grpo",
        "bench_grpo_question",
        "bench_sampler",
        "bench_head",
        "bench_embeddings",
        "bench_embeddings_steps",
    )
    for name in names:
        p = results / f"{name}.json"
        if not p.exists():
            missing.append(name)
            continue
        rep = repeats.get(name, {})
        for key, v in sorted(json.loads(p.read_text()).items()):
            runs = f"{rep['min']:.2f}--{rep['max']:.2f} ({len(rep['runs'])})" if rep.get("key") == key else "--"
            cells = [r"\texttt{" + tex(name) + "}", r"\texttt{" + tex(key) + "}"]
            if "over" in key and isinstance(v, (int, float)):
                rows.append([*cells, f"{v:.2f}", runs])
            elif "over" in key and isinstance(v, dict) and "median" in v:
                rows.append([*cells, f"{v['median']:.2f}", runs])
    text = "".join(pending(rf"\nolinkurl{{results/{n}.json}}", PRODUCERS[n]) for n in missing)
    if rows:
        text += "\n" + tabular("llrr", ["benchmark", "ratio", "median", "runs (n)"], rows)
    paper.fragment("speed_others", text)


def figures(paper: Paper, root: Path = ROOT) -> None:
    for name, (width, producer, caption) in FIGURES.items():
        share = "" if width == 1.0 else f"{width:g}"
        graphic = rf"\includegraphics[width={share}\linewidth]{{../figures/{name}.pdf}}"
        exists = (root / "figures" / f"{name}.pdf").exists()
        missing = pending(rf"\nolinkurl{{figures/{name}.pdf}}", producer).strip()
        if caption is None:
            body = graphic if exists else r"\fbox{\parbox{0.9\linewidth}{\centering\small " + missing + "}}"
        elif exists:
            label = "fig:" + name.replace("_", "-")
            body = "\n".join(
                [
                    r"\begin{figure}[tbp]",
                    r"\centering",
                    graphic,
                    rf"\caption{{{caption}}}",
                    rf"\label{{{label}}}",
                    r"\end{figure}",
                ]
            )
        else:
            body = f"Figure: {caption[0].lower()}{caption[1:]} {missing}"
        paper.fragment(f"fig_{name}", body)


def build() -> Paper:
    paper = Paper()
    configs(paper)
    embeddings(paper)
    nouns(paper)
    teacher(paper)
    diagnosis(paper)
    heads(paper)
    reflection_and_collapses(paper)
    distillation(paper)
    distillation_long(paper)
    distillation_chain(paper)
    distillation_chain_long(paper)
    distillation_chain_hard(paper)
    distillation_sizes(paper)
    distillation_d4(paper)
    warm_start_order(paper)
    distillation_select(paper)
    distillation_select_d14(paper)
    speed(paper)
    figures(paper)
    return paper


def write(paper: Paper, out: Path) -> None:
    """Write every file; remove ``.tex`` files of ``out`` that this run did not produce."""
    out.mkdir(parents=True, exist_ok=True)
    files = paper.files()
    for stale in sorted(out.glob("*.tex")):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "paper" / "generated", help="directory of the fragments")
    args = p.parse_args()
    paper = build()
    write(paper, args.out)
    print(f"wrote {len(paper.fragments) + 1} files ({len(paper.macros)} macros) to {args.out}")


if __name__ == "__main__":
    main()
