"""The standard benchmarks as data sources (BEIR, R2MED, any ir_datasets id), each read from a small local copy
written here in the format the benchmark distributes, through `DataConfig.load` as the evaluate job reads it."""
from __future__ import annotations

import json

import pytest

from reasonrank.config import ConfigError, DataConfig
from reasonrank.data.trec import write_run


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def beir_copy(tmp_path):
    root = tmp_path / "scifact"
    _jsonl(root / "corpus.jsonl", [
        {"_id": "d1", "title": "Purring", "text": "Cats purr when content.", "metadata": {}},
        {"_id": "d2", "title": "", "text": "Bees dance to show where flowers are.", "metadata": {}},
        {"_id": "d3", "title": "Tides", "text": "The moon pulls the oceans.", "metadata": {}}])
    _jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "why do cats purr", "metadata": {}},
                                    {"_id": "q2", "text": "how do bees dance", "metadata": {}},
                                    {"_id": "q9", "text": "a training query", "metadata": {}}])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\nq2\td3\t0\n")
    return root


def test_beir_local_copy(beir_copy):
    data = DataConfig(source="beir", dataset="scifact", dataset_source=str(beir_copy), first_stage_depth=2).load()
    assert [(q.qid, q.text) for q in data.queries] == [("q1", "why do cats purr"), ("q2", "how do bees dance")]
    assert data.corpus == {"d1": "Purring Cats purr when content.", "d2": "Bees dance to show where flowers are.",
                           "d3": "Tides The moon pulls the oceans."}
    assert data.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1, "d3": 0}}
    requests = {r.query.qid: [c.docid for c in r.candidates] for r in data.requests(2)}
    assert requests["q1"][0] == "d1" and requests["q2"][0] == "d2"  # BM25's lexical match first
    assert data.splits == {"q1": "test", "q2": "test"}


def test_beir_with_a_first_stage_run(beir_copy, tmp_path):
    write_run(tmp_path / "run.trec", {"q1": ["d3", "d1"], "q2": ["d1", "d2", "d3"]})
    data = DataConfig(source="beir", dataset="scifact", dataset_source=str(beir_copy),
                      run=str(tmp_path / "run.trec")).load()
    assert [[c.docid for c in r.candidates] for r in data.requests(2)] == [["d3", "d1"], ["d1", "d2"]]


def test_r2med_local_copy(tmp_path):
    root = tmp_path / "Biology"
    _jsonl(root / "corpus.jsonl", [{"id": "p1", "text": "Hemoglobin carries oxygen in red blood cells."},
                                   {"id": "p2", "text": "Insulin lowers blood glucose."},
                                   {"id": "p3", "text": "Neurons fire action potentials."}])
    _jsonl(root / "query.jsonl", [{"id": "b1", "text": "A patient is pale and short of breath; what carries "
                                                       "oxygen in the blood?"}])
    _jsonl(root / "qrels.jsonl", [{"q_id": "b1", "p_id": "p1", "score": 1}, {"q_id": "b1", "p_id": "p3", "score": 0}])
    data = DataConfig(source="r2med", dataset="Biology", dataset_source=str(root), first_stage_depth=3).load()
    assert [(q.qid, q.domain) for q in data.queries] == [("b1", "Biology")]
    assert data.queries[0].text.startswith("A patient is pale")
    assert data.corpus["p2"] == "Insulin lowers blood glucose."
    assert data.qrels == {"b1": {"p1": 1, "p3": 0}}
    assert [c.docid for c in data.requests(3)[0].candidates][0] == "p1"


def test_r2med_unknown_task_and_missing_dataset_are_named():
    with pytest.raises(ValueError, match="unknown R2MED task 'Biologie'"):
        DataConfig(source="r2med", dataset="Biologie").load()
    with pytest.raises(ConfigError, match="data.source=beir needs data.dataset"):
        DataConfig(source="beir").load()


