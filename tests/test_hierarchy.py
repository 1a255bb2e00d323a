"""Tests for hyperr1.hierarchy and hyperr1.wordnet: shipped data, trees, DAG queries, errors."""

import warnings
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hyperr1.hierarchy import KNOWN_DATASETS, MAX_SHOWN, Hierarchy, HierarchyError, load_hierarchy

WORDNET_DIR = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (WORDNET_DIR / "data.noun").is_file(), reason="WordNet 3.0 dict dir not installed"
)

# A diamond with a second child: d and e both have parents b and c, which share the root a.
# The edge d -> a is redundant (d -> b -> a) and must be dropped on construction.
DIAMOND = [("b", "a"), ("c", "a"), ("d", "b"), ("d", "c"), ("e", "b"), ("e", "c"), ("d", "a")]


@pytest.fixture(scope="module")
def mammals() -> Hierarchy:
    return load_hierarchy("mammals")


@pytest.fixture
def diamond() -> Hierarchy:
    return Hierarchy.from_edges(DIAMOND, name="diamond")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ shipped WordNet mammals


def test_shipped_mammals_counts(mammals):
    assert mammals.name == "mammals"
    assert len(mammals) == 1170
    assert len(mammals.edges) == 1170  # a tree plus one second parent (elephant.n.01)
    assert len(mammals.closure_pairs()) == 6448  # strict pairs; 7618 with (x, x)
    assert mammals.roots == ["mammal.n.01"]
    assert mammals.nodes == sorted(mammals.nodes)
    assert all(mammals.nodes[mammals.index[v]] == v for v in mammals)


def test_known_mammal_facts(mammals):
    assert mammals.is_a("dog.n.01", "carnivore.n.01")
    assert mammals.is_a("dog.n.01", "mammal.n.01")
    assert not mammals.is_a("carnivore.n.01", "dog.n.01")
    assert not mammals.is_a("dog.n.01", "dog.n.01")
    assert mammals.parents("dog.n.01") == ["canine.n.02"]
    assert mammals.lca("dog.n.01", "domestic_cat.n.01") == ["carnivore.n.01"]
    assert mammals.path_to_root("beagle.n.01") == [
        "beagle.n.01", "hound.n.01", "hunting_dog.n.01", "dog.n.01",
        "canine.n.02", "carnivore.n.01", "placental.n.01", "mammal.n.01",
    ]  # fmt: skip
    assert mammals.depth("beagle.n.01") == 7
    assert mammals.parents("elephant.n.01") == ["pachyderm.n.01", "proboscidean.n.01"]
    assert "beagle.n.01" in mammals and "unicorn.n.01" not in mammals


def test_mammal_queries_agree_with_networkx(mammals):
    g = mammals.graph
    for x in mammals:
        assert mammals.ancestors(x) == nx.descendants(g, x)  # edges point child -> parent
        assert mammals.descendants(x) == nx.ancestors(g, x)
        assert mammals.depth(x) == nx.shortest_path_length(g, x, "mammal.n.01")
        assert mammals.children(x) == sorted(g.predecessors(x))


def test_graph_is_frozen(mammals):
    with pytest.raises(nx.NetworkXError):
        mammals.graph.add_edge("unicorn.n.01", "mammal.n.01")


# ------------------------------------------------------------------ synthetic trees


@pytest.mark.parametrize("b,h", [(1, 0), (1, 4), (2, 0), (2, 3), (3, 4), (5, 2)])
def test_balanced_tree(b, h):
    t = Hierarchy.balanced_tree(b, h)
    expected = h + 1 if b == 1 else (b ** (h + 1) - 1) // (b - 1)
    assert len(t) == expected
    assert t.roots == ["n0"] and t.nodes[0] == "n0"
    for x in t:
        assert t.depth(x) == x.count(".")
        assert len(t.children(x)) == (b if t.depth(x) < h else 0)
    assert max(t.depth(x) for x in t) == h


