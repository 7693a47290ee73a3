"""Data readers and writers: TREC files, record tables, BM25, datasets, BRIGHT (a local copy in the hub's
layout, written here; the hub itself is not reachable) and the demo dataset."""
from __future__ import annotations

import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reasonrank.data.bm25 import bm25_run
from reasonrank.data.bright import load_bright
from reasonrank.data.dataset import RetrievalDataset
from reasonrank.data.demo import write_demo_dataset
from reasonrank.data.tables import read_records, write_records
from reasonrank.data.trec import TrecFormatError, read_qrels, read_run, write_qrels, write_run
from reasonrank.metrics import evaluate_run


# --- TREC files -------------------------------------------------------------------------------------------

def test_run_round_trip_keeps_order_with_strictly_decreasing_scores(tmp_path):
    path = tmp_path / "run.trec"
    write_run(path, {"q1": ["c", "a", "b"], "q2": [("x", 2.0), ("y", 2.0), ("z", 2.0), ("w", 5.0)],
                     "q3": {"m": 0.1, "n": 0.7}}, tag="t")
    run = read_run(path)
    assert list(run["q1"]) == ["c", "a", "b"] and list(run["q1"].values()) == [3.0, 2.0, 1.0]
    # given scores keep their order; ties and the later higher score are lowered just below the previous
    assert list(run["q2"]) == ["x", "y", "z", "w"] and run["q2"]["x"] == 2.0
    scores = list(run["q2"].values())
    assert all(a > b for a, b in zip(scores, scores[1:])) and scores[1] == pytest.approx(2.0)
    assert list(run["q3"]) == ["n", "m"]  # a mapping is ordered by its scores
    assert all(line.split()[5] == "t" for line in path.read_text().splitlines())


def test_tied_scores_cannot_be_reordered_by_trec_eval(tmp_path):
    # trec_eval breaks ties by docid, descending: unfixed, "b" would come before "a"
    path = tmp_path / "run.trec"
    write_run(path, {"q": [("a", 1.0), ("b", 1.0)]})
    assert evaluate_run(read_run(path), {"q": {"a": 1}})["mrr@10"] == 1.0


def test_trec_files_are_read_from_storage_uris(tmp_path):
    # fsspec's in-memory filesystem stands in for s3:// or gs:// (no object store here)
    from reasonrank import storage

    write_run(tmp_path / "run.trec", {"q": ["a", "b"]})
    storage.put_file(str(tmp_path / "run.trec"), "memory://trec-test/run.trec")
    assert read_run("memory://trec-test/run.trec") == read_run(tmp_path / "run.trec")


def test_qrels_round_trip_and_malformed_lines_name_file_and_line(tmp_path):
    qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    write_qrels(tmp_path / "qrels.txt", qrels)
    assert read_qrels(tmp_path / "qrels.txt") == qrels
    bad = tmp_path / "bad.txt"
    bad.write_text("q1 0 d1 1\nq1 0 d2 high\n")
    with pytest.raises(TrecFormatError, match=r"bad.txt:2: relevance 'high'"):
        read_qrels(bad)
    bad.write_text("q1 Q0 d1 1 3.0 t\n\nq1 Q0 d2 2\n")
    with pytest.raises(TrecFormatError, match=r"bad.txt:3: a run line has 6 fields"):
        read_run(bad)
    bad.write_text("q1 Q0 d1 1 3.0 t\nq1 Q0 d1 2 2.0 t\n")
    with pytest.raises(TrecFormatError, match="appears twice"):
        read_run(bad)
    with pytest.raises(ValueError, match="whitespace"):
        write_run(tmp_path / "r.trec", {"q": ["doc one"]})


# --- record tables ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["t.jsonl", "t.parquet", "memory://tables/t.jsonl", "memory://tables/t.parquet"])
def test_records_round_trip(tmp_path, name):
    path = name if "://" in name else str(tmp_path / "sub" / name)
    records = [{"qid": "q1", "ids": ["a", "b"], "score": 1.5, "text": "naïve — ünïcode"},
               {"qid": "q2", "ids": [], "score": -2.0, "text": ""}]
    write_records(path, records)
    assert read_records(path) == records


def test_table_errors_name_the_file_and_problem(tmp_path):
    with pytest.raises(ValueError, match="unsupported table format"):
        write_records(tmp_path / "t.csv", [{"a": 1}])
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_records(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="one Parquet schema"):
        write_records(tmp_path / "t.parquet", [{"a": 1}, {"a": "one"}])


# --- BM25 and datasets ------------------------------------------------------------------------------------

CORPUS = {"d1": "the cat sat on the mat", "d2": "dogs chase cats in the park",
          "d3": "zorium was first isolated by doctor kale", "d4": "zorium zorium melting point facts",
          "d5": "nothing in common"}


