"""Any `ir_datasets` id as a data source: TREC DL 2019 and 2020 (`msmarco-passage/trec-dl-2019/judged`,
`msmarco-passage/trec-dl-2020/judged`), MS MARCO (`msmarco-passage/dev/small`), BEIR through ir_datasets
(`beir/scifact/test`), and every other dataset it catalogues. ir_datasets fetches and caches a dataset's
files itself the first time it is used (under `IR_DATASETS_HOME`).

The first stage: a TREC run (`run_path`), else the dataset's own scored documents where it has them (TREC
DL's BM25 top 1000), else BM25 over its documents. Only the candidates' texts are looked up (its document
store), so a large collection such as MS MARCO's 8.8M passages is read whole only when BM25 must index it.
"""
from __future__ import annotations

import logging
import os

from reasonrank.data.dataset import RetrievalDataset
from reasonrank.data.trec import read_run
from reasonrank.types import Query

log = logging.getLogger(__name__)


def load_ir_dataset(dataset_id: str, run_path: str | os.PathLike | None = None,
                    first_stage_depth: int = 100) -> RetrievalDataset:
    """The `ir_datasets` dataset `dataset_id` (queries, qrels, documents), every query in split "test"."""
    import ir_datasets

    dataset = ir_datasets.load(dataset_id)
    qrels: dict[str, dict[str, int]] = {}
    for qrel in dataset.qrels_iter():
        qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
    queries = [Query(q.query_id, q.default_text(), dataset_id) for q in dataset.queries_iter()]
    if run_path is None and not dataset.has_scoreddocs():
        corpus = {doc.doc_id: doc.default_text() for doc in dataset.docs_iter()}
        log.info("%s: %d queries, BM25 over %d documents", dataset_id, len(queries), len(corpus))
        return RetrievalDataset.ranked(queries, corpus, qrels, None, first_stage_depth)
    run = read_run(run_path) if run_path is not None else _scored_documents(dataset)
    run = {qid: dict(list(ranking.items())[:first_stage_depth]) for qid, ranking in run.items()}
    wanted = {docid for ranking in run.values() for docid in ranking}
    corpus = {doc.doc_id: doc.default_text() for doc in dataset.docs_store().get_many_iter(wanted)}
    log.info("%s: %d queries, %d candidate documents from %s", dataset_id, len(queries), len(corpus),
             run_path or "its scored documents")
    return RetrievalDataset(queries, corpus, qrels, run, {q.qid: "test" for q in queries})


def _scored_documents(dataset) -> dict[str, dict[str, float]]:
    """The dataset's first-stage run (qid -> docid -> score), best first."""
    scored: dict[str, list[tuple[str, float]]] = {}
    for row in dataset.scoreddocs_iter():
        scored.setdefault(row.query_id, []).append((row.doc_id, float(row.score)))
    return {qid: dict(sorted(pairs, key=lambda pair: -pair[1])) for qid, pairs in scored.items()}
