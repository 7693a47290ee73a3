"""BM25 first stage (bm25s, Lucene's BM25 variant, English stopwords; nothing downloaded)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import bm25s
import numpy as np

_PROGRESS_FROM = 20_000  # show bm25s's progress bars from this many documents or queries


def bm25_run(queries: Mapping[str, str], corpus: Mapping[str, str], k: int = 100,
             stemmer: Callable[[list[str]], list[str]] | None = None, k1: float = 0.9, b: float = 0.4,
             candidates: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[tuple[str, float]]]:
    """qid -> the top-`k` (docid, score) pairs for each query text, best first.

    Over the whole corpus, documents sharing no term with the query (score 0) are not returned, as in
    Lucene/Pyserini, so a query may get fewer than `k`. With `candidates` (qid -> docids), each query's
    own candidates are ranked instead, all of them (ties keep their given order), scored with the whole
    corpus's statistics. `stemmer` maps a list of words to their stems (e.g. PyStemmer's
    `Stemmer("english").stemWords`); none by default. k1 = 0.9, b = 0.4 are Pyserini's defaults, the
    BM25 that BRIGHT and ReasonRank report.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not corpus:
        raise ValueError("cannot run BM25 over an empty corpus")
    docids = list(corpus)
    many_docs = len(docids) >= _PROGRESS_FROM
    tokenize = dict(stopwords="en", stemmer=stemmer, return_ids=False)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(bm25s.tokenize([corpus[d] for d in docids], show_progress=many_docs, **tokenize),
                    show_progress=many_docs)
    qids = list(queries)
    if not qids:
        return {}
    query_tokens = bm25s.tokenize([queries[q] for q in qids], show_progress=False, **tokenize)
    if candidates is not None:
        return _rank_candidates(retriever, docids, dict(zip(qids, query_tokens)), candidates, k)
    indices, scores = retriever.retrieve(query_tokens, k=min(k, len(docids)),
                                         show_progress=len(qids) >= _PROGRESS_FROM)
    return {qid: [(docids[i], float(s)) for i, s in zip(indices[row], scores[row]) if s > 0]
            for row, qid in enumerate(qids)}


def _rank_candidates(retriever: bm25s.BM25, docids: list[str], query_tokens: dict[str, list[str]],
                     candidates: Mapping[str, Sequence[str]], k: int) -> dict[str, list[tuple[str, float]]]:
    position = {d: i for i, d in enumerate(docids)}
    run = {}
    for qid, tokens in query_tokens.items():
        pool = list(candidates.get(qid, ()))
        if unknown := [d for d in pool if d not in position]:
            raise ValueError(f"candidates of query {qid!r} are not in the corpus: {unknown[:5]}")
        scores = retriever.get_scores(tokens) if tokens else np.zeros(len(docids))
        ranked = sorted(((d, float(scores[position[d]])) for d in pool), key=lambda pair: -pair[1])
        run[qid] = ranked[:k]
    return run
