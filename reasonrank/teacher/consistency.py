"""The self-consistency filter: keep a sample when the teacher agrees with itself.

The teacher's listwise ranking is scored with NDCG@10 against the teacher's own pointwise labels of the
same passages; a sample is kept when the score reaches alpha (0.4 in ReasonRank). A list in which the
teacher found no relevant passage scores 0 and is dropped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reasonrank.metrics import ndcg_at_k

DEFAULT_ALPHA = 0.4


@dataclass(frozen=True)
class ConsistencyFilter:
    alpha: float = DEFAULT_ALPHA
    k: int = 10

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1], got {self.alpha}")

    def score(self, ranking: Sequence[str], relevant: Mapping[str, bool]) -> float:
        """NDCG@k of `ranking` (docids, best first) with the pointwise verdicts as binary relevance."""
        missing = set(ranking) - set(relevant)
        if missing:
            raise ValueError(f"no pointwise label for {sorted(missing)}")
        return ndcg_at_k(ranking, {d: int(r) for d, r in relevant.items()}, self.k)

    def keeps(self, score: float) -> bool:
        return score >= self.alpha