def test_random_tree_is_deterministic_tree():
    a, b = Hierarchy.random_tree(60, seed=3), Hierarchy.random_tree(60, seed=3)
    assert a.edges == b.edges
    assert a.edges != Hierarchy.random_tree(60, seed=4).edges
    assert len(a) == 60 and len(a.edges) == 59 and a.roots == ["n0"]
    assert all(len(a.parents(x)) == 1 for x in a if x != "n0")
    assert len(Hierarchy.random_tree(1)) == 1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 80), seed=st.integers(0, 10_000), data=st.data())
def test_lca_and_path_properties(n, seed, data):
    t = Hierarchy.random_tree(n, seed=seed)
    x = data.draw(st.sampled_from(t.nodes))
    y = data.draw(st.sampled_from(t.nodes))
    assert t.lca(x, x) == [x]
    assert t.lca(x, y) == t.lca(y, x)
    for a in t.ancestors(x):
        assert t.lca(x, a) == [a]
        assert x in t.descendants(a)
    up_x, up_y = t.ancestors(x) | {x}, t.ancestors(y) | {y}
    (z,) = t.lca(x, y)  # a tree has exactly one
    assert z in up_x and z in up_y
    assert not any(c in up_x and c in up_y for c in t.children(z))  # lowest
    path = t.path_to_root(x)
    assert len(path) == t.depth(x) + 1 and path[-1] == "n0"
    assert all(q in t.parents(p) for p, q in zip(path[:-1], path[1:], strict=True))


# ------------------------------------------------------------------ multiple inheritance


def test_diamond(diamond):
    assert ("d", "a") not in diamond.edges  # redundant edge dropped
    assert diamond.parents("d") == ["b", "c"]
    assert diamond.ancestors("d") == {"a", "b", "c"}
    assert diamond.descendants("a") == {"b", "c", "d", "e"}
    assert diamond.depth("d") == 2
    assert diamond.lca("d", "e") == ["b", "c"]
    assert diamond.lca("b", "c") == ["a"]
    assert diamond.lca("d", "b") == ["b"]
    assert diamond.path_to_root("d") == ["d", "b", "a"]
    assert diamond.closure_pairs() == [
        ("b", "a"), ("c", "a"), ("d", "a"), ("d", "b"), ("d", "c"),
        ("e", "a"), ("e", "b"), ("e", "c"),
    ]  # fmt: skip
    assert diamond.subtree("b").nodes == ["b", "d", "e"]
    assert diamond.transitive_reduction().edges == diamond.edges


def test_lca_in_forest_without_common_ancestor():
    f = Hierarchy.from_edges([("x", "r1"), ("y", "r2")])
    assert f.roots == ["r1", "r2"] and f.lca("x", "y") == []


def test_depth_is_shortest_path():
    h = Hierarchy.from_edges([("x", "a"), ("a", "b"), ("b", "r"), ("x", "c"), ("c", "r")])
    assert h.depth("x") == 2 and h.path_to_root("x") == ["x", "c", "r"]


# ------------------------------------------------------------------ TSV round trips


@pytest.mark.parametrize("self_pairs", [False, True])
def test_closure_tsv_reduces_to_original_edges(tmp_path, mammals, diamond, self_pairs):
    for h in (mammals, diamond):
        pairs = h.closure_pairs() + ([(x, x) for x in h] if self_pairs else [])
        path = write(tmp_path / f"{h.name}_closure.tsv", "".join(f"{c}\t{p}\n" for c, p in pairs))
        reduced = Hierarchy.from_tsv(path, closure=True)
        assert reduced.edges == h.edges
        assert reduced.closure_pairs() == h.closure_pairs()


def test_closure_flag_rejects_non_closed_file(tmp_path):
    path = write(tmp_path / "c.tsv", "x\ty\ny\tz\n")
    with pytest.raises(HierarchyError, match="not a transitive closure.*'x', 'z'"):
        Hierarchy.from_tsv(path, closure=True)