@pytest.fixture
def ir_dataset_id(tmp_path, monkeypatch):
    """A dataset registered with ir_datasets from TSV and TREC files, as `ir_datasets.create_dataset` reads them."""
    import ir_datasets

    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "ir_datasets_home"))
    (tmp_path / "docs.tsv").write_text("m1\tThe capital of France is Paris.\nm2\tParis is a city in Texas too.\n"
                                       "m3\tBerlin is the capital of Germany.\n")
    (tmp_path / "queries.tsv").write_text("1037798\twhat is the capital of france\n1121402\tcapital of germany\n")
    (tmp_path / "qrels.txt").write_text("1037798 0 m1 3\n1037798 0 m2 1\n1121402 0 m3 2\n")
    dataset = ir_datasets.create_dataset(docs_tsv=str(tmp_path / "docs.tsv"), queries_tsv=str(tmp_path / "queries.tsv"),
                                         qrels_trec=str(tmp_path / "qrels.txt"))
    name = f"reasonrank-test/{tmp_path.name}"
    ir_datasets.registry.register(name, dataset)
    return name


def test_any_ir_datasets_id(ir_dataset_id, tmp_path):
    data = DataConfig(source="ir_datasets", dataset=ir_dataset_id, first_stage_depth=2).load()
    assert [(q.qid, q.text) for q in data.queries] == [("1037798", "what is the capital of france"),
                                                      ("1121402", "capital of germany")]
    assert data.qrels == {"1037798": {"m1": 3, "m2": 1}, "1121402": {"m3": 2}}
    assert data.corpus["m3"] == "Berlin is the capital of Germany."
    assert [c.docid for c in data.requests(2)[1].candidates][0] == "m3"
    # With a run, only its candidates' texts are looked up in the document store.
    write_run(tmp_path / "run.trec", {"1037798": ["m2", "m1", "m3"], "1121402": ["m3"]})
    data = DataConfig(source="ir_datasets", dataset=ir_dataset_id, run=str(tmp_path / "run.trec"),
                      first_stage_depth=2).load()
    assert sorted(data.corpus) == ["m1", "m2", "m3"] and data.corpus["m2"] == "Paris is a city in Texas too."
    assert [[c.docid for c in r.candidates] for r in data.requests(2)] == [["m2", "m1"], ["m3"]]


def test_trec_dl_files(tmp_path):
    """TREC DL as NIST and MS MARCO distribute it: topics and collection as `id<TAB>text`, TREC qrels and run."""
    (tmp_path / "msmarco-test2019-queries.tsv").write_text("19335\tanthropological definition of environment\n"
                                                         "47923\taxon terminals or synaptic knob definition\n")
    (tmp_path / "collection.tsv").write_text("7067032\tEnvironment, in anthropology, is the surroundings.\n"
                                             "7067033\tSynaptic knobs sit at the axon terminals.\n"
                                             "7067034\tAn unrelated passage\tcontaining a tab.\n")
    (tmp_path / "2019qrels-pass.txt").write_text("19335 0 7067032 3\n47923 0 7067033 2\n47923 0 7067034 0\n")
    write_run(tmp_path / "bm25.trec", {"19335": ["7067034", "7067032"], "47923": ["7067033", "7067034"]})
    data = DataConfig(source="files", queries=str(tmp_path / "msmarco-test2019-queries.tsv"),
                      corpus=str(tmp_path / "collection.tsv"), qrels=str(tmp_path / "2019qrels-pass.txt"),
                      run=str(tmp_path / "bm25.trec")).load()
    assert [(q.qid, q.text) for q in data.queries] == [("19335", "anthropological definition of environment"),
                                                      ("47923", "axon terminals or synaptic knob definition")]
    assert data.corpus["7067034"] == "An unrelated passage\tcontaining a tab."
    assert data.qrels == {"19335": {"7067032": 3}, "47923": {"7067033": 2, "7067034": 0}}
    assert [[c.docid for c in r.candidates] for r in data.requests()] == [["7067034", "7067032"],
                                                                         ["7067033", "7067034"]]
