"""Concept hierarchies (is-a DAGs) over networkx: loading, synthetic trees, and queries.

A :class:`Hierarchy` holds a ``networkx.DiGraph`` whose edge ``(child, parent)`` reads "child IS-A
parent". The graph is always the transitive reduction (a redundant edge ``x -> z`` next to
``x -> y -> z`` is dropped on construction) and is frozen afterwards, so the ancestor, descendant
and depth tables cached lazily on first use stay valid. Multiple inheritance is allowed everywhere:
``lca`` may return several concepts and ``depth`` is the length of the shortest path to a root.

Sources: the shipped WordNet 3.0 mammal hierarchy (``load_hierarchy("mammals")``), any
``child<TAB>parent`` TSV file, a local WordNet dictionary directory, and synthetic trees.

TSV files are UTF-8 text: a leading byte-order mark is dropped, ``\n``, ``\r\n`` and ``\r`` all end a
line (as in Python's text mode), and a file that is not UTF-8 (UTF-16, Latin-1, binary) is a
:class:`HierarchyError` naming the file and line. Errors quote at most ``MAX_SHOWN`` characters
of a line or node name, so a multi-megabyte line is never echoed whole. How ``load_hierarchy``
tells a dataset name from a file path is in its docstring.
"""

from __future__ import annotations

import os
import random
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

import networkx as nx

from hyperr1.wordnet import WordNetError, read_noun_hypernyms

KNOWN_DATASETS: dict[str, str] = {"mammals": "mammals.tsv"}  # name -> file in hyperr1/data/
WORDNET_PREFIX = "wordnet:"  # load_hierarchy("wordnet:<synset>") reads a WordNet dict directory
DEBIAN_WORDNET_DIR = "/usr/share/wordnet"  # where Debian's wordnet-base package puts the dict files
MAX_SHOWN = 80  # characters of a line or node name quoted in an error message
_UTF8_BOM = "\ufeff"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class HierarchyError(ValueError):
    """Bad input to a hierarchy: unreadable file, malformed line, cycle, unknown node or name."""


