import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hyperr1.hierarchy import Hierarchy
from hyperr1.rewards import (
    RewardWeights,
    accuracy_reward,
    chain_is_valid,
    composite_reward,
    format_reward,
    make_faithfulness_reward,
    parse_completion,
    tag_count_reward,
)
from hyperr1.splits import TasksConfig, build_splits
from hyperr1.tasks import GRAMMAR_TOKENS, make_example

CFG = TasksConfig(n_train_is_a=60, n_train_ancestor_k=30, n_train_lca=30, n_test=20, retraction_rate=0.5)
DIAMOND = [
    ("a", "r"),
    ("b", "r"),
    ("c", "a"),
    ("c", "b"),
    ("d", "c"),
    ("e", "c"),
    ("f", "a"),
    ("g", "b"),
    ("h", "d"),
    ("i", "d"),
    ("j", "f"),
    ("k", "g"),
    ("l", "e"),
    ("m", "h"),
]
HIERARCHIES = {
    "tree": Hierarchy.balanced_tree(3, 3),
    "random": Hierarchy.random_tree(70, seed=5),
    "dag": Hierarchy.from_edges(DIAMOND),
}


def all_rewards(h):
    return {
        "format": format_reward,
        "tag_count": tag_count_reward,
        "accuracy": accuracy_reward,
        "faithfulness": make_faithfulness_reward(h),
        "composite": composite_reward(RewardWeights(1, 1, 1, 1), h),
    }


@pytest.mark.parametrize("name", sorted(HIERARCHIES))
@pytest.mark.parametrize("suffix", ["", " </s>", "</s>\n", " </s> <pad> <pad>"])
def test_oracle_scores_one_on_every_reward(name, suffix):
    h = HIERARCHIES[name]
    splits, _ = build_splits(h, CFG)
    exs = splits["train"] + splits["test_unseen_pair"] + splits["test_unseen_subject"]
    assert {ex.task for ex in exs} == {"parent", "is_a", "ancestor_k", "lca"}
    assert any(ex.retraction for ex in exs)
    cols = {"answers": [list(ex.answers) for ex in exs], "task": [ex.task for ex in exs]}
    for completions in (
        [ex.completion + suffix for ex in exs],
        [[{"role": "assistant", "content": ex.completion + suffix}] for ex in exs],
    ):
        for rname, fn in all_rewards(h).items():
            assert set(fn(completions, **cols)) == {1.0}, rname
    for ex in exs:
        assert chain_is_valid(parse_completion(ex.completion), ex.task, ex.args, h)


def test_checker_accepts_any_valid_path():
    h = HIERARCHIES["dag"]
    ex = make_example(h, "is_a", ("m", "r"))  # canonical climbs through a; b is as valid
    other = "<think> m -> h -> d -> c -> b -> r </think> <answer> yes </answer>"
    assert other != ex.completion
    faith = make_faithfulness_reward(h)
    assert accuracy_reward([other], answers=[ex.answers]) == faith([other]) == [1.0]
    assert chain_is_valid(parse_completion(other), "is_a", ex.args, h)
    k4 = make_example(h, "ancestor_k", ("m", "4"))
    alt = "<think> m -> h -> d -> c -> b </think> <answer> b </answer>"
    assert accuracy_reward([alt], answers=[k4.answers]) == [1.0]
    assert chain_is_valid(parse_completion(alt), "ancestor_k", k4.args, h)
    lca = make_example(h, "lca", ("l", "j"))
    swapped = "<think> j -> f -> a ; l -> e -> c -> a </think> <answer> a </answer>"
    assert chain_is_valid(parse_completion(swapped), "lca", lca.args, h)


@pytest.mark.parametrize(
    "text",
    [
        "<answer> x </answer>",  # no think block
        "<think> </think> <answer> x </answer>",  # empty chain
        "<think> a -> b </think> <answer> x </answer> extra",
        "<think> a -> b </think> <answer> x y </answer>",
        "<think> a wait b </think> <answer> b </answer>",  # nothing to withdraw
        "<think> a -> -> b </think> <answer> b </answer>",
        "<think> a -> b ; </think> <answer> b </answer>",
        "<think> <think> a -> b </think> </think> <answer> b </answer>",
        "<think> a -> yes </think> <answer> yes </answer>",
        "<think> a -> b </think> <answer> -> </answer>",
        "<think>a -> b</think> <answer> b </answer>",  # tokens are whitespace separated
        "<s> <think> a -> b </think> <answer> b </answer> </s> trailing",
    ],
)
def test_format_rejects(text):
    assert format_reward([text]) == [0.0]