def test_bm25_run_ranks_matching_documents_and_drops_non_matching():
    run = bm25_run({"q1": "who first isolated zorium", "q2": "completely unknown words"}, CORPUS, k=10)
    assert [d for d, _ in run["q1"]] == ["d3", "d4"]
    assert run["q1"][0][1] > run["q1"][1][1] > 0
    assert run["q2"] == []
    assert len(bm25_run({"q": "zorium"}, CORPUS, k=1)["q"]) == 1
    pooled = bm25_run({"q1": "isolated zorium"}, CORPUS, candidates={"q1": ["d5", "d3", "d1"]})
    assert [d for d, _ in pooled["q1"]] == ["d3", "d5", "d1"]  # all candidates; ties keep their order
    with pytest.raises(ValueError, match="not in the corpus"):
        bm25_run({"q1": "x"}, CORPUS, candidates={"q1": ["nope"]})


def _write_files(tmp_path, run_lines=None):
    write_records(tmp_path / "queries.jsonl", [
        {"qid": "q1", "text": "who first isolated zorium", "split": "train", "excluded_ids": ["d4"]},
        {"qid": "q2", "text": "cats and dogs", "split": "test", "domain": "web", "answer": "d2"}])
    write_records(tmp_path / "corpus.parquet", [{"docid": d, "text": t} for d, t in CORPUS.items()])
    write_qrels(tmp_path / "qrels.txt", {"q1": {"d3": 1}, "q2": {"d2": 1}})
    if run_lines is not None:
        (tmp_path / "run.trec").write_text(run_lines)
    return [tmp_path / "queries.jsonl", tmp_path / "corpus.parquet", tmp_path / "qrels.txt",
            tmp_path / "run.trec" if run_lines is not None else None]


def test_dataset_from_files_with_bm25_excludes_ids_and_splits(tmp_path):
    dataset = RetrievalDataset.from_files(*_write_files(tmp_path), first_stage_depth=3)
    requests = {r.query.qid: r for r in dataset.requests()}
    assert [c.docid for c in requests["q1"].candidates] == ["d3"]  # d4 matched but is excluded
    assert [c.docid for c in requests["q2"].candidates][:1] == ["d2"]
    assert requests["q2"].query.domain == "web" and requests["q2"].query.answer == "d2"
    test = dataset.subset("test")
    assert [q.qid for q in test.queries] == ["q2"] and set(test.qrels) == {"q2"} and set(test.run) == {"q2"}
    assert [q.qid for q in dataset.head(1).queries] == ["q1"]
    with pytest.raises(ValueError, match="no query is in split 'dev'"):
        dataset.subset("dev")


def test_dataset_with_a_run_keeps_its_order_and_rejects_unknown_docids(tmp_path):
    files = _write_files(tmp_path, "q1 Q0 d4 1 9 r\nq1 Q0 d1 2 8 r\nq1 Q0 d3 3 7 r\nq2 Q0 d2 1 1 r\n")
    dataset = RetrievalDataset.from_files(*files)
    first = dataset.requests(depth=1)[0]
    assert [(c.docid, c.score) for c in first.candidates] == [("d1", 8.0)]  # d4 excluded, then depth 1
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 9 r\nq1 Q0 ghost 2 8 r\n")
    with pytest.raises(ValueError, match="not in the corpus: ghost"):
        RetrievalDataset.from_files(*files)
    write_records(tmp_path / "queries.jsonl", [{"id": "q1", "text": "t"}])
    with pytest.raises(ValueError, match="record 1 lacks field"):
        RetrievalDataset.from_files(*files)


# --- BRIGHT -----------------------------------------------------------------------------------------------

def _write_bright(root):
    """A two-task BRIGHT copy in the hub's layout: <config>/<task>-00000-of-00001.parquet."""
    def put(config, task, rows):
        (root / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / config / f"{task}-00000-of-00001.parquet")

    docs = [{"id": f"b{i}", "content": t} for i, t in enumerate(
        ["photosynthesis converts light into chemical energy", "plants use light and water",
         "light photosynthesis chlorophyll light", "the mitochondria makes energy", "unrelated text"])]
    put("documents", "biology", docs)
    put("long_documents", "biology", [{"id": "long0", "content": "photosynthesis light energy long"},
                                      {"id": "long1", "content": "mitochondria"}])
    put("examples", "biology", [
        {"id": "0", "query": "how do plants turn light into energy", "reasoning": "r", "gold_answer": "N/A",
         "gold_ids": ["b0", "b1"], "gold_ids_long": ["long0"], "excluded_ids": ["N/A"]},
        {"id": "1", "query": "what makes energy in cells", "reasoning": "r", "gold_answer": "mitochondria",
         "gold_ids": ["b3"], "gold_ids_long": ["long1"], "excluded_ids": ["b2", "b0"]}])


@pytest.fixture(scope="module")
def bright_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("bright")
    _write_bright(root)
    return root


def test_bright_local_copy_loads_with_bm25_and_excluded_ids_removed(bright_copy, tmp_path):
    dataset = load_bright("biology", source=str(bright_copy), cache_dir=str(tmp_path / "hf"))
    assert [q.qid for q in dataset.queries] == ["0", "1"]
    assert dataset.queries[1].answer == "mitochondria" and dataset.queries[0].answer is None
    assert dataset.queries[0].domain == "biology" and set(dataset.splits.values()) == {"test"}
    assert dataset.qrels == {"0": {"b0": 1, "b1": 1}, "1": {"b3": 1}}
    assert len(dataset.corpus) == 5 and dataset.corpus["b4"] == "unrelated text"
    requests = {r.query.qid: [c.docid for c in r.candidates] for r in dataset.requests()}
    assert requests["0"][0] in {"b0", "b1", "b2"} and "b2" in requests["0"]
    assert not {"b0", "b2"} & set(requests["1"]) and requests["1"][0] == "b3"


