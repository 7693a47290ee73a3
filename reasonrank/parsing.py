"""Turn a model's listwise answer into a ranking.

Invariant: the result is ALWAYS a permutation of the window, whatever the text. Rules (ReasonRank):
take the `<answer>…</answer>` that follows `<think>…</think>`, else the first `<answer>` (an unclosed one
counts up to the end);
ids in order of appearance; duplicates keep their first place; out-of-range ids are dropped; ids never
mentioned are appended in their original order. With no answer (reasoning cut off by the token budget)
the window keeps its order: numbers in the reasoning are never read.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# The model's format, `<think>…</think>` then `<answer>…</answer>`: the one pattern every reader of it uses.
THINK_THEN_ANSWER = re.compile(r"<think>.*?</think>\s*<answer>(?P<answer>.*?)</answer>", re.DOTALL)
_THINK = re.compile(r"<think>(?P<reasoning>.*?)(?:</think>|$)", re.DOTALL)
_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_ID = re.compile(r"\[\s*(\d+)\s*\]")


@dataclass(frozen=True)
class ParsedRanking:
    order: list[int]  # 0-based indices into the window, best first; a permutation of range(n)
    well_formed: bool  # <think>…</think> then <answer>…</answer> whose ids are exactly a permutation
    has_answer: bool  # an <answer> section was found (even if its ids were imperfect)


def _normalise_digits(text: str) -> str:
    """Map any Unicode decimal digit (e.g. '３', '٣') to ASCII so '[３]' reads as id 3."""
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() and not ch.isascii() else ch for ch in text)


def has_think_then_answer(response: str) -> bool:
    """Whether the response is structured: `<think>…</think>` followed by `<answer>…</answer>`."""
    return THINK_THEN_ANSWER.search(response) is not None


_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def has_exact_format(response: str) -> bool:
    """`<think>…</think><answer>…</answer>` and nothing else around it, each tag exactly once: R1-Ranker's
    format term (its structure and tag-count checks in one)."""
    return (THINK_THEN_ANSWER.fullmatch(response.strip()) is not None
            and all(response.count(tag) == 1 for tag in _TAGS))


def extract_answer(response: str) -> str | None:
    """The answer text: the one after `</think>` when the response is structured, else the first
    `<answer>` section; None when the response has none."""
    structured = THINK_THEN_ANSWER.search(response)
    if structured:
        return structured.group("answer")
    start = response.find(_ANSWER_OPEN)
    if start < 0:
        return None
    body = response[start + len(_ANSWER_OPEN):]
    end = body.find(_ANSWER_CLOSE)
    return body if end < 0 else body[:end]


def extract_reasoning(response: str) -> str | None:
    """The reasoning inside `<think>` (every backend returns it there), even when cut off; None without one."""
    found = _THINK.search(response)
    return found.group("reasoning") if found else None


def answer_ids(answer: str) -> list[int]:
    """The 1-based ids `[k]` in an answer, in order of appearance (duplicates and all)."""
    return [int(m.group(1)) for m in _ID.finditer(_normalise_digits(answer))]


def parse_ranking(response: str, num_passages: int) -> ParsedRanking:
    """Parse a listwise response over `num_passages` passages into a complete ranking."""
    if num_passages < 0:
        raise ValueError(f"num_passages must be >= 0, got {num_passages}")
    answer = extract_answer(response)
    if answer is None:
        return ParsedRanking(list(range(num_passages)), well_formed=False, has_answer=False)
    raw = answer_ids(answer)
    seen: set[int] = set()
    order: list[int] = []
    for k in raw:
        if 1 <= k <= num_passages and k not in seen:
            seen.add(k)
            order.append(k - 1)
    exact = len(raw) == num_passages and len(order) == num_passages
    order.extend(i for i in range(num_passages) if i + 1 not in seen)
    return ParsedRanking(order, well_formed=exact and has_think_then_answer(response), has_answer=True)


def format_answer(order: list[int]) -> str:
    """The answer text for 0-based `order`, as the model is trained to write it: `[2] > [1] > …`."""
    return " > ".join(f"[{i + 1}]" for i in order)
