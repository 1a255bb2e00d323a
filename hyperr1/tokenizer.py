"""Word-level tokenizer for the hierarchy tasks: one token per concept, grammar or template word.

Built with the ``tokenizers`` library (``WordLevel`` model, ``WhitespaceSplit`` pre-tokenizer) and
wrapped as ``transformers.PreTrainedTokenizerFast``, so it saves and loads with
``save_pretrained`` / ``from_pretrained`` (or :func:`load_tokenizer`) like any Hugging Face
tokenizer. The vocabulary is deterministic for a given hierarchy, in this order::

    specials (<pad> <s> </s> <unk>) | grammar tokens | template words | concepts, sorted

so ids 0..3 are ``pad, bos, eos, unk``. A concept that is also a template word keeps the template
word's id. Any unknown word maps to ``<unk>``; encoding never raises. The tokenizer adds no
special tokens by itself: callers append ``</s>`` to targets (and ``<s>`` if the model wants it).
:func:`concept_token_ids` gives the ids of the concepts in ``hierarchy.nodes`` order, which the
model uses to give each concept its point on the Poincaré ball.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hyperr1.hierarchy import Hierarchy
from hyperr1.tasks import GRAMMAR_TOKENS, check_concepts, template_words

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def build_vocab(hierarchy: Hierarchy) -> dict[str, int]:
    """Token -> id: specials, grammar tokens, template words, then the sorted concepts."""
    check_concepts(hierarchy)
    if clash := sorted(set(hierarchy.nodes) & set(SPECIAL_TOKENS)):
        raise ValueError(f"concepts {clash} of {hierarchy.name!r} collide with special tokens")
    vocab: dict[str, int] = {}
    for tok in (*SPECIAL_TOKENS, *GRAMMAR_TOKENS, *template_words(), *hierarchy.nodes):
        vocab.setdefault(tok, len(vocab))
    return vocab


def build_tokenizer(hierarchy: Hierarchy, *, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """The word-level ``PreTrainedTokenizerFast`` of a hierarchy's tasks."""
    core = Tokenizer(models.WordLevel(vocab=build_vocab(hierarchy), unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="right",
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer written by ``save_pretrained`` (local files only, no hub)."""
    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)


def concept_token_ids(tokenizer: PreTrainedTokenizerFast, hierarchy: Hierarchy) -> list[int]:
    """Token id of every concept, aligned with ``hierarchy.nodes``; raises if one is missing."""
    vocab = tokenizer.get_vocab()
    if missing := [v for v in hierarchy.nodes if v not in vocab]:
        raise ValueError(f"{len(missing)} concepts are not in the vocabulary, e.g. {missing[:3]}")
    return [vocab[v] for v in hierarchy.nodes]


def concept_mask(tokenizer: PreTrainedTokenizerFast, hierarchy: Hierarchy) -> torch.Tensor:
    """Boolean mask of shape (V,) that is True at the concept token ids."""
    mask = torch.zeros(len(tokenizer), dtype=torch.bool)  # (V,)
    mask[concept_token_ids(tokenizer, hierarchy)] = True
    return mask
