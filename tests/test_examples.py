"""Every script in examples/ end to end at a tiny budget, as a user runs it (a fresh process)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.slow


def run_example(name: str, *args: str, cwd: Path, expect: int = 0) -> str:
    """stdout of ``python examples/<name> args`` run in ``cwd``; fails unless it exits with ``expect``."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr if expect else proc.stdout


def number_after(label: str, text: str) -> float:
    """The number printed after ``label`` (any run of spaces matching each space of it)."""
    pattern = r"\s+".join(map(re.escape, label.split()))
    return float(re.search(rf"{pattern}\s+([0-9.]+)", text).group(1))


def test_every_example_is_tested():
    tested = set(re.findall(r'run_example\(\s*"(\w+\.py)"', Path(__file__).read_text()))
    assert tested == {p.name for p in EXAMPLES.glob("*.py")}


def test_subtree_classifier_reports_both_accuracies(tmp_path):
    out = run_example("subtree_classifier.py", "--tiny", cwd=tmp_path)
    assert "9 subtrees of placental.n.01" in out
    for label in ("majority class", "hyperbolic MLR", "Euclidean MLR"):
        assert 0 <= number_after(f"{label} test accuracy", out) <= 1


def test_subtree_classifier_on_the_shipped_results_favours_the_hyperbolic_head(tmp_path):
    """On the committed 2-d Poincaré embedding of the mammals, hyperbolic MLR separates the
    subtrees better than a linear classifier on the same coordinates (Ganea et al. 2018, sec. 4)."""
    saved = ROOT / "results" / "embeddings" / "poincare_d2" / "embedding.safetensors"
    if not saved.is_file():
        pytest.skip("no committed 2-d embedding in results/")
    out = run_example("subtree_classifier.py", "--embedding", str(saved), cwd=tmp_path)
    hyperbolic = number_after("hyperbolic MLR test accuracy", out)
    assert hyperbolic > number_after("majority class test accuracy", out) + 0.3
    assert hyperbolic > number_after("Euclidean MLR test accuracy", out)


def test_embed_tsv_embeds_a_users_file_saves_and_reloads_it(tmp_path):
    tsv = tmp_path / "tools.tsv"
    tsv.write_text("# tools\nhammer\ttool\nsaw\ttool\nclaw_hammer\thammer\nhacksaw\tsaw\nfretsaw\tsaw\n")
    out = run_example("embed_tsv.py", str(tsv), "--dim", "2", "--out", "tools.safetensors", cwd=tmp_path)
    assert "6 concepts, 8 (concept, ancestor) pairs" in out
    assert number_after("MAP", out) >= 0.9
    assert number_after("reloaded: MAP", out) == number_after("MAP", out)
    assert (tmp_path / "tools.safetensors").is_file()


def test_embed_tsv_tiny_runs_on_its_built_in_example(tmp_path):
    out = run_example("embed_tsv.py", "--tiny", cwd=tmp_path)
    assert "built-in example: 14 concepts" in out and "nearest the centre" in out


def test_embed_tsv_names_the_bad_line_of_a_malformed_file(tmp_path):
    (tmp_path / "bad.tsv").write_text("a\tb\nc d\n")
    err = run_example("embed_tsv.py", "bad.tsv", "--tiny", cwd=tmp_path, expect=2)
    assert "bad.tsv:2" in err and "2 tab-separated columns" in err


def test_ask_policy_loads_a_policy_asks_and_grades(tmp_path):
    out = run_example("ask_policy.py", "--demo", "parent", "beagle.n.01", "--max-new-tokens", "8", cwd=tmp_path)
    assert "question:   what is the parent of beagle.n.01 ?" in out
    assert "gold:       <think> beagle.n.01 -> hound.n.01 </think> <answer> hound.n.01 </answer>" in out
    policy_line = next(line for line in out.splitlines() if line.startswith("policy:"))
    assert 1 <= len(policy_line.split()[1:]) <= 8
    assert re.search(r"format [01], accuracy [01], faithfulness [0-9.]+", out)


def test_ask_policy_rejects_a_question_without_an_answer(tmp_path):
    err = run_example("ask_policy.py", "--demo", "parent", "mammal.n.01", cwd=tmp_path, expect=2)
    assert "is a root" in err