def test_bright_long_documents_and_a_given_run(bright_copy, tmp_path):
    long = load_bright("biology", source=str(bright_copy), long_documents=True, cache_dir=str(tmp_path / "hf"))
    assert long.qrels == {"0": {"long0": 1}, "1": {"long1": 1}} and set(long.corpus) == {"long0", "long1"}
    write_run(tmp_path / "first.trec", {"1": ["b2", "b4", "b3"], "0": ["b4", "b2"]})
    given = load_bright("biology", source=str(bright_copy), run_path=tmp_path / "first.trec",
                        cache_dir=str(tmp_path / "hf"))
    assert [[c.docid for c in r.candidates] for r in given.requests()] == [["b4", "b2"], ["b4", "b3"]]
    with pytest.raises(FileNotFoundError, match="examples/pony"):
        load_bright("pony", source=str(bright_copy), cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="unknown BRIGHT task"):
        load_bright("chemistry", source=str(bright_copy))


# --- the demo dataset -------------------------------------------------------------------------------------

def test_demo_dataset_is_deterministic(demo_data, tmp_path):
    again = write_demo_dataset(tmp_path / "again", seed=0)
    other = write_demo_dataset(tmp_path / "other", seed=1)
    for name in ("queries_path", "corpus_path", "qrels_path", "run_path"):
        assert getattr(again, name).read_bytes() == getattr(demo_data, name).read_bytes(), name
    assert other.queries_path.read_bytes() != demo_data.queries_path.read_bytes()


def test_demo_dataset_shape(demo_data):
    dataset = demo_data.load()
    splits = Counter(dataset.splits.values())
    assert splits == {"train": 1000, "test": 250}
    assert set(Counter(q.domain for q in dataset.queries)) == {"qa", "code", "math", "web"}
    assert all(q.answer for q in dataset.queries)
    assert all(len(r.candidates) == 20 for r in dataset.requests())
    assert all(1 <= sum(r > 0 for r in rels.values()) <= 3 for rels in dataset.qrels.values())
    assert max(len(t.split()) for t in dataset.corpus.values()) <= 25
    texts = list(demo_data.texts())
    assert len(texts) == len(dataset.queries) + len(dataset.corpus)


def test_bm25_is_misled_on_the_demo_but_the_task_has_signal(demo_data):
    """BM25 falls for passages that echo the question; 'mentions the asked entity and states something
    (no question mark)' — no lexical-overlap count at all — ranks far better, so there is signal a
    reranker can learn beyond word overlap."""
    dataset = demo_data.load()
    requests = dataset.requests()
    doc_freq = Counter(w for t in dataset.corpus.values() for w in set(re.findall(r"\w+", t.lower())))
    bm25, heuristic, oracle = {}, {}, {}
    for r in requests:
        qid = r.query.qid
        entity = min(re.findall(r"\w+", r.query.text.lower()), key=lambda w: doc_freq.get(w, 10**9))
        n = len(r.candidates)
        bm25[qid] = {c.docid: c.score for c in r.candidates}
        heuristic[qid] = {c.docid: 2 * (entity in c.text.lower() and "?" not in c.text) + (n - i) / n / 2
                          for i, c in enumerate(r.candidates)}
        oracle[qid] = {c.docid: dataset.qrels[qid].get(c.docid, 0) + (n - i) / n / 2
                       for i, c in enumerate(r.candidates)}
    bm25_ndcg = evaluate_run(bm25, dataset.qrels)["ndcg@10"]
    heuristic_ndcg = evaluate_run(heuristic, dataset.qrels)["ndcg@10"]
    oracle_ndcg = evaluate_run(oracle, dataset.qrels)["ndcg@10"]
    assert 0.25 <= bm25_ndcg <= 0.55
    assert oracle_ndcg == pytest.approx(1.0)  # every relevant passage is among the candidates
    assert heuristic_ndcg > bm25_ndcg + 0.3


def test_writing_puts_a_local_file_at_a_uri_only_when_the_block_succeeds():
    import fsspec

    from reasonrank import storage

    fs = fsspec.filesystem("memory")
    with storage.writing("memory://out/plot.png") as local:
        assert local.endswith("plot.png")
        with open(local, "wb") as f:
            f.write(b"\x89PNG")
    assert fs.cat("/out/plot.png") == b"\x89PNG"
    with pytest.raises(RuntimeError), storage.writing("memory://out/half.trec") as local:
        open(local, "w").write("q1 Q0 d1 1 1.0 x\n")
        raise RuntimeError("the writer failed")
    assert not fs.exists("/out/half.trec")
    fs.rm("/out", recursive=True)
