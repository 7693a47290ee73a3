"""BEIR (Thakur et al., 2021), the zero-shot retrieval benchmark ReasonRank reports on with 100-token
passages (the budget the paper uses for BEIR and web sets: `strategy.passage_max_tokens: 100`).

From the Hugging Face hub (`BeIR/<name>`: configs `corpus` and `queries`; qrels in `BeIR/<name>-qrels`) or
from a folder in the layout BEIR distributes: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl`
(`_id`, `text`) and `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`, with a header line). Only the
queries judged in the split are kept. A passage's text is its title and text, as BEIR's own rerankers join
them.
"""
from __future__ import annotations

import logging
import os

from reasonrank.data.dataset import RetrievalDataset
from reasonrank.data.hub import rows
from reasonrank.types import Query

log = logging.getLogger(__name__)

HUB = "BeIR"


def load_beir(name: str, source: str | None = None, split: str = "test", run_path: str | os.PathLike | None = None,
              first_stage_depth: int = 100, cache_dir: str | None = None) -> RetrievalDataset:
    """BEIR dataset `name` (scifact, trec-covid, nfcorpus, …), every query in split "test". `source`: a local
    folder in BEIR's layout, or a hub id (default `BeIR/<name>`). Candidates from `run_path` (a TREC run) or,
    without one, from BM25 over the corpus."""
    source = source or f"{HUB}/{name}"
    local = os.path.isdir(source)
    qrels: dict[str, dict[str, int]] = {}
    for row in rows(source if local else f"{source}-qrels", f"qrels/{split}.tsv", None, split, cache_dir):
        qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    queries = [Query(str(row["_id"]), row["text"], name)
               for row in rows(source, "queries.jsonl", "queries", "queries", cache_dir) if str(row["_id"]) in qrels]
    corpus = {str(row["_id"]): " ".join(part for part in (row.get("title"), row["text"]) if part)
              for row in rows(source, "corpus.jsonl", "corpus", "corpus", cache_dir)}
    log.info("BEIR %s (%s): %d judged queries, %d documents", name, split, len(queries), len(corpus))
    return RetrievalDataset.ranked(queries, corpus, qrels, run_path, first_stage_depth)
