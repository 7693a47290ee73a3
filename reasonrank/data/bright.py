"""BRIGHT (Su et al., 2024), the reasoning-intensive retrieval benchmark ReasonRank reports on.

Read with `datasets` from the Hugging Face hub (`xlangai/BRIGHT`) or from a local folder in the hub's
layout: `<root>/<config>/<task>-00000-of-00001.parquet` (or .json/.jsonl), configs `examples` (id, query,
gold_ids, gold_ids_long, excluded_ids, reasoning, gold_answer) and `documents` / `long_documents` (id,
content), one split per task. Each query's `excluded_ids` ("N/A" means none) are never ranked for it,
as in BRIGHT's own evaluation.
"""
from __future__ import annotations

import logging
import os

import datasets
from datasets.exceptions import DataFilesNotFoundError

from reasonrank.data.dataset import RetrievalDataset
from reasonrank.types import Query

log = logging.getLogger(__name__)

HUB_ID = "xlangai/BRIGHT"
TASKS = ("biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
         "sustainable_living", "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems")
_NONE = "N/A"


def _load(source: str, config: str, task: str, cache_dir: str | None) -> datasets.Dataset:
    if not os.path.isdir(source):
        return datasets.load_dataset(source, config, split=task, cache_dir=cache_dir)
    try:
        return datasets.load_dataset(source, data_files={task: f"{config}/{task}[-.]*"}, split=task,
                                     cache_dir=cache_dir)
    except DataFilesNotFoundError:
        raise FileNotFoundError(f"{source}: no {config}/{task}-*.parquet (or .json/.jsonl) for BRIGHT task "
                                f"{task!r}") from None


def load_bright(task: str, source: str = HUB_ID, long_documents: bool = False,
                run_path: str | os.PathLike | None = None, first_stage_depth: int = 100,
                cache_dir: str | None = None) -> RetrievalDataset:
    """One BRIGHT task as a RetrievalDataset (every query in split "test").

    `source`: a hub id or a local folder in the hub's layout. `long_documents`: the long-document variant
    (`long_documents`, qrels from `gold_ids_long`). The candidates come from `run_path` (a TREC run, e.g.
    a stronger retriever's) or, without one, from BM25 over the task's documents.
    """
    if task not in TASKS:
        raise ValueError(f"unknown BRIGHT task {task!r}; tasks: {', '.join(TASKS)}")
    examples = _load(source, "examples", task, cache_dir)
    documents = _load(source, "long_documents" if long_documents else "documents", task, cache_dir)
    gold_field = "gold_ids_long" if long_documents else "gold_ids"
    queries, qrels, excluded = [], {}, {}
    for ex in examples:
        qid = str(ex["id"])
        answer = ex.get("gold_answer")
        queries.append(Query(qid, ex["query"], task, None if answer in (None, _NONE) else answer))
        qrels[qid] = {str(d): 1 for d in ex[gold_field]}
        if ids := {str(d) for d in ex.get("excluded_ids") or () if d != _NONE}:
            excluded[qid] = ids
    corpus = {str(doc["id"]): doc["content"] for doc in documents}
    log.info("BRIGHT %s: %d queries, %d documents, %d queries with excluded ids", task, len(queries),
             len(corpus), len(excluded))
    return RetrievalDataset.ranked(queries, corpus, qrels, run_path, first_stage_depth, excluded)