def test_to_tsv_round_trip(tmp_path, mammals):
    for h in (mammals, Hierarchy.random_tree(50, seed=1), Hierarchy.balanced_tree(3, 3)):
        path = tmp_path / "h.tsv"
        h.to_tsv(path, header="a header\nover two lines")
        assert path.read_text().startswith("# a header\n# over two lines\n")
        back = Hierarchy.from_tsv(path, name=h.name)
        assert back.edges == h.edges and back.nodes == h.nodes
    assert load_hierarchy(str(path)).edges == h.edges
    with pytest.raises(HierarchyError, match="isolated"):
        Hierarchy.random_tree(1).to_tsv(tmp_path / "one.tsv")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "fail",
    [
        lambda tmp: load_hierarchy("birds"),
        lambda tmp: Hierarchy.from_tsv(write(tmp / "bad.tsv", "x\ty\tz\n")),
        lambda tmp: Hierarchy.from_tsv(tmp / "missing.tsv"),
        lambda tmp: Hierarchy.from_edges([("a", "b"), ("b", "a")]),
        lambda tmp: Hierarchy.balanced_tree(3, 2).parents("unicorn"),
        lambda tmp: Hierarchy.random_tree(0),
        lambda tmp: Hierarchy.from_wordnet(tmp),  # a WordNetError inside, re-raised as a HierarchyError
        lambda tmp: Hierarchy(nx.DiGraph([(1, 2)])),
    ],
    ids=["unknown name", "bad line", "missing file", "cycle", "unknown node", "bad size", "wordnet", "non-str"],
)
def test_every_failure_is_a_hierarchy_error_and_a_value_error(tmp_path, fail):
    with pytest.raises(ValueError) as e:  # what a caller that knows nothing of hyperr1 catches
        fail(tmp_path)
    assert type(e.value) is HierarchyError and str(e.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tsv"
    with pytest.raises(HierarchyError, match="not found") as e:
        Hierarchy.from_tsv(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("bad", ["a\tb\tc", "lonely", "a\t", "a b"])
def test_wrong_column_count(tmp_path, bad):
    path = write(tmp_path / "bad.tsv", f"# comment\nx\ty\n{bad}\n")
    with pytest.raises(HierarchyError, match="2 tab-separated columns") as e:
        Hierarchy.from_tsv(path)
    assert f"{path}:3" in str(e.value) and repr(bad) in str(e.value)


def test_self_loop(tmp_path):
    path = write(tmp_path / "loop.tsv", "x\ty\ny\ty\n")
    with pytest.raises(HierarchyError, match="self-loop.*'y'") as e:
        Hierarchy.from_tsv(path)
    assert str(path) in str(e.value)


def test_cycle(tmp_path):
    path = write(tmp_path / "cycle.tsv", "x\ta\na\tb\nb\tc\nc\ta\n")
    with pytest.raises(HierarchyError, match="cycle") as e:
        Hierarchy.from_tsv(path)
    message = str(e.value)
    assert str(path) in message
    assert all(f"{v} ->" in message for v in "abc") and "x ->" not in message


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_empty_file(tmp_path, text):
    path = write(tmp_path / "empty.tsv", text)
    with pytest.raises(HierarchyError, match="empty") as e:
        Hierarchy.from_tsv(path)
    assert str(path) in str(e.value)


def test_empty_graph():
    with pytest.raises(HierarchyError, match="empty"):
        Hierarchy(nx.DiGraph())


# ------------------------------------------------------------------ text encodings and names


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    tree = Hierarchy.balanced_tree(3, 4)  # 121 nodes, root n0
    for header in (None, "a comment"):
        path = tmp_path / "tree.tsv"
        tree.to_tsv(path, header=header)
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Windows editors save "UTF-8"
        h = Hierarchy.from_tsv(path)
        assert len(h) == 121 and h.roots == ["n0"] and h.edges == tree.edges


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_every_line_ending_reads_alike(tmp_path, ending):
    path = tmp_path / "h.tsv"
    path.write_bytes(ending.join(["# c", "x\ty", "", "y\tz", "z\tr", ""]).encode())
    assert Hierarchy.from_tsv(path).edges == [("x", "y"), ("y", "z"), ("z", "r")]
    path.write_bytes(ending.join(["x\ty", "y\tz", "bad"]).encode())
    with pytest.raises(HierarchyError, match=f"{path}:3: expected 2"):
        Hierarchy.from_tsv(path)


@pytest.mark.parametrize(
    "data,line,what",
    [
        ("x\ty\ny\tz\n".encode("utf-16"), 1, "UTF-16"),  # with its byte-order mark
        ("x\ty\ny\tz\n".encode("utf-16-le"), 1, "NUL"),  # without one: valid UTF-8, full of NULs
        ("x\ty\ny\tz\ncafé\tz\n".encode("latin-1"), 3, "not UTF-8"),
        (b"x\ty\n\x00\x01\x02\x03\tz\n", 2, "NUL"),
        (bytes(range(255, -1, -1)), 1, "not UTF-8"),
    ],
    ids=["utf-16", "utf-16-le", "latin-1", "binary", "all bytes"],
)
def test_non_utf8_file_names_file_and_line(tmp_path, data, line, what):
    path = tmp_path / "h.tsv"
    path.write_bytes(data)
    with pytest.raises(HierarchyError, match=what) as e:
        Hierarchy.from_tsv(path)
    assert f"{path}:{line}:" in str(e.value) and "UTF-8" in str(e.value)


def test_a_huge_line_is_not_echoed_whole(tmp_path):
    line = "x" * 3_000_000 + "\ty\tz"  # 3 columns
    path = write(tmp_path / "big.tsv", f"a\tb\n{line}\n")
    with pytest.raises(HierarchyError, match="2 tab-separated columns") as e:
        Hierarchy.from_tsv(path)
    message = str(e.value)
    assert f"{path}:2" in message and "x" * MAX_SHOWN in message and "3,000,004 characters" in message
    assert len(message) < len(str(path)) + 3 * MAX_SHOWN
    loop = "y" * 3_000_000
    with pytest.raises(HierarchyError, match="self-loop") as e:
        Hierarchy.from_tsv(write(tmp_path / "loop.tsv", f"{loop}\t{loop}\n"))
    assert len(str(e.value)) < len(str(tmp_path)) + 3 * MAX_SHOWN


def test_a_local_file_named_like_a_dataset_is_never_silently_shadowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "mammals", "cat\tanimal\ndog\tanimal\n")
    with pytest.warns(UserWarning, match=r"shipped dataset 'mammals'.*load_hierarchy\('\./mammals'\)"):
        shipped = load_hierarchy("mammals")  # the name: the shipped dataset, said out loud
    assert len(shipped) == 1170
    for as_path in ("./mammals", Path("mammals"), tmp_path / "mammals"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            local = load_hierarchy(as_path)  # a path: the file, silently
        assert local.nodes == ["animal", "cat", "dog"]
    (tmp_path / "mammals").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_hierarchy("mammals")) == 1170  # no local file, nothing to warn about
    with pytest.raises(HierarchyError, match="not found"):
        load_hierarchy(Path("mammals"))  # a path never falls back to the dataset


_TSV_PIECES = ["a", "b", "c", "\t", "\n", "\r", " ", "#", "\ufeff", "é", "\x00", "\u2028", "x" * 200]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8")),
        st.lists(st.sampled_from(_TSV_PIECES), max_size=40).map(lambda p: "".join(p).encode("utf-8")),
        st.tuples(st.text(max_size=60), st.sampled_from(["utf-16", "utf-16-be", "latin-1", "utf-8-sig"])).map(
            lambda t: t[0].encode(t[1], errors="replace")
        ),
    ),
    st.booleans(),
)
@example(b"\xef\xbb\xbfa\tb\n", False)
@example(b"a\ta\n", True)
@example(b"\xff\xfea\x00", False)
def test_reading_any_bytes_gives_a_hierarchy_or_a_hierarchy_error(tmp_path_factory, data, closure):
    path = tmp_path_factory.mktemp("fuzz") / "h.tsv"
    path.write_bytes(data)
    try:
        h = Hierarchy.from_tsv(path, closure=closure)
    except HierarchyError as e:  # names the file; bounded, however long the lines (up to 8,000 here)
        assert str(path) in str(e) and len(str(e)) < len(str(path)) + 2000
        return
    for v in h:  # what a TSV line can spell: non-empty, trimmed names without tabs, line ends or NULs
        assert v and v == v.strip() and not any(c in v for c in "\t\n\r\x00")
    assert nx.is_directed_acyclic_graph(h.graph)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(HierarchyError, match="unknown hierarchy 'birds'") as e:
        load_hierarchy("birds")
    assert all(name in str(e.value) for name in KNOWN_DATASETS)


