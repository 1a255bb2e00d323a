"""Write a WordNet noun hierarchy as a sorted ``child<TAB>parent`` TSV.

    python scripts/make_wordnet_hierarchy.py --dict-dir /usr/share/wordnet \
        --root mammal.n.01 --out hyperr1/data/mammals.tsv

The shipped ``hyperr1/data/mammals.tsv`` is made by exactly that command from WordNet 3.0 (Debian's
``wordnet-base`` package installs the dictionary in ``/usr/share/wordnet``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hyperr1.hierarchy import Hierarchy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dict-dir", required=True, help="WordNet 3.0 dict dir (data.noun, ...)")
    parser.add_argument("--root", default="mammal.n.01", help="root synset, nltk-style name")
    parser.add_argument("--out", required=True, type=Path, help="TSV file to write")
    parser.add_argument("--instances", action="store_true", help="also follow instance hypernyms (@i)")
    args = parser.parse_args(argv)

    h = Hierarchy.from_wordnet(args.dict_dir, args.root, instances=args.instances)
    closure = len(h.closure_pairs())
    command = (
        f"python scripts/make_wordnet_hierarchy.py --dict-dir {args.dict_dir} "
        f"--root {args.root} --out {args.out}" + (" --instances" if args.instances else "")
    )
    header = "\n".join(
        [
            f"WordNet 3.0 noun hierarchy below {args.root} (Princeton University; licence in",
            "WORDNET_LICENSE). One line per hypernym edge: child<TAB>parent (child IS-A parent).",
            "Hypernym pointers: "
            + ("@ and @i (instance)" if args.instances else "@ only")
            + "; synset names as in nltk.",
            f"root: {args.root}",
            f"nodes: {len(h)}",
            f"edges: {len(h.edges)}",
            f"closure pairs: {closure} without self pairs, {closure + len(h)} with them",
            f"command: {command}",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    h.to_tsv(args.out, header=header)
    print(f"wrote {args.out}: {len(h)} nodes, {len(h.edges)} edges, {closure} closure pairs")


if __name__ == "__main__":
    main()