def _shown(value: object) -> str:
    """``repr(value)``; a string longer than ``MAX_SHOWN`` is cut there, with its length appended."""
    if isinstance(value, str) and len(value) > MAX_SHOWN:
        return f"{value[:MAX_SHOWN]!r}... ({len(value):,} characters)"
    return repr(value)


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file, line ends removed, as text mode numbers them.

    Read as bytes and decoded line by line, so that a decoding error can name its line; ``\r\n``
    and a lone ``\r`` end lines as in Python's universal-newlines mode, and a UTF-8 byte-order
    mark at the start of the file is dropped (Windows editors write one; kept, it would glue
    ``\ufeff`` onto the first node's name).
    """
    lineno = 0
    with open(path, "rb") as f:
        for raw in f:  # split at b"\n" only; "\n" is never part of a multi-byte UTF-8 character
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                hint = "it looks like UTF-16" if lineno == 0 and raw.startswith(_UTF16_BOMS) else "Latin-1 or binary?"
                raise HierarchyError(
                    f"{path}:{lineno + 1}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of "
                    f"the line; {hint}); hierarchy files must be UTF-8"
                ) from None
            if lineno == 0 and text.startswith(_UTF8_BOM):
                text = text[len(_UTF8_BOM) :]
            pieces = text.removesuffix("\n").split("\r")  # "a\r" (CRLF or a final CR) leaves one "" piece
            if len(pieces) > 1 and pieces[-1] == "":
                pieces.pop()
            for line in pieces:
                lineno += 1
                if "\x00" in line:  # valid UTF-8, but what UTF-16 without a byte-order mark and binary files hold
                    raise HierarchyError(
                        f"{path}:{lineno}: NUL character at column {line.index(chr(0)) + 1} (a UTF-16 or binary "
                        f"file?); hierarchy files must be UTF-8 text"
                    )
                yield lineno, line


class Hierarchy:
    """An is-a DAG with cached ancestor/descendant sets and depths; all list results are sorted."""

    def __init__(self, graph: nx.DiGraph, name: str = "hierarchy"):
        self.name = name
        if graph.number_of_nodes() == 0:
            raise HierarchyError(f"empty hierarchy {name!r}: it has no nodes")
        if bad := [v for v in graph if not isinstance(v, str)]:
            raise HierarchyError(f"node names must be strings, got {_shown(bad[0])} in {name!r}")
        if loop := next(nx.selfloop_edges(graph), None):
            raise HierarchyError(f"self-loop in hierarchy {name!r}: {_shown(loop[0])} is its own parent")
        if not nx.is_directed_acyclic_graph(graph):
            cycle = [u for u, _ in nx.find_cycle(graph)]
            # the first 10 names, unquoted unless cut to MAX_SHOWN; then back to the start or "..."
            names = [v if len(v) <= MAX_SHOWN else _shown(v) for v in cycle[:10]]
            shown = " -> ".join(names + (names[:1] if len(cycle) <= 10 else [f"... ({len(cycle)} nodes in all)"]))
            raise HierarchyError(f"cycle in hierarchy {name!r}: {shown}")
        self.graph = nx.DiGraph(graph)  # own copy: frozen below, the caches rely on it
        self._ancestors: dict[str, frozenset[str]] = {}
        self._descendants: dict[str, frozenset[str]] = {}
        self._depth: dict[str, int] | None = None
        # Only a node with two or more parents can carry a redundant edge.
        redundant = []
        for x, parents in self.graph.succ.items():
            if len(parents) > 1:
                covered = set().union(*(self._ancestor_set(p) for p in parents))
                redundant += [(x, p) for p in parents if p in covered]
        self.graph.remove_edges_from(redundant)
        nx.freeze(self.graph)
        self.nodes: list[str] = sorted(self.graph)
        self.index: dict[str, int] = {v: i for i, v in enumerate(self.nodes)}
        self.roots: list[str] = [v for v in self.nodes if not self.graph.succ[v]]

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_edges(cls, edges: Iterable[tuple[str, str]], name: str = "hierarchy") -> Hierarchy:
        """Build from ``(child, parent)`` pairs."""
        return cls(nx.DiGraph(list(edges)), name=name)

    @classmethod
    def from_tsv(cls, path: str | Path, *, closure: bool = False, name: str | None = None) -> Hierarchy:
        """Read ``child<TAB>parent`` lines; ``#`` comment lines and blank lines are skipped.

        With ``closure=True`` the file holds a transitive closure (every ``(x, ancestor)`` pair, as
        in Nickel & Kiela's ``mammal_closure``): reflexive ``(x, x)`` pairs are ignored, the graph
        is reduced on load, and a file that is not actually closed is an error.
        """
        path = Path(path)
        if not path.is_file():
            raise HierarchyError(f"hierarchy file not found: {path}")
        edges = []
        for lineno, line in _text_lines(path):
            if not line.strip() or line.startswith("#"):
                continue
            cols = [c.strip() for c in line.split("\t")]
            if len(cols) != 2 or not all(cols):
                got = f"{len(cols)}" + ("" if all(cols) else ", some empty")
                raise HierarchyError(
                    f"{path}:{lineno}: expected 2 tab-separated columns (child, parent), got {got}: {_shown(line)}"
                )
            if not (closure and cols[0] == cols[1]):
                edges.append((cols[0], cols[1]))
        if not edges:
            raise HierarchyError(f"empty hierarchy: {path} has no (child, parent) lines")
        try:
            h = cls.from_edges(edges, name=path.stem if name is None else name)
        except HierarchyError as e:  # a self-loop or cycle: say which file holds it
            raise HierarchyError(f"{path}: {e}") from e
        if closure and (missing := sorted(set(h.closure_pairs()) - set(edges))):
            raise HierarchyError(
                f"{path} is not a transitive closure: {len(missing)} (node, ancestor) pairs are "
                f"missing, e.g. ({_shown(missing[0][0])}, {_shown(missing[0][1])})"
            )
        return h

    @classmethod
    def from_wordnet(
        cls,
        dict_dir: str | Path,
        root: str = "mammal.n.01",
        *,
        instances: bool = False,
        name: str | None = None,
    ) -> Hierarchy:
        """``root`` and every noun synset below it, from a WordNet 3.0 ``dict`` directory.

        Edges are hypernym pointers among those synsets (see :mod:`hyperr1.wordnet`); edges to
        parents outside the subtree are dropped. ``instances=True`` also follows instance
        hypernyms, which ``entity.n.01`` needs to cover all 82,115 noun synsets.
        """
        try:
            names, edges = read_noun_hypernyms(dict_dir, instances=instances)
        except WordNetError as e:
            raise HierarchyError(str(e)) from e
        graph = nx.DiGraph(edges)
        graph.add_nodes_from(names)
        if root not in graph:
            raise HierarchyError(f"unknown WordNet noun synset {root!r} in {dict_dir} (names look like 'dog.n.01')")
        below = nx.ancestors(graph, root)  # edges point child -> parent
        return cls(graph.subgraph(below | {root}), name=root if name is None else name)

    @classmethod
    def balanced_tree(cls, branching: int, depth: int) -> Hierarchy:
        """Complete ``branching``-ary tree of the given depth: root ``n0``, children ``n0.0``, ...

        It has ``(b**(h+1) - 1) / (b - 1)`` nodes and the leaves have depth ``h``.
        """
        if branching < 1 or depth < 0:
            raise HierarchyError(f"need branching >= 1 and depth >= 0, got {branching}, {depth}")
        graph, level = nx.DiGraph(), ["n0"]
        graph.add_node("n0")
        for _ in range(depth):
            level = [f"{p}.{i}" for p in level for i in range(branching)]
            graph.add_edges_from((c, c.rsplit(".", 1)[0]) for c in level)
        return cls(graph, name=f"balanced_tree(b={branching},h={depth})")

    @classmethod
    def random_tree(cls, num_nodes: int, *, seed: int = 0) -> Hierarchy:
        """Random recursive tree on ``n0 .. n{N-1}``: the parent of ``n{i}`` is uniform below ``i``.

        Deterministic for a given ``seed``; expected depth grows like ``ln N``.
        """
        if num_nodes < 1:
            raise HierarchyError(f"random_tree needs num_nodes >= 1, got {num_nodes}")
        rng = random.Random(seed)
        graph = nx.DiGraph()
        graph.add_node("n0")
        graph.add_edges_from((f"n{i}", f"n{rng.randrange(i)}") for i in range(1, num_nodes))
        return cls(graph, name=f"random_tree(n={num_nodes},seed={seed})")

    def to_tsv(self, path: str | Path, *, header: str | None = None) -> None:
        """Write the sorted ``child<TAB>parent`` edges, after ``header`` as ``#`` comment lines."""
        if isolated := [v for v in self.nodes if not self.graph.succ[v] and not self.graph.pred[v]]:
            raise HierarchyError(f"cannot write isolated nodes as edges to a TSV: {isolated[:5]}")
        with open(path, "w", encoding="utf-8") as f:
            for line in (header or "").splitlines():
                f.write(f"# {line}".rstrip() + "\n")
            f.writelines(f"{c}\t{p}\n" for c, p in self.edges)

    # ---------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, x: object) -> bool:
        return x in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return f"Hierarchy({self.name!r}, {len(self)} nodes, {len(self.edges)} edges, {len(self.roots)} roots)"

    @property
    def edges(self) -> list[tuple[str, str]]:
        """All ``(child, parent)`` edges, sorted."""
        return sorted(self.graph.edges)

    def _check(self, x: str) -> None:
        if x not in self.index:
            raise HierarchyError(f"unknown node {_shown(x)} in hierarchy {self.name!r}")

    def parents(self, x: str) -> list[str]:
        self._check(x)
        return sorted(self.graph.succ[x])

    def children(self, x: str) -> list[str]:
        self._check(x)
        return sorted(self.graph.pred[x])

    def _closure_set(self, x: str, up: bool) -> frozenset[str]:
        """Memoised strict ancestors (``up``) or descendants of ``x``.

        Iterative post-order (no recursion limit on deep chains); every node visited is cached.
        """
        cache = self._ancestors if up else self._descendants
        nbrs = self.graph.succ if up else self.graph.pred
        stack = [x]
        while stack:
            v = stack[-1]
            if v in cache:
                stack.pop()
                continue
            todo = [u for u in nbrs[v] if u not in cache]
            if todo:
                stack += todo
                continue
            cache[v] = frozenset(nbrs[v]).union(*(cache[u] for u in nbrs[v]))
            stack.pop()
        return cache[x]

    def _ancestor_set(self, x: str) -> frozenset[str]:
        return self._closure_set(x, up=True)

    def ancestors(self, x: str) -> set[str]:
        """Strict ancestors of ``x`` (every node reachable through parents)."""
        self._check(x)
        return set(self._ancestor_set(x))

    def descendants(self, x: str) -> set[str]:
        """Strict descendants of ``x``."""
        self._check(x)
        return set(self._closure_set(x, up=False))

    def depth(self, x: str) -> int:
        """Length of the shortest path from ``x`` up to a root (roots have depth 0)."""
        self._check(x)
        if self._depth is None:  # one multi-source BFS from the roots down gives every depth
            depth = dict.fromkeys(self.roots, 0)
            queue = deque(self.roots)
            while queue:
                v = queue.popleft()
                for c in self.graph.pred[v]:
                    if c not in depth:
                        depth[c] = depth[v] + 1
                        queue.append(c)
            self._depth = depth
        return self._depth[x]

    def is_a(self, x: str, y: str) -> bool:
        """Whether ``y`` is a strict ancestor of ``x``."""
        self._check(x)
        self._check(y)
        return y in self._ancestor_set(x)

    def lca(self, x: str, y: str) -> list[str]:
        """All lowest common ancestors of ``x`` and ``y`` (``x`` and ``y`` count as their own).

        A common ancestor is lowest if none of its descendants is also a common ancestor.
        """
        self._check(x)
        self._check(y)
        common = (self._ancestor_set(x) | {x}) & (self._ancestor_set(y) | {y})
        above = set().union(*(self._ancestor_set(c) for c in common))
        return sorted(common - above)

    def path_to_root(self, x: str) -> list[str]:
        """``[x, p1, ..., root]``: each step takes the sorted-first parent on a shortest path."""
        path = [x]
        while (d := self.depth(path[-1])) > 0:
            path.append(min(p for p in self.graph.succ[path[-1]] if self.depth(p) == d - 1))
        return path

    def closure_pairs(self) -> list[tuple[str, str]]:
        """Every ``(x, ancestor)`` pair with ``x != ancestor``, sorted."""
        return sorted((x, a) for x in self.nodes for a in self._ancestor_set(x))

    def transitive_reduction(self) -> Hierarchy:
        """A copy; the graph is already reduced on construction."""
        return Hierarchy(self.graph, name=self.name)

    def subtree(self, root: str) -> Hierarchy:
        """``root`` and all its descendants, with the edges among them."""
        self._check(root)
        keep = nx.ancestors(self.graph, root) | {root}  # edges point up; no memo for a one-off
        return Hierarchy(self.graph.subgraph(keep), name=f"{self.name}/{root}")


def load_hierarchy(
    name_or_path: str | Path, *, wordnet_dir: str | Path = DEBIAN_WORDNET_DIR, instances: bool = True
) -> Hierarchy:
    """A shipped dataset by name (see ``KNOWN_DATASETS``), a WordNet subtree, or a TSV file.

    The rule that tells them apart, so that none silently stands in for another:

    - a string ``"wordnet:<synset>"`` (e.g. ``"wordnet:entity.n.01"``) is that noun synset and
      every synset below it, read from the WordNet 3.0 dict directory ``wordnet_dir`` by
      :meth:`Hierarchy.from_wordnet`: through hyponyms and, with ``instances`` (the default),
      instance hyponyms (``wordnet:entity.n.01`` then covers all 82,115 noun synsets). The
      shipped ``mammals`` is ``wordnet:mammal.n.01`` with ``instances=False``; with instances
      it gains 12 synsets (11 racehorses and ``lucy.n.01``). A file named ``wordnet:x`` needs
      a separator (``"./wordnet:x"``);
    - a ``Path`` (any ``os.PathLike``), or a string holding a path separator (``"./mammals"``,
      ``"data/x.tsv"``), is a file path, always;
    - a bare string that names a shipped dataset loads the shipped dataset; when a file of that
      name also exists (relative to the working directory) a ``UserWarning`` says which one was
      used and how to load the other (``"./mammals"``);
    - any other bare string is a file path.
    """
    given = name_or_path
    if isinstance(given, str) and given.startswith(WORDNET_PREFIX):
        root = given.removeprefix(WORDNET_PREFIX)
        if not Path(wordnet_dir, "data.noun").is_file():
            raise HierarchyError(
                f"{given}: no WordNet 3.0 dictionary in {wordnet_dir} (data.noun missing); on Debian/Ubuntu "
                f"`apt-get install wordnet-base`, or pass the dict directory (wordnet_dir / --wordnet-dir)"
            )
        return Hierarchy.from_wordnet(wordnet_dir, root, instances=instances, name=given)
    if isinstance(given, str) and given in KNOWN_DATASETS and not _has_separator(given):
        if Path(given).is_file():
            warnings.warn(
                f"load_hierarchy({given!r}) loads the shipped dataset {given!r}, not the file {given!r} in "
                f"{os.getcwd()}; to load that file pass a path: load_hierarchy({os.path.join(os.curdir, given)!r})",
                UserWarning,
                stacklevel=2,
            )
        ref = resources.files("hyperr1").joinpath("data", KNOWN_DATASETS[given])
        with resources.as_file(ref) as path:
            return Hierarchy.from_tsv(path, name=given)
    if not isinstance(given, str) or _has_separator(given) or Path(given).is_file():
        return Hierarchy.from_tsv(given)
    raise HierarchyError(
        f"unknown hierarchy {_shown(given)}: not a file, and not one of the known datasets {sorted(KNOWN_DATASETS)} "
        f"or {WORDNET_PREFIX}<synset> (e.g. {WORDNET_PREFIX}mammal.n.01)"
    )


def _has_separator(s: str) -> bool:
    """Whether ``s`` holds a directory separator of this OS, i.e. reads as a path, not a name."""
    return os.sep in s or (os.altsep is not None and os.altsep in s)