def test_format_accepts_grammar_variants():
    ok = [
        "<think> a -> b </think> <answer> b </answer>",
        "  <think> a -> b wait c -> d ; e -> d </think> <answer> d </answer></s>",
        "<think> a </think> <answer> no </answer>",  # a chain may have no step
        "<s> <think> a -> b wait c wait d </think>\n<answer> d </answer> </s>",
    ]
    assert format_reward(ok) == [1.0] * len(ok)


def test_tag_count_partial_credit():
    texts = ["", "<answer> yes </answer>", "<think> <think> </think> <answer> x </answer>"]
    assert tag_count_reward(texts) == [0.0, 0.5, 0.75]


def test_accuracy_columns_and_parsing():
    comps = ["<think> a -> b </think> <answer> b </answer>", "<answer> b c </answer>", "b"]
    assert accuracy_reward(comps, answer=["b", "b", "b"]) == [1.0, 0.0, 0.0]
    assert accuracy_reward(comps[:1], answers=[json.dumps(["a", "b"])]) == [1.0]
    assert accuracy_reward(["<answer> x </answer> <answer> b </answer>"], answer=["b"]) == [0.0]
    with pytest.raises(ValueError):
        accuracy_reward(comps)
    with pytest.raises(ValueError):
        accuracy_reward(comps, answer=["b"])


def test_faithfulness_applies_retractions():
    h = Hierarchy.balanced_tree(2, 3)
    faith = make_faithfulness_reward(h)
    good = "<think> n0.1.0.1 -> n0.0 wait n0.1.0 -> n0.1 -> n0 </think> <answer> yes </answer>"
    assert faith([good]) == [1.0]
    half = "<think> n0.1.0.1 -> n0.1.0 -> n0.0 -> n0 </think> <answer> yes </answer>"
    assert faith([half]) == [pytest.approx(2 / 3)]
    assert faith(["<answer> yes </answer>", "", "<think> n0 </think>"]) == [0.0, 0.0, 0.0]
    p = parse_completion(good)
    assert p.retractions == (("n0.1.0.1", "n0.0", "n0.1.0"),) and p.n_wait == 1


def test_composite_weights():
    h = Hierarchy.balanced_tree(2, 2)
    text = ["<answer> n0 </answer>"]  # right answer, bad format
    assert composite_reward()(text, answer=["n0"]) == [0.5]  # R1: (accuracy + format) / 2
    assert composite_reward({"accuracy": 3, "format": 1})(text, answer=["n0"]) == [0.75]
    assert composite_reward({"format": 1, "accuracy": 0})(text) == [0.0]
    assert composite_reward().__name__ == "composite_reward"
    with pytest.raises(ValueError):
        composite_reward({"faithfulness": 1.0})
    with pytest.raises(ValueError):
        composite_reward({"accuracy": 0, "format": 0})
    assert composite_reward({"faithfulness": 1.0}, h)(text) == [0.0]


_TOKENS = [*GRAMMAR_TOKENS, "</s>", "<s>", "<pad>", "<unk>", "n0", "n0.1", "n0.1.0", "", "é", "🦒"]
_SOUP = st.lists(st.sampled_from(_TOKENS), max_size=60).map(" ".join)
_NESTED = st.recursive(
    st.sampled_from(["n0", "n0.1", "yes", "", "->"]),
    lambda inner: st.builds(
        lambda t, a, b: f"<{t}> {a} </{t}> {b}", st.sampled_from(["think", "answer"]), inner, inner
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), _SOUP, _NESTED, _SOUP.map(lambda s: s * 60)))
@example("")
@example("<think> " + "n0 -> " * 2000 + "n0.1 </think> <answer> yes </answer>")
@example("<answer>" * 5000)
@example("__import__('os').system('false')")
def test_every_reward_is_defined_in_unit_interval(text):
    h = HIERARCHIES["tree"]
    for completions in ([text], [[{"role": "assistant", "content": text}]], [None], [42]):
        for fn in all_rewards(h).values():
            (r,) = fn(completions, answers=[["n0", "yes"]])
            assert isinstance(r, float) and 0.0 <= r <= 1.0