@pytest.mark.parametrize(
    "query", ["parents", "children", "ancestors", "descendants", "depth", "path_to_root", "subtree"]
)
def test_unknown_node(mammals, query):
    with pytest.raises(HierarchyError, match="unknown node 'unicorn.n.01' in hierarchy 'mammals'"):
        getattr(mammals, query)("unicorn.n.01")


def test_unknown_node_in_pair_queries(mammals):
    for query in (mammals.is_a, mammals.lca):
        with pytest.raises(HierarchyError, match="unknown node 'unicorn.n.01'"):
            query("dog.n.01", "unicorn.n.01")


@pytest.mark.parametrize("args", [(0, 2), (2, -1)])
def test_bad_tree_sizes(args):
    with pytest.raises(HierarchyError):
        Hierarchy.balanced_tree(*args)
    with pytest.raises(HierarchyError):
        Hierarchy.random_tree(0)


def test_from_wordnet_non_utf8_dict_names_the_file_and_line(tmp_path):
    (tmp_path / "index.noun").write_text("dog n 1 0 1 0 02084071\n", encoding="ascii")
    (tmp_path / "data.noun").write_bytes(b"  licence header\n02084071 05 n 01 dog 0 000 | a caf\xe9 dog\n")
    with pytest.raises(HierarchyError, match="not UTF-8") as e:
        Hierarchy.from_wordnet(tmp_path, "dog.n.01")
    assert f"{tmp_path / 'data.noun'}:2:" in str(e.value)


