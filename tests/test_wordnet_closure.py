"""``wordnet:<synset>`` hierarchies read from Debian's WordNet 3.0 (skipped where it is not installed)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperr1.cli import main
from hyperr1.embeddings import EmbedConfig, load_dataset, load_embedding
from hyperr1.hierarchy import DEBIAN_WORDNET_DIR, HierarchyError, load_hierarchy

pytestmark = pytest.mark.skipif(
    not Path(DEBIAN_WORDNET_DIR, "data.noun").is_file(),
    reason="WordNet 3.0 not installed (apt-get install wordnet-base)",
)

INSTANCES_BELOW_MAMMAL = {  # reached from mammal.n.01 only through instance hyponyms (@i)
    "affirmed.n.01", "assault.n.03", "citation.n.06", "count_fleet.n.01", "gallant_fox.n.01", "lucy.n.01",
    "omaha.n.04", "seattle_slew.n.01", "secretariat.n.02", "sir_barton.n.01", "war_admiral.n.01", "whirlaway.n.01",
}  # fmt: skip


def test_wordnet_mammal_without_instances_is_the_shipped_mammals_exactly():
    shipped = load_hierarchy("mammals")
    h = load_hierarchy("wordnet:mammal.n.01", instances=False)
    assert h.nodes == shipped.nodes and h.edges == shipped.edges
    assert len(h) == 1170 and len(h.closure_pairs()) == 6448


def test_wordnet_mammal_with_instances_adds_exactly_the_instance_synsets():
    shipped = load_hierarchy("mammals")
    h = load_hierarchy("wordnet:mammal.n.01")  # instances=True is the default
    assert set(h.nodes) - set(shipped.nodes) == INSTANCES_BELOW_MAMMAL and set(shipped.nodes) <= set(h.nodes)
    assert set(shipped.edges) <= set(h.edges)
    new_edges = set(h.edges) - set(shipped.edges)
    assert {child for child, _ in new_edges} == INSTANCES_BELOW_MAMMAL and len(new_edges) == 12
    assert {p for _, p in new_edges} <= set(shipped.nodes)  # each hangs below a shipped mammal


def test_full_noun_closure_has_the_reference_counts():
    # Nickel & Kiela (2017), sec. 4: 82,115 nouns and 743,241 hypernymy relations in the closure
    h = load_dataset(EmbedConfig(data="wordnet:entity.n.01"))
    assert len(h) == 82_115 and h.roots == ["entity.n.01"]
    assert len(h.closure_pairs()) == 743_241


def test_unknown_synset_and_missing_dictionary_are_errors_naming_the_fix(tmp_path):
    with pytest.raises(HierarchyError, match="unknown WordNet noun synset 'mammal.n.99'"):
        load_hierarchy("wordnet:mammal.n.99")
    with pytest.raises(HierarchyError, match="apt-get install wordnet-base"):
        load_hierarchy("wordnet:mammal.n.01", wordnet_dir=tmp_path)


def test_cli_embeds_a_wordnet_subtree(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["embed", "--data", "wordnet:primate.n.02", "--dim", "2", "--epochs", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert '"num_nodes"' in capsys.readouterr().out and (out / "embedding.safetensors").is_file()
    assert main(["embed", "--data", "wordnet:primate.n.02", "--wordnet-dir", str(tmp_path), "--quiet"]) == 2


def test_embed_nouns_experiment_runs_and_resumes_from_its_checkpoint(tmp_path):
    script = Path(__file__).resolve().parents[1] / "experiments" / "embed_nouns.py"
    args = [sys.executable, str(script), "--root", "primate.n.02", "--dim", "2", "--epochs", "3", "--budget", "none"]
    args += ["--eval-every", "2", "--eval-sample", "20", "--out", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, check=True)
    out = tmp_path / "primate.n.02_d2"
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["sample"]) for r in history] == [(2, True), (3, False)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and 0 <= metrics["map"] <= 1 and (out / "curve.md").is_file()
    emb, _, _ = load_embedding(out / "embedding.safetensors")
    again = subprocess.run(args, capture_output=True, text=True, check=True)  # continues after epoch 3: no new epochs
    assert "resuming" in again.stdout and "resuming" not in first.stdout
    assert torch.equal(load_embedding(out / "embedding.safetensors")[0], emb)
