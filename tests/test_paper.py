"""The paper is built from results: the committed fragments are what ``paper/make_tables.py``
writes today, the LaTeX source types no number, and every quoted number is a generated macro."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper"
GENERATED = PAPER / "generated"
SOURCE = PAPER / "hyperr1.tex"

_spec = importlib.util.spec_from_file_location("make_tables", PAPER / "make_tables.py")
make_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_tables)

# Words with digits that are names, not results. Keep this short: a result belongs in a macro.
ALLOWED_WORDS = {
    "R1",  # DeepSeek-R1, R1-style, R1-Zero: a model's name
    "k3",  # Schulman's k3 KL estimator: a name
    "pass@1",  # the metric's name (its value is never typed)
    "dog.n.01",  # a WordNet synset name (the concept the disk is re-centred on)
    "hyperr1",  # the package's name
}
# Commands whose arguments (optional and braced) are references, files or layout, never results
SKIPPED_ARGUMENTS = (
    "ref",
    "eqref",
    "label",
    "cite",
    "citet",
    "citep",
    "citealp",
    "citeauthor",
    "citeyear",
    "includegraphics",
    "input",
    "include",
    "usepackage",
    "documentclass",
    "begin",
    "end",
    "setlength",
    "vspace",
    "hspace",
    "bibliographystyle",
    "bibliography",
    "newcommand",
    "renewcommand",
    "DeclareMathOperator",
    "resizebox",
    "setcounter",
)
DIMENSION = re.compile(r"\d*\.?\d+\s*(?:\\(?:text|line|column)width|\\(?:text|paper)height|pt|em|ex|cm|mm|in|bp)\b")
MATH = re.compile(
    r"\\begin\{(equation|gather|align|multline)(\*?)\}.*?\\end\{\1\2\}|\\\[.*?\\\]|\\\(.*?\\\)|(?<!\\)\$.+?(?<!\\)\$",
    re.DOTALL,
)
MATH_CONSTANTS = {"0", "1", "2"}  # exp_0, 1 - c|x|^2, the 2 of the distance: constants of formulas
# LaTeX's own macros that start with an uppercase letter (everything else uppercase is ours)
BUILTINS = {
    "LaTeX",
    "TeX",
    "Large",
    "LARGE",
    "Huge",
    "S",
    "P",
    "Big",
    "Bigg",
    "Bigl",
    "Bigr",
    "Biggl",
    "Biggr",
    "Vert",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Pi",
    "Sigma",
    "Upsilon",
    "Phi",
    "Psi",
    "Omega",
    "Leftarrow",
    "Rightarrow",
    "Longrightarrow",
    "Re",
    "Im",
    "Pr",
    "AA",
    "AE",
    "OE",
    "O",
    "L",
    "DeclareMathOperator",
}


def _blank(text: str, start: int, end: int) -> str:
    """``text`` with ``[start, end)`` replaced by spaces, newlines kept (line numbers stay right)."""
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def _skip_groups(text: str, i: int) -> int:
    """The index after the optional ``[...]`` and braced ``{...}`` arguments that start at ``i``."""
    while True:
        j = i
        while j < len(text) and text[j] in " \t":
            j += 1
        if j >= len(text) or text[j] not in "[{":
            return i
        close, depth = {"[": "]", "{": "}"}[text[j]], 0
        for k in range(j, len(text)):
            if text[k] == text[j]:
                depth += 1
            elif text[k] == close:
                depth -= 1
                if depth == 0:
                    break
        i = k + 1


def _blank_arguments(text: str) -> str:
    """``text`` with the arguments of :data:`SKIPPED_ARGUMENTS` and the dimension literals blanked."""
    for m in reversed(list(re.finditer(r"\\(" + "|".join(SKIPPED_ARGUMENTS) + r")\*?(?![A-Za-z])", text))):
        text = _blank(text, m.start(), _skip_groups(text, m.end()))
    for m in reversed(list(DIMENSION.finditer(text))):
        text = _blank(text, m.start(), m.end())
    return text


def typed_numbers(source: str) -> list[tuple[int, str]]:
    """``(line, word)`` for every number typed in a LaTeX source, outside comments, references,
    file names and layout arguments; in math, only the constants of formulas (0, 1, 2) pass."""
    text = "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in source.splitlines())
    found = []
    for m in reversed(list(MATH.finditer(text))):
        body = _blank_arguments(m.group(0))
        for d in re.finditer(r"\d+(?:\.\d+)?", body):
            if d.group(0) not in MATH_CONSTANTS:
                found.append((text.count("\n", 0, m.start() + d.start()) + 1, d.group(0)))
        text = _blank(text, m.start(), m.end())
    text = _blank_arguments(text)
    text = re.sub(r"\\(?:\\|[A-Za-z@]+)|[{}]", lambda m: " " * len(m.group(0)), text)  # commands and braces
    for m in re.finditer(r"\S*\d\S*", text):
        word = re.sub(r"'s$", "", m.group(0).strip("()[],.;:!?'`\"~"))
        parts = [p for p in re.split(r"[-/~]", word) if re.search(r"\d", p)]
        if word not in ALLOWED_WORDS and not all(p in ALLOWED_WORDS for p in parts):
            found.append((text.count("\n", 0, m.start()) + 1, word))
    return sorted(found)


# ---------------------------------------------------------------- (a) the fragments are current


def test_committed_fragments_are_what_make_tables_writes(tmp_path):
    out = tmp_path / "generated"
    proc = subprocess.run(
        [sys.executable, str(PAPER / "make_tables.py"), "--out", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    fresh = {p.name: p.read_text(encoding="utf-8") for p in sorted(out.glob("*.tex"))}
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(GENERATED.glob("*.tex"))}
    assert sorted(fresh) == sorted(committed), "run `python paper/make_tables.py`: the set of fragments changed"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"results changed: regenerate with `python paper/make_tables.py` ({stale})"


def test_make_tables_is_deterministic(tmp_path):
    first, second = make_tables.build().files(), make_tables.build().files()
    assert first == second


# ---------------------------------------------------------------- (b) no number is typed


def test_the_paper_types_no_number():
    found = typed_numbers(SOURCE.read_text(encoding="utf-8"))
    assert not found, "numbers typed in paper/hyperr1.tex (put them in a macro of make_tables.py): " + ", ".join(
        f"line {line}: {word!r}" for line, word in found
    )


@pytest.mark.parametrize(
    "snippet",
    [
        "the teacher reaches 0.897 on unseen pairs",
        "with 3 seeds",
        r"a difference of $+25.4$ points",
        r"\begin{equation} x = 0.5 y \end{equation}",
        r"\caption{Accuracy after 1500 steps}",
        "a lift of 12%",
        r"\textbf{42}",
        "R2-style",
    ],
)
def test_the_detector_catches_a_typed_number(snippet):
    assert typed_numbers(f"some text\n{snippet}\nmore text") != []
    assert typed_numbers(f"some text\n{snippet}\n")[0][0] == 2, "the finding names its line"


@pytest.mark.parametrize(
    "snippet",
    [
        r"\includegraphics[width=0.5\linewidth]{../figures/a1.pdf}",
        r"\label{fig:2} \ref{sec:3} \citep{nickel2017poincare} \citealp{shao2024deepseekmath}",
        "% 42 in a comment",
        r"\usepackage[margin=1in]{geometry} \documentclass[11pt]{article} \vspace{2mm} \begin{table}[t]",
        r"DeepSeek-R1 and R1's R1-style recipe, the k3 estimator, pass@1, \texttt{dog.n.01}",
        r"$\exp_0(v)$ and $1 - c\lVert x\rVert^2$ and \begin{gather} \frac{1}{2} \end{gather}",
        r"\parbox{0.9\linewidth}{text} \setlength{\tabcolsep}{4pt}",
        r"the teacher reaches \TeacherPairAcc{} on unseen pairs",
    ],
)
def test_the_detector_passes_names_layout_and_references(snippet):
    assert typed_numbers(snippet) == []


# ---------------------------------------------------------------- (c) macros: used = defined


def _defined_macros() -> set[str]:
    text = (GENERATED / "macros.tex").read_text(encoding="utf-8")
    return set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", text))


def test_every_macro_the_paper_uses_is_generated():
    source = SOURCE.read_text(encoding="utf-8")
    local = set(re.findall(r"\\(?:newcommand|renewcommand|DeclareMathOperator)\*?\{\\([A-Za-z]+)\}", source))
    fragments = "".join(p.read_text(encoding="utf-8") for p in GENERATED.glob("*.tex") if p.name != "macros.tex")
    used = {m for m in re.findall(r"\\(\\|[A-Za-z]+)", source + fragments) if m[0].isupper()} - BUILTINS - local
    missing = sorted(used - _defined_macros())
    assert not missing, f"macros used but not in paper/generated/macros.tex: {missing}"


def test_every_generated_macro_is_used():
    text = SOURCE.read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in GENERATED.glob("*.tex") if p.name != "macros.tex"
    )
    unused = sorted(m for m in _defined_macros() if not re.search(r"\\" + m + r"(?![A-Za-z])", text))
    assert not unused, f"stale macros in paper/generated/macros.tex (drop them from make_tables.py): {unused}"


def test_macro_names_are_letters_only():
    paper = make_tables.Paper()
    paper.macro("TeacherPairAcc", "0.897")
    for bad in ("Teacher2", "teacherAcc", "Teacher_Acc"):
        with pytest.raises(ValueError):
            paper.macro(bad, "1")
    with pytest.raises(ValueError):
        paper.macro("TeacherPairAcc", "0.9")


def test_every_fragment_the_paper_inputs_exists():
    names = re.findall(r"\\input\{generated/([A-Za-z_]+)\}", SOURCE.read_text(encoding="utf-8"))
    assert names and all((GENERATED / f"{n}.tex").exists() for n in names)


# ---------------------------------------------------------------- the generators on synthetic results


def _cell(value):
    return {"value": value, "ci": [value - 0.05, value + 0.05], "n": 100}


def _distill_row(setup, init, seed, student, teacher=0.8):
    splits = ("test_unseen_pair", "test_unseen_subject", "distill_seen", "distill_unseen")
    return {
        "setup": setup,
        "init": init,
        "seed": seed,
        "student_params": 27771,
        "teacher_params": 353065,
        "ratio": 27771 / 353065,
        "teacher": {s: _cell(teacher) for s in splits},
        "student": {s: _cell(student + (0.1 if s == "distill_seen" else 0.0)) for s in splits},
        "student_confidence": {"seen": 0.9, "unseen": 0.7},
    }


def test_distillation_tables_from_a_synthetic_file(tmp_path):
    runs = tmp_path / "distill" / "runs.jsonl"
    runs.parent.mkdir()
    rows = [_distill_row("word_kd", "logmap", s, v) for s, v in enumerate((0.4, 0.6))]
    rows.append(_distill_row("sft_only", "random", 0, 0.2))
    del rows[-1]["student"]["distill_seen"]  # the student's own runs have no distillation prompts
    rows.append(_distill_row("word_kd", "logmap", 0, 0.3) | {"size": "half", "student_params": 9000})
    runs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paper = make_tables.Paper()
    make_tables.distillation(paper, results=tmp_path)
    text = paper.fragments["distill"]
    assert "not yet available" not in text
    assert "tab:distill-retention" in text and "tab:distill-bias" in text
    word_kd = next(line for line in text.splitlines() if line.startswith(r"\texttt{word\_kd}"))  # retention row
    assert r"$0.500 \pm" in word_kd  # student accuracy: mean of 0.4 and 0.6
    assert "0.62" in word_kd  # retention 0.5 / 0.8, averaged over the runs
    assert text.index(r"\texttt{sft\_only}") < text.index(r"\texttt{word\_kd}")  # the setups' order
    assert "0.900" in text and "0.700" in text  # the student's confidence on seen and unseen queries
    assert "tab:distill-sizes" in text and "half & \\texttt{word\\_kd} & 9{,}000" in text
    assert word_kd.split(" & ")[2] == "2"  # the size sweep's run is not one of the setup's runs


def test_warm_start_selection_text_from_a_synthetic_file(tmp_path):
    """The restarts table bolds the chosen restart and the text counts the seeds where the lowest NLL
    was also the best monitor, names seeds without a restart record and seeds whose GKD run is missing."""
    runs = tmp_path / "distill_chain_hard_select" / "runs.jsonl"
    runs.parent.mkdir()
    tried = [
        {"restart": 0, "order_seed": 0, "gold_nll": 0.30, "monitor_held_out": 0.50},
        {"restart": 1, "order_seed": 1000, "gold_nll": 0.20, "monitor_held_out": 0.70},
    ]
    rows = [
        _distill_row("sft_only", "random", 0, 0.7) | {"warm_start_restarts": {"chosen": 1, "tried": tried}},
        _distill_row("sft_only", "random", 1, 0.6),
        _distill_row("student_grpo", "random", 0, 0.72),
        _distill_row("student_grpo", "random", 1, 0.62),
        _distill_row("sft_gkd_hard", "warm_start", 1, 0.66),
    ]
    runs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paper = make_tables.Paper()
    make_tables.distillation_select(paper, results=tmp_path)
    text = paper.fragments["distill_select_text"]
    assert r"\textbf{0.200}" in text and r"\textbf{0.700}" in text and r"\textbf{0.300}" not in text
    assert "on 1 of 1 seeds" in text  # restart 1 had the lowest NLL and the best monitor
    assert "seed 1 carry no per-restart record" in text
    assert "0.660 on seeds 1" in text and "run of seed 0 did not finish" in text
    assert "tab:distill-select" in paper.fragments["distill_chain_hard_select"]


def test_larger_student_text_says_what_ran(tmp_path):
    runs = tmp_path / "distill_chain_hard_select_d14" / "runs.jsonl"
    runs.parent.mkdir()
    rows = [_distill_row("sft_only", "random", 0, 0.7), _distill_row("student_grpo", "random", 0, 0.76)]
    runs.write_text("".join(json.dumps(r | {"student_params": 34453, "ratio": 0.0976}) + "\n" for r in rows))
    paper = make_tables.Paper()
    make_tables.distillation_select_d14(paper, results=tmp_path)
    text = paper.fragments["distill_select_d14_text"]
    assert "34,453 parameters, 9.8\\%" in text
    assert "GRPO on it 0.760 held-out on seed 0 (95.0\\% of the teacher)" in text
    assert "Not run yet: GKD from it." in text
    assert "same machine" not in text  # no 16x control on that machine yet
    control = tmp_path / "distill_chain_hard_select_avx512" / "runs.jsonl"
    control.parent.mkdir()
    control.write_text(json.dumps(_distill_row("sft_gkd_hard", "warm_start", 0, 0.72)) + "\n")
    paper = make_tables.Paper()
    make_tables.distillation_select_d14(paper, results=tmp_path)
    text = paper.fragments["distill_select_d14_text"]
    assert text.index("same machine") < text.index("GKD from it 0.720 held-out on seed 0 (90.0\\% of the teacher)")


def test_missing_results_say_so(tmp_path):
    paper = make_tables.Paper()
    make_tables.distillation(paper, results=tmp_path)
    make_tables.reflection_and_collapses(paper, results=tmp_path)
    make_tables.heads(paper, results=tmp_path)
    make_tables.figures(paper, root=tmp_path)
    for name, text in paper.fragments.items():
        assert "This result is not yet available" in text or name == "heads_limitation", name
    assert not paper.macros


def test_settled_head_sweep_takes_over_and_shows_per_hop(tmp_path):
    path = tmp_path / "heads" / "runs.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in _head_rows()))
    paper = make_tables.Paper()
    make_tables.heads(paper, results=tmp_path)
    assert "results/heads/runs.jsonl" in paper.fragments["heads_source"]
    assert "preliminary" not in paper.fragments["heads_source"]
    assert paper.macros["HeadsDiffLargest"] == r"\ensuremath{+20.0}"
    assert paper.macros["HeadsPoincareWins"] == "0"  # the only dimension is the smallest
    per_hop = paper.fragments["heads_per_hop"]
    assert "tab:heads-per-hop" in per_hop and "Poincaré & 16 & 0.81 & 0.71" in per_hop  # mean over seeds


def _head_rows(heads=("poincare", "euclidean"), seeds=range(3), dim=16):
    rows = []
    for head in heads:
        for seed in seeds:
            for phase in ("warm_start", "grpo"):
                acc = 0.5 if phase == "warm_start" else 0.5 + (0.3 if head == "poincare" else 0.1) + 0.01 * seed
                for split in make_tables.SPLITS:
                    rows.append(
                        {
                            "head": head,
                            "head_dim": dim,
                            "seed": seed,
                            "phase": phase,
                            "split": split,
                            "accuracy": acc,
                            "format": 1.0,
                            "per_hop": {"3": [acc, 100], "4": [acc - 0.1, 50]},
                        }
                    )
    return rows


def test_an_unfinished_settled_sweep_leaves_the_preliminary_one_in_place(tmp_path):
    for name, rows in (("heads", _head_rows(heads=("poincare",), seeds=[0])), ("mammals_heads", _head_rows())):
        (tmp_path / name).mkdir()
        (tmp_path / name / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paper = make_tables.Paper()
    make_tables.heads(paper, results=tmp_path)
    source = paper.fragments["heads_source"]
    assert "preliminary sweep" in source and "has finished 1 of its" in source
    assert "preliminary sweep" in paper.fragments["heads_limitation"]


def test_reflection_and_collapse_tables_from_the_sweep_files(tmp_path):
    (tmp_path / "heads").mkdir()
    reflection = {
        "poincare_d8": {"step": [10, 20], "seeds": [2, 2], "reflection_rate": [0.1, 0.3], "good_share": [None, 0.5]},
        "euclidean_d8": {"step": [], "seeds": [], "reflection_rate": [], "good_share": []},
    }
    collapses = {
        "summary": {
            "euclidean_d2": {
                "runs": 2,
                "runs_with_episode": 1,
                "episodes": 3,
                "steps_in_episode": 4,
                "triggers": {"kl_spike": 3},
            }
        },
        "episodes": {},
    }
    (tmp_path / "heads" / "reflection.json").write_text(json.dumps(reflection))
    (tmp_path / "heads" / "collapses.json").write_text(json.dumps(collapses))
    paper = make_tables.Paper()
    make_tables.reflection_and_collapses(paper, results=tmp_path)
    assert "Poincaré & 8 & 2 & 10--20 & 0.100 & 0.300 & 0.200 & 0.500" in paper.fragments["reflection"]
    assert "Euclidean & 8" not in paper.fragments["reflection"]  # no steps yet: no row
    assert r"Euclidean & 2 & 2 & 1 & 3 & 4 & kl\_spike: 3" in paper.fragments["collapses"]


def test_head_statistics_match_the_experiment_table():
    """The paired statistics are those of experiments/mammals_heads.py (its committed table.md)."""
    paper = make_tables.Paper()
    make_tables.heads(paper)
    if "preliminary" not in paper.fragments["heads_source"]:
        pytest.skip("the paper reads the settled sweep, not results/mammals_heads")
    md = (ROOT / "results" / "mammals_heads" / "table.md").read_text().split("\n\n")[1]
    fragment = paper.fragments["heads_paired"]
    for line in md.splitlines()[2:]:
        dim, seeds, mean, ci, p, _ = (c.strip() for c in line.strip("|").split("|"))
        assert f"{dim} & {seeds} & ${mean}$ & \\ensuremath{{{ci}}} & {p} &" in fragment


def test_generic_result_table_reads_rows_of_any_shape():
    rows = [{"head": "poincare", "rate": 0.25, "episodes": 3, "nested": {"x": 1}}, {"head": "euclidean", "rate": None}]
    for data in (rows, {"rows": rows}):
        text = make_tables.generic_table(data, "caption", "tab:x")
        assert "poincare & 0.250 & 3" in text and "euclidean & --- & ---" in text and "nested" not in text


def test_figure_slots_include_the_pdf_or_say_what_draws_it(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "heads.pdf").write_bytes(b"%PDF")
    (tmp_path / "figures" / "reflection.pdf").write_bytes(b"%PDF")
    paper = make_tables.Paper()
    make_tables.figures(paper, root=tmp_path)
    assert paper.fragments["fig_heads"].strip().endswith(r"{../figures/heads.pdf}")
    assert r"\begin{figure}" in paper.fragments["fig_reflection"]  # a figure that may be missing brings its float
    assert r"\label{fig:reflection}" in paper.fragments["fig_reflection"]
    assert "not yet available" in paper.fragments["fig_grpo_curves"] and r"\fbox" in paper.fragments["fig_grpo_curves"]
    assert "\\begin{figure}" not in paper.fragments["fig_distill_retention"]
