"""Read the noun hypernym graph straight from a WordNet 3.0 dictionary directory.

Only two files are needed, both in Princeton's plain-text database format (``wndb(5WN)``):

- ``index.noun``: ``lemma pos synset_cnt p_cnt [ptr_symbol ...] sense_cnt tagsense_cnt offset ...``;
  the position of a synset's offset in its lemma's offset list is that lemma's sense number.
- ``data.noun``: ``offset lex_filenum ss_type w_cnt word lex_id ... p_cnt [ptr ...] | gloss``,
  ``w_cnt`` in hexadecimal, ``p_cnt`` in decimal, each pointer ``symbol offset pos source/target``.

Synsets are named as nltk names them, ``<first lemma, lowercased>.n.<sense number:02d>`` (for
example ``dog.n.01``), so names match those of Nickel & Kiela (2017) and of nltk's WordNet reader.
Edges are regular hypernyms (pointer symbol ``@``), as in nltk's ``synset.hypernyms()``; instance
hypernyms (``@i``, e.g. ``secretariat.n.02`` is an instance of ``racehorse.n.01``) are added only on
request. No nltk is needed.
"""

from __future__ import annotations

from pathlib import Path

HYPERNYM, INSTANCE_HYPERNYM = "@", "@i"


class WordNetError(ValueError):
    """A WordNet dictionary directory that is missing a file or holds malformed lines."""


def _dict_file(dict_dir: str | Path, name: str) -> Path:
    path = Path(dict_dir) / name
    if not path.is_file():
        raise WordNetError(f"WordNet file not found: {path} (expected a WordNet 3.0 dict dir)")
    return path


def _data_lines(path: Path):
    """Yield ``(line_number, line)`` for data lines; the licence header lines start with a space.

    Read as bytes and decoded line by line, so that a file that is not UTF-8 text (WordNet's are
    ASCII) is a :class:`WordNetError` naming its line rather than a bare ``UnicodeDecodeError``.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise WordNetError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line); "
                    f"expected a WordNet 3.0 dict file"
                ) from None
            if line.strip() and not line.startswith(" "):
                yield lineno, line


def read_sense_offsets(dict_dir: str | Path) -> dict[str, list[str]]:
    """Map each noun lemma (lowercase) to its synset offsets in sense order, from ``index.noun``."""
    path = _dict_file(dict_dir, "index.noun")
    senses: dict[str, list[str]] = {}
    for lineno, line in _data_lines(path):
        fields = line.split()
        try:
            synset_cnt = int(fields[2])
            senses[fields[0]] = fields[len(fields) - synset_cnt :]
        except (IndexError, ValueError) as e:
            raise WordNetError(f"{path}:{lineno}: malformed index line: {line.rstrip()[:120]!r}") from e
    return senses


def read_noun_synsets(dict_dir: str | Path, *, instances: bool = False) -> dict[str, tuple[str, list[str]]]:
    """Parse ``data.noun`` into ``{offset: (first lemma, [hypernym offsets])}``.

    Hypernyms are the ``@`` pointers, plus the ``@i`` (instance hypernym) ones if ``instances``.
    """
    symbols = {HYPERNYM, INSTANCE_HYPERNYM} if instances else {HYPERNYM}
    path = _dict_file(dict_dir, "data.noun")
    synsets: dict[str, tuple[str, list[str]]] = {}
    for lineno, line in _data_lines(path):
        fields = line.split(" | ", 1)[0].split()
        try:
            offset, w_cnt = fields[0], int(fields[3], 16)
            lemma = fields[4]
            i = 4 + 2 * w_cnt  # p_cnt follows the (word, lex_id) pairs
            p_cnt = int(fields[i])
            pointers = [fields[i + 1 + 4 * k : i + 5 + 4 * k] for k in range(p_cnt)]
            hypernyms = [p[1] for p in pointers if p[0] in symbols and p[2] == "n"]
        except (IndexError, ValueError) as e:
            raise WordNetError(f"{path}:{lineno}: malformed data line: {line[:120]!r}") from e
        synsets[offset] = (lemma, hypernyms)
    return synsets


def synset_names(synsets: dict[str, tuple[str, list[str]]], senses: dict[str, list[str]]) -> dict[str, str]:
    """Name every synset offset nltk-style: ``lemma.n.NN`` with NN the 1-based sense number."""
    names = {}
    for offset, (lemma, _) in synsets.items():
        lemma = lemma.lower()
        try:
            sense = senses[lemma].index(offset) + 1
        except (KeyError, ValueError) as e:
            raise WordNetError(f"synset {offset} ({lemma}) is missing from index.noun") from e
        names[offset] = f"{lemma}.n.{sense:02d}"
    return names


def read_noun_hypernyms(dict_dir: str | Path, *, instances: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """All noun synset names (sorted) and all ``(child, parent)`` hypernym edges (sorted).

    ``dict_dir`` is a WordNet 3.0 ``dict`` directory, e.g. ``/usr/share/wordnet`` on Debian.
    WordNet 3.0 has 82,115 noun synsets; all of them lie below ``entity.n.01`` only when instance
    hypernyms are included (``instances=True``), otherwise the 7,741 instance-only synsets
    (people, places, racehorses, ...) have no parent.
    """
    synsets = read_noun_synsets(dict_dir, instances=instances)
    names = synset_names(synsets, read_sense_offsets(dict_dir))
    edges = sorted((names[offset], names[parent]) for offset, (_, parents) in synsets.items() for parent in parents)
    return sorted(names.values()), edges