def test_from_wordnet_missing_dir_names_the_file(tmp_path):
    with pytest.raises(HierarchyError, match="not found") as e:
        Hierarchy.from_wordnet(tmp_path)
    assert str(tmp_path) in str(e.value)


# ------------------------------------------------------------------ WordNet 3.0 dict dir


@needs_wordnet
def test_synset_names_match_nltk():
    from hyperr1.wordnet import read_noun_synsets, read_sense_offsets, synset_names

    names = synset_names(read_noun_synsets(WORDNET_DIR), read_sense_offsets(WORDNET_DIR))
    # offsets as nltk reports them, e.g. wn.synset("dog.n.01").offset() == 2084071
    assert names["02084071"] == "dog.n.01"
    assert names["01861778"] == "mammal.n.01"
    assert names["02075296"] == "carnivore.n.01"
    assert names["02083346"] == "canine.n.02"
    assert names["02088364"] == "beagle.n.01"
    assert names["01886756"] == "placental.n.01"
    assert len(names) == len(set(names.values())) == 82115


@needs_wordnet
def test_from_wordnet_regenerates_shipped_mammals(mammals):
    h = Hierarchy.from_wordnet(WORDNET_DIR, "mammal.n.01")
    assert h.edges == mammals.edges and h.nodes == mammals.nodes
    with_instances = Hierarchy.from_wordnet(WORDNET_DIR, "mammal.n.01", instances=True)
    assert len(with_instances) == 1182 and len(with_instances.closure_pairs()) == 6542
    assert with_instances.is_a("secretariat.n.02", "horse.n.01")


@needs_wordnet
def test_from_wordnet_entity_covers_all_nouns():
    h = Hierarchy.from_wordnet(WORDNET_DIR, "entity.n.01", instances=True)
    assert len(h) == 82115 and h.roots == ["entity.n.01"]
    assert h.lca("dog.n.01", "oak.n.02") == ["organism.n.01"]  # oak.n.01 is the wood
    assert h.lca("dog.n.01", "oak.n.01") == ["physical_entity.n.01"]
    assert h.depth("dog.n.01") == 8  # nltk's min_depth(): via domestic_animal.n.01, not canine
    assert h.path_to_root("dog.n.01")[1] == "domestic_animal.n.01"


@needs_wordnet
def test_from_wordnet_unknown_root():
    with pytest.raises(HierarchyError, match="unknown WordNet noun synset 'unicorn.n.07'"):
        Hierarchy.from_wordnet(WORDNET_DIR, "unicorn.n.07")
