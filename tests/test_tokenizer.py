import pytest
from transformers import AutoTokenizer

from hyperr1.hierarchy import Hierarchy, load_hierarchy
from hyperr1.splits import TasksConfig, build_splits
from hyperr1.tasks import GRAMMAR_TOKENS, template_words
from hyperr1.tokenizer import (
    SPECIAL_TOKENS,
    build_tokenizer,
    build_vocab,
    concept_mask,
    concept_token_ids,
    load_tokenizer,
)


@pytest.fixture(scope="module")
def tree():
    return Hierarchy.balanced_tree(3, 3)


def test_vocab_layout_is_deterministic(tree):
    vocab = build_vocab(tree)
    assert vocab == build_vocab(Hierarchy.balanced_tree(3, 3))
    order = sorted(vocab, key=vocab.get)
    n_fixed = len(SPECIAL_TOKENS) + len(GRAMMAR_TOKENS) + len(template_words())
    assert order[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert order[4 : 4 + len(GRAMMAR_TOKENS)] == list(GRAMMAR_TOKENS)
    assert order[n_fixed:] == tree.nodes and len(vocab) == n_fixed + len(tree)
    tok = build_tokenizer(tree)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert concept_token_ids(tok, tree) == list(range(n_fixed, len(vocab)))
    assert int(concept_mask(tok, tree).sum()) == len(tree) and len(tok) == len(vocab)


def test_every_task_text_is_one_known_token_per_word(tree):
    tok = build_tokenizer(tree)
    splits, _ = build_splits(tree, TasksConfig(n_train_is_a=40, n_train_ancestor_k=20, n_train_lca=20, n_test=10))
    for ex in splits["train"] + splits["warm_start"]:
        for text in (ex.prompt, ex.completion + " </s>"):
            ids = tok(text)["input_ids"]
            assert len(ids) == len(text.split()) and tok.unk_token_id not in ids
            assert tok.decode(ids) == text


@pytest.mark.parametrize("text", ["", "zebra.n.99 -> ???", "ünïcödé 🦒 <think>x", "  \n\t "])
def test_unknown_words_map_to_unk(tree, text):
    tok = build_tokenizer(tree)
    ids = tok(text)["input_ids"]
    assert all(isinstance(i, int) and 0 <= i < len(tok) for i in ids)
    if text.startswith("zebra"):
        assert ids == [tok.unk_token_id, tok.convert_tokens_to_ids("->"), tok.unk_token_id]


def test_save_and_load_round_trip(tree, tmp_path):
    tok = build_tokenizer(tree)
    tok.save_pretrained(tmp_path)
    for loaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert loaded.get_vocab() == tok.get_vocab()
        assert loaded.all_special_tokens == tok.all_special_tokens
        assert loaded.all_special_ids == tok.all_special_ids
        assert (loaded.pad_token, loaded.bos_token, loaded.eos_token, loaded.unk_token) == (
            "<pad>",
            "<s>",
            "</s>",
            "<unk>",
        )
        text = " ".join(tok.get_vocab()) + " never.seen"
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
        assert concept_token_ids(loaded, tree) == concept_token_ids(tok, tree)


def test_concept_names_that_clash():
    h = Hierarchy.from_edges([("is", "root"), ("x", "root")])  # "is" is also a template word
    tok = build_tokenizer(h)
    assert concept_token_ids(tok, h)[h.index["is"]] == tok.convert_tokens_to_ids("is")
    with pytest.raises(ValueError):
        build_tokenizer(Hierarchy.from_edges([("</s>", "root")]))
    with pytest.raises(ValueError):
        concept_token_ids(tok, Hierarchy.from_edges([("unseen", "root")]))


def test_mammals_vocabulary():
    h = load_hierarchy("mammals")
    tok = build_tokenizer(h)
    ids = concept_token_ids(tok, h)
    assert len(set(ids)) == len(h) and tok.convert_ids_to_tokens(ids) == h.nodes
    assert tok("is dog.n.01 a kind of mammal.n.01 ?")["input_ids"].count(tok.unk_token_id) == 0
