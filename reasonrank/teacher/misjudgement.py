"""How the simulated teacher misjudges passages, the way a strong reasoning LLM does (its error model).

DeepSeek-R1's relevance verdicts are good, not perfect, and its mistakes follow the wording more than chance:

- a relevant passage phrased unlike the query (few of the query's words) is missed, judged irrelevant, with
  probability `missed_paraphrase`;
- an irrelevant passage that echoes the query (repeats most of its words without answering it) is taken for
  relevant with probability `fooled_by_echo`;
- in a listwise answer, going down the ranking, a passage trades places with the next one with probability
  `swap` (a passage just moved up is not moved again), whatever the reasoning before it said.

"Word overlap" is the share of the query's words that the passage contains, words as BM25 sees them (bm25s's
tokens: lower case, two characters or more, English stopwords left out). Phrased unlike the query: an overlap
below `unlike_below`; an echo: an overlap of `echo_from` or more. On the demo set, relevant passages overlap the
question 0.14 to 0.75 (two thirds below 0.5), its echoes 1.0 and no other passage more than 0.5.

Each verdict is drawn on its own, from a stream keyed by the teacher's seed and the prompt: the pointwise answer
about a passage and each listwise answer holding it err independently at the same rates. So a rerun gets the
same answers (synthesis resumes by item), and where one view erred and the other did not, the two disagree,
which is what the self-consistency filter looks for; where both erred alike, the error passes into training
data, as a real teacher's do. All rates 0 (the default): the teacher misjudges nothing on top of `noise`.
"""
from __future__ import annotations

import random
from functools import lru_cache

import bm25s
from pydantic import Field

from reasonrank.config import Strict


@lru_cache(maxsize=65536)
def _words(text: str) -> frozenset[str]:
    return frozenset(bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0])


def word_overlap(query: str, passage: str) -> float:
    """The share of the query's words found in the passage (0 for a query without words)."""
    asked = _words(query)
    return len(asked & _words(passage)) / len(asked) if asked else 0.0


class TeacherErrors(Strict):
    """The simulated teacher's misjudgements, each at a stated rate (see the module docstring)."""

    missed_paraphrase: float = Field(0.0, ge=0.0, le=1.0)  # a relevant passage phrased unlike the query → no
    fooled_by_echo: float = Field(0.0, ge=0.0, le=1.0)  # an irrelevant echo of the query → yes
    swap: float = Field(0.0, ge=0.0, le=1.0)  # each adjacent pair of a listwise answer swapped
    unlike_below: float = Field(0.5, ge=0.0, le=1.0)  # word overlap under this: phrased unlike the query
    echo_from: float = Field(0.9, ge=0.0, le=1.0)  # word overlap of this or more: an echo of the query

    def judge(self, query: str, passage: str, grade: int, rng: random.Random) -> int:
        """The grade the teacher gives a passage whose true grade is `grade`: that, or a misjudgement. Draws
        from `rng` only for a passage that can be misjudged at a rate above 0."""
        relevant = grade > 0
        rate = self.missed_paraphrase if relevant else self.fooled_by_echo
        if not rate:
            return grade
        overlap = word_overlap(query, passage)
        prone = overlap < self.unlike_below if relevant else overlap >= self.echo_from
        if prone and rng.random() < rate:
            return 0 if relevant else 1
        return grade

    def swapped(self, order: list[int], rng: random.Random) -> list[int]:
        """`order` with adjacent pairs swapped at rate `swap`, top down; a passage moved up stays there."""
        out = list(order)
        if not self.swap:
            return out
        i = 0
        while i < len(out) - 1:
            if rng.random() < self.swap:
                out[i], out[i + 1] = out[i + 1], out[i]
                i += 2
            else:
                i += 1
        return out
