"""The README's "Use the layers in your own model" snippets, run exactly as they stand.

Each ```python block of that section runs in a fresh namespace, in an empty working directory; the
third loads ``runs/quick_poincare/policy``, which the test writes first (an untrained tiny policy
and the mammals tokenizer, saved the way a run saves its policy). ``make wheel-check`` runs this
file against the installed wheel from outside the checkout, so a file missing from the wheel fails.
"""

import os
import re
from importlib import resources
from pathlib import Path

import geoopt
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use the layers in your own model"
MAX_LINES = 25


def readme_snippets(text: str) -> list[str]:
    """The ```python blocks of the README section, in order."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def run_snippet(index: int) -> dict:
    """Run snippet ``index`` (0-based) as a script; its global namespace afterwards."""
    code = readme_snippets(README.read_text(encoding="utf-8"))[index]
    namespace = {"__name__": "__main__"}
    exec(compile(code, f"README.md snippet {index + 1}", "exec"), namespace)
    return namespace


def write_demo_policy(path: Path) -> None:
    """An untrained policy (width 32, 1 + 1 layers) with the mammals tokenizer, as a run saves it."""
    from hyperr1.hierarchy import load_hierarchy
    from hyperr1.model import build_policy
    from hyperr1.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(load_hierarchy("mammals"))
    small = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64)
    build_policy(len(tokenizer), head_dim=4, **small).save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_the_section_has_three_short_snippets():
    snippets = readme_snippets(README.read_text(encoding="utf-8"))
    assert len(snippets) == 3
    for code in snippets:
        assert len(code.strip().splitlines()) <= MAX_LINES


def test_classification_head_learns_and_keeps_its_prototypes_on_the_ball(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = run_snippet(0)
    head = ns["model"][-1]
    assert isinstance(head.prototypes, geoopt.ManifoldParameter)
    head.prototypes.manifold.assert_check_point_on_manifold(head.prototypes.detach())
    majority = torch.bincount(ns["y_test"]).max().item() / len(ns["y_test"])
    assert ns["accuracy"] > max(0.8, majority + 0.3)
    assert "test accuracy" in capsys.readouterr().out


def test_embedding_of_a_users_tsv_reconstructs_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = run_snippet(1)
    assert (tmp_path / "pets.tsv").is_file()
    metrics = ns["result"]["metrics"]
    assert metrics["map"] >= 0.95 and metrics["num_nodes"] == 8
    norm = dict(zip(ns["result"]["nodes"], ns["result"]["embedding"].norm(dim=-1).tolist(), strict=True))
    assert norm["animal"] < norm["mammal"] < min(norm["beagle"], norm["poodle"]) < 1  # depth shows as norm
    assert "MAP" in capsys.readouterr().out


def test_a_saved_policy_loads_through_the_auto_classes_and_answers(tmp_path, monkeypatch, capsys):
    write_demo_policy(tmp_path / "runs" / "quick_poincare" / "policy")
    monkeypatch.chdir(tmp_path)
    ns = run_snippet(2)
    assert type(ns["model"]).__name__ == "HyperR1ForConditionalGeneration"
    assert ns["model"].config.head == "poincare"
    prompt_ids = ns["tok"](ns["prompt"])["input_ids"]
    assert ns["tok"].unk_token_id not in prompt_ids  # every prompt word is in the vocabulary
    assert 1 < ns["out"].shape[1] <= 1 + 48
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed and printed[-1].strip()  # an untrained policy answers nonsense, but it answers


def test_the_package_carries_its_data_kernel_source_and_type_marker():
    """What an installed hyperr1 needs besides its modules (the wheel's package data)."""
    root = resources.files("hyperr1")
    for name in ("data/mammals.tsv", "data/WORDNET_LICENSE", "native/distance_kernels.c", "py.typed"):
        assert root.joinpath(name).is_file(), name


@pytest.mark.skipif(not os.environ.get("HYPERR1_WHEEL_CHECK"), reason="only under make wheel-check")
def test_hyperr1_is_the_installed_wheel_not_the_checkout():
    import hyperr1

    assert "site-packages" in Path(hyperr1.__file__).parts


def test_the_result_tables_are_the_results_files():
    """Every README table block equals the results file it names (scripts/readme_tables.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_tables", README.parent / "scripts" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = README.read_text(encoding="utf-8")
    assert mod.BLOCK.search(text), "the README has no generated result table"
    assert mod.render(text) == text, "a README table is stale: run python scripts/readme_tables.py"
    typed = "<!-- table: results/embeddings/table.md -->\n| typed |\n<!-- /table -->"
    assert mod.render(typed) != typed
