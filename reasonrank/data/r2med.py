"""R2MED (Li et al., 2025), reasoning-driven medical retrieval: eight tasks ReasonRank reports on with
512-token passages (the paper's budget for reasoning-intensive sets: `strategy.passage_max_tokens: 512`).

From the Hugging Face hub (`R2MED/<task>`: configs `corpus`, `query` and `qrels`, each one split of the same
name) or from a folder in the same layout: `corpus.jsonl` (`id`, `text`), `query.jsonl` (`id`, `text`) and
`qrels.jsonl` (`q_id`, `p_id`, `score`), as R2MED's own evaluation reads them.
"""
from __future__ import annotations

import logging
import os

from reasonrank.data.dataset import RetrievalDataset
from reasonrank.data.hub import rows
from reasonrank.types import Query

log = logging.getLogger(__name__)

HUB = "R2MED"
TASKS = ("Biology", "Bioinformatics", "Medical-Sciences", "MedXpertQA-Exam", "MedQA-Diag", "PMC-Treatment",
         "PMC-Clinical", "IIYi-Clinical")


def load_r2med(task: str, source: str | None = None, run_path: str | os.PathLike | None = None,
               first_stage_depth: int = 100, cache_dir: str | None = None) -> RetrievalDataset:
    """One R2MED task, every query in split "test". `source`: a local folder in the hub's layout, or a hub id
    (default `R2MED/<task>`). Candidates from `run_path` (a TREC run) or, without one, from BM25."""
    if source is None and task not in TASKS:
        raise ValueError(f"unknown R2MED task {task!r}; tasks: {', '.join(TASKS)}")
    source = source or f"{HUB}/{task}"
    qrels: dict[str, dict[str, int]] = {}
    for row in rows(source, "qrels.jsonl", "qrels", "qrels", cache_dir):
        qrels.setdefault(str(row["q_id"]), {})[str(row["p_id"])] = int(row["score"])
    queries = [Query(str(row["id"]), row["text"], task)
               for row in rows(source, "query.jsonl", "query", "query", cache_dir)]
    corpus = {str(row["id"]): row["text"] for row in rows(source, "corpus.jsonl", "corpus", "corpus", cache_dir)}
    log.info("R2MED %s: %d queries, %d documents", task, len(queries), len(corpus))
    return RetrievalDataset.ranked(queries, corpus, qrels, run_path, first_stage_depth)
