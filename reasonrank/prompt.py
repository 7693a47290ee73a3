"""The ReasonRank listwise prompt: one place for the exact text the reranker is trained and served with.

System and user text follow the reference implementation; `[k]` inside query or passage text is rewritten
to `(k)` so the model never confuses passage text with identifiers; passages are cut to a token budget
with the model's own tokenizer; the messages are rendered with the model's chat template.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

SYSTEM_PROMPT = (
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevance to the "
    "query. Given a query and a passage list, you first thinks about the reasoning process in the mind and "
    "then provides the answer (i.e., the reranked passage list). The reasoning process and answer are "
    "enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)

_PREFIX = (
    "I will provide you with {n} passages, each indicated by a numerical identifier []. "
    "Rank the passages based on their relevance to the search query: {query}.\n\n"
)
_SUFFIX = (
    "Search Query: {query}.\n"
    "Rank the {n} passages above based on their relevance to the search query. All the passages should be "
    "included and listed using identifiers, in descending order of relevance. The format of the answer "
    "should be [] > [], e.g., [2] > [1]."
)

# Passage token budgets from the paper: reasoning-intensive sets vs web/BEIR sets.
REASONING_PASSAGE_TOKENS = 512
WEB_PASSAGE_TOKENS = 100

_BRACKETED_NUMBER = re.compile(r"\[(\d+)\]")


def rewrite_brackets(text: str) -> str:
    """`[3]` → `(3)`, so only the prompt's own identifiers are bracketed numbers."""
    return _BRACKETED_NUMBER.sub(r"(\1)", text)


class PassageTruncator:
    """Cuts a passage to at most `max_tokens` tokens of `tokenizer` (None: no cut)."""

    def __init__(self, tokenizer: Any | None, max_tokens: int | None):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def __call__(self, text: str) -> str:
        if self.tokenizer is None or self.max_tokens is None:
            return text
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= self.max_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_tokens], skip_special_tokens=True)


def shown_passage(text: str, truncate: PassageTruncator | None = None) -> str:
    """A passage as the listwise prompt shows it: cut to the token budget, `[k]` rewritten to `(k)`."""
    return rewrite_brackets(truncate(text) if truncate is not None else text)


def listwise_user_message(query: str, passages: Sequence[str]) -> str:
    query = rewrite_brackets(query)
    n = len(passages)
    body = "".join(f"[{i}] {shown_passage(p)}\n" for i, p in enumerate(passages, start=1))
    return _PREFIX.format(n=n, query=query) + body + "\n" + _SUFFIX.format(n=n, query=query)


def listwise_messages(query: str, passages: Sequence[str],
                      truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
    """Chat messages asking the model to reason, then rank `passages` for `query`."""
    if truncate is not None:
        passages = [truncate(p) for p in passages]
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": listwise_user_message(query, passages)},
    ]


def assistant_turn(reasoning: str, order: Sequence[int]) -> str:
    """The target assistant text for SFT: `<think>reasoning</think><answer>[i] > [j] > …</answer>`."""
    from reasonrank.parsing import format_answer

    return f"<think>{reasoning}</think><answer>{format_answer(list(order))}</answer>"


def render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text the model sees: messages through the model's chat template, ready to generate."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
