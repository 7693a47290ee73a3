"""The domain's nouns: queries, candidate passages, rankings.

Plain frozen dataclasses so they pickle cheaply through Ray and carry no framework.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Query:
    qid: str
    text: str
    domain: str = ""
    answer: str | None = None  # gold answer where the source has one (used by the teacher)


@dataclass(frozen=True)
class Candidate:
    docid: str
    text: str
    score: float = 0.0  # first-stage score


@dataclass(frozen=True)
class RerankRequest:
    """One query with its first-stage candidates, best first."""

    query: Query
    candidates: tuple[Candidate, ...]

    @staticmethod
    def of(query: Query, candidates: list[Candidate]) -> "RerankRequest":
        return RerankRequest(query, tuple(candidates))


@dataclass
class WindowLog:
    """What one engine call over one window cost and produced (the per-window log)."""

    qid: str
    strategy: str
    start: int
    end: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    well_formed: bool
    finish_reason: str = ""
    response: str = ""
    in_flight: int = 1  # windows the engine had in flight when this one was submitted, itself included
    round: int = 0  # the query's sequential round this window ran in (0: first); windows of one round ran at once
    forced_answer: bool = False  # the reasoning ran out of its budget and the answer was forced after it
    ranked: list[str] | None = None  # the window's docids as the model ranked them, best first (None: a
    # step that does not rank its window, such as an elimination step); what window votes count


class WindowTotals:
    """What a ranking's windows (`self.windows`) cost and how they went, summed."""

    windows: list[WindowLog]

    @property
    def calls(self) -> int:
        """LLM calls (windows) the ranking took."""
        return len(self.windows)

    @property
    def rounds(self) -> int:
        """Sequential rounds of windows: what the ranking's latency grows with, however many windows each had."""
        return max((w.round for w in self.windows), default=-1) + 1

    @property
    def prompt_tokens(self) -> int:
        return sum(w.prompt_tokens for w in self.windows)

    @property
    def completion_tokens(self) -> int:
        return sum(w.completion_tokens for w in self.windows)

    @property
    def malformed_windows(self) -> int:
        return sum(not w.well_formed for w in self.windows)

    @property
    def forced_answers(self) -> int:
        """Windows whose reasoning hit its budget and whose answer was forced."""
        return sum(w.forced_answer for w in self.windows)


@dataclass
class Windows(WindowTotals):
    """The windows of any number of rankings, summed as one (a run's totals)."""

    windows: list[WindowLog]

    @staticmethod
    def of(rankings: list[WindowTotals]) -> "Windows":
        return Windows([w for r in rankings for w in r.windows])


@dataclass
class RankedList(WindowTotals):
    """A reranked list: candidates best first, and the windows that produced it."""

    qid: str
    candidates: list[Candidate]
    windows: list[WindowLog] = field(default_factory=list)

    @property
    def docids(self) -> list[str]:
        return [c.docid for c in self.candidates]

