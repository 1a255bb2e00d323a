"""Regenerate the README's result tables from the files in ``results/`` (never typed by hand).

A table block in the README is delimited by two comment lines::

    <!-- table: results/heads/table.md -->
    ... (replaced by the file's contents) ...
    <!-- /table -->

    python scripts/readme_tables.py           # rewrite README.md in place
    python scripts/readme_tables.py --check   # exit 1 if a block differs from its file
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def render(readme: str, root: Path = ROOT) -> str:
    """``readme`` with every table block replaced by the current contents of its file."""

    def fill(match: re.Match) -> str:
        path = root / match["path"]
        if not path.is_file():
            raise FileNotFoundError(f"README table block names {match['path']}, which does not exist")
        return match.group(1) + path.read_text(encoding="utf-8").rstrip("\n") + "\n" + match.group(4)

    return BLOCK.sub(fill, readme)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 when a block is stale")
    args = p.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            sys.exit("README.md: a result table differs from its file; run python scripts/readme_tables.py")
        return
    readme.write_text(new, encoding="utf-8")
    print(f"README.md: {len(BLOCK.findall(text))} table block(s) regenerated")


if __name__ == "__main__":
    main()
