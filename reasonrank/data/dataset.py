"""A retrieval dataset: queries, a corpus, relevance labels and a first-stage run to rerank.

Files: queries and corpus are record tables (.jsonl / .parquet, see `tables`) with fields
`qid, text[, domain, answer, split, excluded_ids]` and `docid, text`, or `id<TAB>text` TSV files as TREC DL
and MS MARCO distribute their topics and collection; qrels and run are TREC files.
Excluded ids (BRIGHT's `excluded_ids`: documents that must not be ranked for a query) are removed
before candidates are handed out.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reasonrank.data.bm25 import bm25_run
from reasonrank.data.tables import read_records
from reasonrank.data.trec import read_id_text, read_qrels, read_run
from reasonrank.types import Candidate, Query, RerankRequest

log = logging.getLogger(__name__)


def _sample(ids: Iterable[str], n: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:n]) + (f", … ({len(ids)} in all)" if len(ids) > n else "")


@dataclass
class RetrievalDataset:
    queries: list[Query]
    corpus: dict[str, str]  # docid -> text
    qrels: dict[str, dict[str, int]]  # qid -> docid -> graded relevance
    run: dict[str, dict[str, float]]  # qid -> docid -> first-stage score, best first
    splits: dict[str, str] = field(default_factory=dict)  # qid -> "train" / "test" where known
    excluded: dict[str, set[str]] = field(default_factory=dict)  # qid -> docids never to rank

    def __post_init__(self) -> None:
        counts = Counter(q.qid for q in self.queries)
        if duplicates := [qid for qid, n in counts.items() if n > 1]:
            raise ValueError(f"duplicate query ids: {_sample(duplicates)}")
        unknown = {d for ranking in self.run.values() for d in ranking if d not in self.corpus}
        if unknown:
            raise ValueError(f"the run ranks {len(unknown)} docids that are not in the corpus: {_sample(unknown)}")
        known = set(counts)
        if stray := set(self.run) - known:
            log.warning("the run ranks %d queries that are not in the dataset (ignored): %s", len(stray),
                        _sample(stray))
        if unranked := {qid for qid in known if not self.run.get(qid)}:
            log.warning("%d queries have no first-stage candidates: %s", len(unranked), _sample(unranked))

    @classmethod
    def with_bm25(cls, queries: list[Query], corpus: dict[str, str], qrels: dict[str, dict[str, int]],
                  depth: int = 100, splits: dict[str, str] | None = None,
                  excluded: dict[str, set[str]] | None = None) -> "RetrievalDataset":
        """The dataset with a BM25 run of `depth` candidates per query (after excluded ids are removed)."""
        excluded = excluded or {}
        k = depth + max((len(v) for v in excluded.values()), default=0)
        run = {qid: [(d, s) for d, s in pairs if d not in excluded.get(qid, ())][:depth]
               for qid, pairs in bm25_run({q.qid: q.text for q in queries}, corpus, k=k).items()}
        return cls(queries, corpus, qrels, {qid: dict(pairs) for qid, pairs in run.items()}, splits or {},
                   excluded)

    @classmethod
    def ranked(cls, queries: list[Query], corpus: dict[str, str], qrels: dict[str, dict[str, int]],
               run_path: str | os.PathLike | None = None, depth: int = 100,
               excluded: dict[str, set[str]] | None = None) -> "RetrievalDataset":
        """A benchmark's queries (all in split "test") with candidates from the TREC run at `run_path`, or
        without one from BM25 over `corpus` (`depth` per query)."""
        splits = {q.qid: "test" for q in queries}
        if run_path is None:
            return cls.with_bm25(queries, corpus, qrels, depth, splits, excluded)
        return cls(queries, corpus, qrels, read_run(run_path), splits, excluded or {})

    @classmethod
    def from_files(cls, queries_path: str | os.PathLike, corpus_path: str | os.PathLike,
                   qrels_path: str | os.PathLike | None = None, run_path: str | os.PathLike | None = None,
                   first_stage_depth: int = 100) -> "RetrievalDataset":
        """Read the dataset's files; with no run, BM25 over the corpus gives `first_stage_depth` candidates."""
        queries, splits, excluded = [], {}, {}
        for i, r in enumerate(_records(queries_path, "qid"), start=1):
            _require(r, ("qid", "text"), queries_path, i)
            qid = str(r["qid"])
            queries.append(Query(qid, r["text"], r.get("domain") or "", r.get("answer")))
            if r.get("split"):
                splits[qid] = r["split"]
            if ids := [str(d) for d in r.get("excluded_ids") or () if d != "N/A"]:
                excluded[qid] = set(ids)
        corpus = {}
        for i, r in enumerate(_records(corpus_path, "docid"), start=1):
            _require(r, ("docid", "text"), corpus_path, i)
            docid = str(r["docid"])
            if docid in corpus:
                raise ValueError(f"{corpus_path}: record {i} repeats docid {docid!r}")
            corpus[docid] = r["text"]
        qrels = read_qrels(qrels_path) if qrels_path else {}
        if run_path is None:
            return cls.with_bm25(queries, corpus, qrels, first_stage_depth, splits, excluded)
        return cls(queries, corpus, qrels, read_run(run_path), splits, excluded)

    def requests(self, depth: int | None = None) -> list[RerankRequest]:
        """One request per query: its top-`depth` first-stage candidates (all of them with None), best
        first, excluded ids removed."""
        out = []
        for q in self.queries:
            dropped = self.excluded.get(q.qid, set())
            ranked = [(d, s) for d, s in self.run.get(q.qid, {}).items() if d not in dropped]
            out.append(RerankRequest.of(q, [Candidate(d, self.corpus[d], s) for d, s in ranked[:depth]]))
        return out

    def subset(self, split: str) -> "RetrievalDataset":
        """The queries of one split (e.g. "train", "test"), with their labels and runs."""
        keep = [q for q in self.queries if self.splits.get(q.qid) == split]
        if not keep:
            raise ValueError(f"no query is in split {split!r}; splits here: {sorted(set(self.splits.values()))}")
        return self._only(keep)

    def head(self, n: int) -> "RetrievalDataset":
        """The first `n` queries, with their labels and runs."""
        return self._only(self.queries[:n])

    def _only(self, queries: list[Query]) -> "RetrievalDataset":
        qids = {q.qid for q in queries}

        def only(table: Mapping) -> dict:
            return {k: v for k, v in table.items() if k in qids}

        return RetrievalDataset(queries, self.corpus, only(self.qrels), only(self.run), only(self.splits),
                                only(self.excluded))


def _records(path: str | os.PathLike, id_field: str) -> list[dict]:
    if os.fspath(path).endswith(".tsv"):
        return [{id_field: i, "text": text} for i, text in read_id_text(path)]
    return read_records(path)


def _require(record: Mapping, fields: tuple[str, ...], path: str | os.PathLike, number: int) -> None:
    if missing := [f for f in fields if f not in record]:
        raise ValueError(f"{path}: record {number} lacks field(s) {', '.join(missing)}; it has {sorted(record)}")
