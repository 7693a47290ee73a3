"""Scores for a reranked list: what a caller gets beside each document's place.

- `rank` (the default): `1/(1+rank)`, 1.0 for the best, strictly decreasing, > 0. It says where the model
  placed a document and nothing more: the same for the best of ten relevant documents and of ten useless ones.
- `votes`: the model's verdict on the document in each window it saw, averaged: in a window of m passages
  the one it ranks at 0-based place p gets the normalised Borda count (m-1-p)/(m-1) (1.0 first, 0.0 last; a
  window of one gives 1.0). A document ranked first in every window it appeared in scores 1.0, last in every
  one 0.0, and one the model never saw (below the strategy's depth) 0.0. Comparable across queries of the
  same strategy, so it can be thresholded; not a probability, and not always decreasing down the ranking (a
  document carried up from a lower window may lose in the next one).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from reasonrank.strategies import STRATEGIES
from reasonrank.types import WindowLog

ScoreKind = Literal["rank", "votes"]
SCORE_KINDS: tuple[str, ...] = ("rank", "votes")


class ScoreUnavailable(ValueError):
    """The score asked for cannot be given for this ranking (votes from a strategy whose steps do not rank)."""


def check_score(kind: ScoreKind, strategy: str) -> None:
    """Refuse, before anything is ranked, a score that the strategy named `strategy` cannot give."""
    if kind == "votes" and not STRATEGIES[strategy].ranks_windows:
        raise ScoreUnavailable(f"score 'votes' needs windows that rank their passages; the {strategy} "
                               "strategy's steps do not (use score 'rank')")


def relevance_score(rank: int) -> float:
    """Score of the document at 0-based `rank`: 1/(1+rank)."""
    return 1.0 / (1 + rank)


def window_votes(windows: Sequence[WindowLog]) -> dict[str, float]:
    """docid -> mean normalised Borda count over the windows that ranked it (see the module)."""
    votes: dict[str, list[float]] = defaultdict(list)
    for window in (w for w in windows if w.ranked is not None):
        last = len(window.ranked) - 1
        for place, docid in enumerate(window.ranked):
            votes[docid].append(1.0 if last == 0 else (last - place) / last)
    return {docid: sum(v) / len(v) for docid, v in votes.items()}


def scores(kind: ScoreKind, docids: Sequence[str], windows: Sequence[WindowLog]) -> list[float]:
    """The `kind` score of each of `docids` (the ranking, best first) given the windows that made it."""
    if kind == "rank":
        return [relevance_score(rank) for rank in range(len(docids))]
    if kind == "votes":
        votes = window_votes(windows)
        return [votes.get(docid, 0.0) for docid in docids]
    raise ValueError(f"unknown score {kind!r}; known: {', '.join(SCORE_KINDS)}")
