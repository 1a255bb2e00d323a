import json
import random
from dataclasses import replace

import pytest

from hyperr1.hierarchy import Hierarchy, load_hierarchy
from hyperr1.rewards import parse_completion
from hyperr1.splits import (
    ContaminationError,
    TasksConfig,
    audit_splits,
    build_splits,
    near_concepts,
    ngram_overlap,
    pair_keys,
    query_key,
    run_tasks,
)
from hyperr1.tasks import (
    NO,
    TASKS,
    WAIT,
    YES,
    HopCurriculum,
    TaskExample,
    bucket_by_hops,
    check_concepts,
    gold,
    kth_ancestors,
    make_example,
    path_between,
    render_prompt,
)

SMALL = TasksConfig(n_train_is_a=200, n_train_ancestor_k=100, n_train_lca=100, n_test=40)


def diamond_dag() -> Hierarchy:
    """root <- a, b; c has two parents (a, b); deeper nodes below c, a and b."""
    edges = [
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
    return Hierarchy.from_edges(edges, name="diamond")


@pytest.fixture(scope="module")
def tree_splits():
    h = Hierarchy.balanced_tree(3, 4)
    return h, *build_splits(h, SMALL)


def test_gold_on_a_tree():
    h = Hierarchy.balanced_tree(2, 3)
    chains, ans, answers = gold(h, "parent", ("n0.1.0",))
    assert chains == (("n0.1.0", "n0.1"),) and ans == "n0.1" and answers == ("n0.1",)
    chains, ans, _ = gold(h, "is_a", ("n0.1.0.1", "n0"))
    assert ans == YES and chains == (("n0.1.0.1", "n0.1.0", "n0.1", "n0"),)
    chains, ans, _ = gold(h, "is_a", ("n0.1.0.1", "n0.0"))
    assert ans == NO and chains == (tuple(h.path_to_root("n0.1.0.1")),)
    chains, ans, answers = gold(h, "ancestor_k", ("n0.1.0.1", "2"))
    assert ans == "n0.1" and answers == ("n0.1",) and len(chains[0]) == 3
    chains, ans, answers = gold(h, "lca", ("n0.1.0.1", "n0.1.1"))
    assert ans == "n0.1" and chains == (("n0.1.0.1", "n0.1.0", "n0.1"), ("n0.1.1", "n0.1"))
    for bad in [("parent", ("n0",)), ("ancestor_k", ("n0.1", "2")), ("lca", ("n0.1", "n0.1.0"))]:
        with pytest.raises(ValueError):
            gold(h, *bad)


def test_gold_with_multiple_inheritance():
    h = diamond_dag()
    assert gold(h, "parent", ("c",))[2] == ("a", "b")
    assert kth_ancestors(h, "m", 4) == ["a", "b"]
    _, ans, answers = gold(h, "ancestor_k", ("m", "4"))
    assert ans == "a" and answers == ("a", "b")
    assert path_between(h, "m", "b") == ["m", "h", "d", "c", "b"]
    assert path_between(h, "m", "r") == h.path_to_root("m")
    # lca of c's descendants l and j: a (via c) is lowest; b is not an ancestor of j
    chains, ans, answers = gold(h, "lca", ("l", "j"))
    assert answers == tuple(h.lca("l", "j")) and ans in answers
    assert {c[-1] for c in chains} == {ans}


def test_example_json_round_trip_and_prompt():
    h = Hierarchy.balanced_tree(2, 3)
    rng = random.Random(0)
    for task, args in [
        ("parent", ("n0.1",)),
        ("is_a", ("n0.1.0", "n0")),
        ("lca", ("n0.0", "n0.1")),
    ]:
        ex = make_example(h, task, args, retraction_rate=1.0, rng=rng)
        assert TaskExample.from_json(ex.to_json()) == ex
        assert TaskExample.from_json(json.loads(ex.to_json())) == ex
        assert ex.prompt == render_prompt(task, args) and ex.prompt.endswith("assistant :")
        assert ex.question in ex.prompt and ex.retraction and WAIT in ex.completion.split()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retraction_withdraws_a_wrong_step(seed):
    h = Hierarchy.random_tree(60, seed=seed)
    rng = random.Random(seed)
    x = max(h.nodes, key=h.depth)
    plain = make_example(h, "is_a", (x, h.roots[0]))
    ex = make_example(h, "is_a", (x, h.roots[0]), retraction_rate=1.0, rng=rng)
    p = parse_completion(ex.completion)
    assert p.chains == parse_completion(plain.completion).chains and ex.hops == plain.hops
    ((a, b, c),) = p.retractions
    assert not h.graph.has_edge(a, b) and h.graph.has_edge(a, c)


def test_check_concepts_rejects_untokenisable_names():
    check_concepts(Hierarchy.balanced_tree(2, 2))
    for bad, says in [("a b", "whitespace"), ("wait", "grammar"), (";", "grammar"), ("<answer>", "grammar")]:
        with pytest.raises(ValueError, match=says):
            check_concepts(Hierarchy.from_edges([(bad, "root")]))
    with pytest.raises(ValueError, match=r"6 concept\(s\).*'a 0'.*'a 4', …"):  # every offender counted
        check_concepts(Hierarchy.from_edges([(f"a {i}", "root") for i in range(6)]))


def test_splits_are_deterministic_and_seeded():
    h = Hierarchy.balanced_tree(3, 4)
    a, _ = build_splits(h, SMALL)
    b, _ = build_splits(h, SMALL)
    c, _ = build_splits(h, replace(SMALL, seed=1))
    assert a == b and a["test_unseen_pair"] != c["test_unseen_pair"]


def test_split_properties(tree_splits):
    h, splits, audit = tree_splits
    train, pair, subj = splits["train"], splits["test_unseen_pair"], splits["test_unseen_subject"]
    assert audit["passed"]
    assert {ex.args[0] for ex in train if ex.task == "parent"} == {v for v in h if h.parents(v)}
    for split in (pair, subj):
        assert min(ex.hops for ex in split) >= SMALL.min_test_hops
        assert {ex.task for ex in split} == {"is_a", "ancestor_k", "lca"}
    for split in (train, pair):
        is_a = [ex for ex in split if ex.task == "is_a"]
        assert sum(ex.answer == YES for ex in is_a) * 2 == len(is_a)  # balanced
    assert not {query_key(ex) for ex in pair + subj} & {query_key(ex) for ex in train}
    train_pairs = set().union(*(pair_keys(ex) for ex in train))
    assert not any(pair_keys(ex) & train_pairs for ex in pair)
    held = {ex.args[0] for ex in subj}
    assert not any(set(ex.args) & held for ex in train if ex.task != "parent")
    negatives = [ex for ex in train if ex.task == "is_a" and ex.answer == NO]
    hard = sum(ex.args[1] in near_concepts(h, ex.args[0]) for ex in negatives)
    assert 0.3 < hard / len(negatives) < 0.9  # near_frac = 0.5 of the draws
    retracted = sum(ex.retraction for ex in train) / len(train)
    assert 0.05 < retracted < 0.16 and not any(ex.retraction for ex in pair + subj)


def test_audit_raises_on_contamination(tree_splits):
    h, splits, _ = tree_splits
    leaked = dict(splits, train=splits["train"] + splits["test_unseen_pair"][:1])
    with pytest.raises(ContaminationError, match="queries in train"):
        audit_splits(leaked, h)
    ex = splits["test_unseen_subject"][0]
    x = ex.args[0]
    y = next(v for v in h.nodes if v != x and not h.is_a(x, v) and not h.is_a(v, x))
    subject_leak = dict(splits, train=splits["train"] + [make_example(h, "lca", (x, y))])
    with pytest.raises(ContaminationError, match="held-out subjects"):
        audit_splits(subject_leak, h)
    no_parent = dict(splits, train=[e for e in splits["train"] if e.args[0] != x])
    with pytest.raises(ContaminationError, match="parent facts"):
        audit_splits(no_parent, h)


def test_warm_start(tree_splits):
    _, splits, _ = tree_splits
    warm = splits["warm_start"]
    assert max(ex.hops for ex in warm) <= SMALL.warm_max_hops
    bare = [ex for ex in warm if not ex.completion.startswith("<think>")]
    assert len(bare) == round(SMALL.warm_no_think_frac * len(warm))
    assert all(ex.completion == f"<answer> {ex.answer} </answer>" for ex in bare)
    is_a = [ex for ex in warm if ex.task == "is_a"]
    assert sum(ex.answer == YES for ex in is_a) * 2 == len(is_a)


def test_ngram_overlap_known_values():
    got = ngram_overlap(["a b c d"], ["a b c e", "a b c d"], n=3)
    # train {abc, bcd}; test {abc, bce, bcd}
    assert got["jaccard"] == pytest.approx(2 / 3) and got["containment"] == pytest.approx(2 / 3)
    assert got["mean_question_containment"] == pytest.approx(0.75)
    assert got["questions_fully_contained"] == 1


def test_hop_curriculum():
    cur = HopCurriculum(max_hops=2, ceiling=4, threshold=0.8)
    assert not cur.update(0.79) and cur.max_hops == 2
    assert cur.update(0.8) and cur.max_hops == 3
    state = cur.state_dict()
    other = HopCurriculum()
    other.load_state_dict(state)
    assert other == cur
    assert cur.update(0.9) and not cur.update(1.0) and cur.max_hops == 4
    h = Hierarchy.balanced_tree(2, 4)
    exs = [make_example(h, "ancestor_k", ("n0.0.0.0.0", str(k))) for k in (1, 2, 3, 4)]
    assert list(bucket_by_hops(exs)) == [1, 2, 3, 4]
    auto = HopCurriculum.from_examples(exs, max_hops=1)
    assert auto.ceiling == 4 and auto.update(1.0) and auto.max_hops == 2
    assert [ex.hops for ex in HopCurriculum(max_hops=2).select(exs)] == [1, 2]


def test_run_tasks_on_a_tsv(tmp_path):
    tsv = tmp_path / "tree.tsv"
    edges = sorted(Hierarchy.random_tree(80, seed=3).graph.edges)
    tsv.write_text("# child<TAB>parent\n" + "".join(f"{c}\t{p}\n" for c, p in edges))
    cfg = replace(SMALL, data=str(tsv), out=str(tmp_path / "out"))
    result = run_tasks(cfg)
    out = tmp_path / "out"
    assert result["audit"]["passed"] and json.loads((out / "audit.json").read_text())["passed"]
    assert json.loads((out / "config.json").read_text())["config"]["data"] == str(tsv)
    for name, size in result["sizes"].items():
        lines = (out / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == size and TaskExample.from_json(lines[0]).task in TASKS
    assert "| train |" in (out / "summary.md").read_text()


def test_mammals_defaults_build_and_pass_the_audit(tmp_path):
    h = load_hierarchy("mammals")
    splits, audit = build_splits(h, TasksConfig())
    assert audit["passed"] and audit["parent_facts_taught"] == len(h) - len(h.roots)
    assert len(splits["test_unseen_pair"]) == len(splits["test_unseen_subject"]) == 900
    elephant = make_example(h, "parent", ("elephant.n.01",))  # the node with two parents
    assert len(elephant.answers) == 2
