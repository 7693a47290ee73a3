"""An RL set whose "teacher" is a dataset's own relevance labels (the demo and tests; no teacher LLM).

Per query: the first-stage top `window` candidates in first-stage order; the relevant ids are the judged
ones (grade > 0); the teacher's listwise order puts them first, by grade, and keeps the first-stage order
elsewhere. A query with no relevant candidate in its window is left out, as ReasonRank's self-consistency
filter (NDCG@10 >= alpha against the labels) would leave it out, and the count is logged.
"""
from __future__ import annotations

import logging

from reasonrank.data.dataset import RetrievalDataset
from reasonrank.data.training_sets import RLSample

log = logging.getLogger(__name__)


def gold_rl_samples(dataset: RetrievalDataset, window: int) -> list[RLSample]:
    samples, skipped = [], []
    for request in dataset.requests(window):
        qid = request.query.qid
        grades = dataset.qrels.get(qid, {})
        docids = [c.docid for c in request.candidates]
        relevant = [d for d in docids if grades.get(d, 0) > 0]
        if not relevant:
            skipped.append(qid)
            continue
        position = {d: i for i, d in enumerate(docids)}
        teacher = sorted(docids, key=lambda d: (-max(grades.get(d, 0), 0), position[d]))
        samples.append(RLSample(id=f"{qid}-w{window}", qid=qid, domain=request.query.domain,
                                query=request.query.text, docids=docids,
                                passages=[c.text for c in request.candidates], teacher_ranking=teacher,
                                relevant_docids=relevant))
    if skipped:
        log.info("gold RL set: %d of %d queries have no relevant passage in their top %d and are left out",
                 len(skipped), len(skipped) + len(samples), window)
    if not samples:
        raise ValueError(f"no query has a relevant passage within its first-stage top {window}")
    return samples
