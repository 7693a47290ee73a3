"""The iterative-elimination prompt and its parser (R1-Ranker's IRanker; Feng et al., 2025, "R1-Ranker:
Teaching LLM Rankers to Reason").

Each step shows the REMAINING candidates numbered [1]..[m] and asks for the single LEAST relevant one.
The parser never raises: the answer must name exactly one distinct in-range id; otherwise (no answer, no
id, out-of-range ids, several different ids) no candidate was named and the LAST remaining candidate is
eliminated, which keeps the first-stage order, and the step is flagged not well formed. As in
reasonrank/parsing.py, numbers in the reasoning are never read.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reasonrank.parsing import answer_ids, extract_answer, has_think_then_answer
from reasonrank.prompt import PassageTruncator, rewrite_brackets

ELIMINATION_SYSTEM_PROMPT = (
    "You are RankLLM, an intelligent assistant that ranks passages by their relevance to a query, one "
    "elimination at a time. Given a query and a passage list, you first think about the reasoning process "
    "in the mind and then name the single passage that is LEAST relevant to the query. The reasoning "
    "process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
    "i.e., <think> reasoning process here </think> <answer> [k] </answer>."
)

_PREFIX = (
    "I will provide you with {m} passages, each indicated by a numerical identifier []. "
    "Find the passage least relevant to the search query: {query}.\n\n"
)
_SUFFIX = (
    "Search Query: {query}.\n"
    "Name the ONE passage above that is least relevant to the search query, by its identifier only, "
    "e.g., [3]."
)


def elimination_messages(query: str, passages: Sequence[str],
                         truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
    """Chat messages asking the model to reason, then name the least relevant of `passages` for `query`."""
    if truncate is not None:
        passages = [truncate(p) for p in passages]
    query = rewrite_brackets(query)
    body = "".join(f"[{i}] {rewrite_brackets(p)}\n" for i, p in enumerate(passages, start=1))
    user = _PREFIX.format(m=len(passages), query=query) + body + "\n" + _SUFFIX.format(query=query)
    return [{"role": "system", "content": ELIMINATION_SYSTEM_PROMPT}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class ParsedElimination:
    index: int  # 0-based index of the candidate to eliminate among the remaining ones
    named: bool  # the answer named exactly one distinct in-range candidate (else: the last one is dropped)
    well_formed: bool  # named, with `<think>…</think><answer>[k]</answer>` and a single id in the answer


def parse_elimination(response: str, num_remaining: int) -> ParsedElimination:
    """The candidate that `response` eliminates among `num_remaining` (>= 1) candidates."""
    if num_remaining < 1:
        raise ValueError(f"num_remaining must be >= 1, got {num_remaining}")
    answer = extract_answer(response)
    ids = answer_ids(answer) if answer is not None else []
    distinct = {k for k in ids if 1 <= k <= num_remaining}
    if len(distinct) != 1 or len(distinct) != len(set(ids)):
        return ParsedElimination(num_remaining - 1, named=False, well_formed=False)
    (k,) = distinct
    return ParsedElimination(k - 1, named=True, well_formed=len(ids) == 1 and has_think_then_answer(response))

