"""The error taxonomy of experiments/diagnose.py on hand-written completions over a small tree."""

import importlib.util
import sys
from pathlib import Path

import pytest

from hyperr1.hierarchy import Hierarchy
from hyperr1.tasks import make_example

_spec = importlib.util.spec_from_file_location("diagnose", Path(__file__).parents[1] / "experiments" / "diagnose.py")
diagnose = importlib.util.module_from_spec(_spec)
sys.modules["diagnose"] = diagnose  # its dataclasses resolve their annotations through sys.modules
_spec.loader.exec_module(diagnose)

H = Hierarchy.balanced_tree(3, 3)  # n0 → n0.i → n0.i.j → n0.i.j.k


def think(*chains: str, answer: str) -> str:
    return f"<think> {' ; '.join(chains)} </think> <answer> {answer} </answer>"


ANC = make_example(H, "ancestor_k", ("n0.0.0.0", "2"))  # gold: n0.0.0.0 -> n0.0.0 -> n0.0
IS_A_YES = make_example(H, "is_a", ("n0.1.2.0", "n0"))
IS_A_NO = make_example(H, "is_a", ("n0.1.2.0", "n0.2"))
LCA = make_example(H, "lca", ("n0.0.1.0", "n0.0.2.1"))  # lca n0.0


@pytest.mark.parametrize(
    ("ex", "text", "category"),
    [
        (ANC, ANC.completion, "correct"),
        (IS_A_YES, IS_A_YES.completion, "correct"),
        (IS_A_NO, IS_A_NO.completion, "correct"),
        (LCA, LCA.completion, "correct"),
        (ANC, "<answer> n0.0 </answer>", "format failure"),
        (ANC, think("n0.0.0.0 -> n0.0", answer="n0.0"), "right answer, invalid chain"),
        (ANC, think("n0.1.0.0 -> n0.1.0 -> n0.1", answer="n0.1"), "wrong chain structure"),
        (ANC, think("n0.0.0.0 -> n0.0.0 -> n0.1", answer="n0.1"), "wrong step"),
        (ANC, think("n0.0.0.0 -> n0.0.0 -> n0.0", answer="n0"), "right chain, wrong answer"),
        (ANC, think("n0.0.0.0 -> n0.0.0", answer="n0.0.0"), "stops early"),
        (ANC, think("n0.0.0.0 -> n0.0.0 -> n0.0 -> n0", answer="n0"), "overshoots"),
        (IS_A_YES, think("n0.1.2.0 -> n0.1.2", answer="no"), "stops early"),
        (IS_A_NO, think("n0.1.2.0 -> n0.1.2 -> n0.1", answer="yes"), "stops early"),
        (LCA, think("n0.0.1.0 -> n0.0.1 -> n0.0 -> n0", "n0.0.2.1 -> n0.0.2 -> n0.0 -> n0", answer="n0"), "overshoots"),
        (LCA, think("n0.0.1.0 -> n0.0.1", "n0.0.2.1 -> n0.0.2", answer="n0.0.1"), "stops early"),
    ],
)
def test_classify(ex, text, category):
    got = diagnose.classify(ex, text, H)
    assert got["category"] == category
    assert got["correct"] == (text.split()[-2] in ex.answers and "<answer>" in text)


def test_wrong_step_reports_its_hop_and_kind():
    got = diagnose.classify(ANC, think("n0.0.0.0 -> n0.0.0 -> n0.1", answer="n0.1"), H)
    assert (got["chain"], got["hop"], got["node"], got["claimed"]) == (0, 2, "n0.0.0", "n0.1")
    assert got["wrong_kind"] == "off the hierarchy path"
    skip = diagnose.classify(ANC, think("n0.0.0.0 -> n0 -> n0", answer="n0"), H)
    assert (skip["hop"], skip["wrong_kind"]) == (1, "skips up (an ancestor, not the parent)")


def test_every_category_is_listed_and_model_output_is_only_parsed():
    texts = ["", "import os", "<think> </think>", "__import__('os').system('true')", ANC.completion * 3]
    for t in texts:
        assert diagnose.classify(ANC, t, H)["category"] in diagnose.CATEGORIES


def test_teacher_config_is_the_shipped_one_with_its_documented_changes():
    from dataclasses import asdict

    from hyperr1.pipeline import load_train_config

    teacher = asdict(load_train_config("experiments/configs/mammals_teacher.toml"))
    shipped = asdict(
        load_train_config(
            "experiments/configs/mammals_poincare.toml",
            ["name=mammals_teacher", "tasks.warm_max_hops=15", "sft.epochs=20", "grpo.lr=2e-4"],
        )
    )
    assert teacher == shipped
