"""The ReasonRank listwise prompt: one place for the exact text the reranker is trained and served with.

System and user text follow the reference implementation; `[k]` inside query or passage text is rewritten
to `(k)` so the model never confuses passage text with identifiers; passages are cut to a token budget
with the model's own tokenizer; the messages are rendered with the model's chat template.
"""
from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Sequence
from functools import lru_cache
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


# When a window does not fit the model's context even with passages at their budget, they are cut further,
# but never below this many tokens each; then the query is cut to QUERY_MIN_TOKENS; what still does not fit
# is refused (PromptTooLong), never sent to the engine to fail there.
PASSAGE_MIN_TOKENS = 16
QUERY_MIN_TOKENS = 128


class PromptTooLong(ValueError):
    """A window that cannot fit the model's context even with passages and query cut to their least; the
    message names the limits. The input's fault (a 4xx to a client), not the engine's."""


class PassageTruncator:
    """Cuts a passage to at most `max_tokens` tokens of `tokenizer` (None: no cut).

    With `context_tokens` (the engine's max_model_len) it also makes whole windows fit (`fit`): a prompt
    longer than `context_tokens - answer_tokens` has its passages cut further (down to PASSAGE_MIN_TOKENS
    each), then its query (to QUERY_MIN_TOKENS), and is refused with PromptTooLong if it still does not fit.
    """

    def __init__(self, tokenizer: Any | None, max_tokens: int | None, context_tokens: int | None = None,
                 answer_tokens: int = 0):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens
        self.answer_tokens = answer_tokens

    def __call__(self, text: str) -> str:
        return self.cut(text, self.max_tokens)

    def cut(self, text: str, max_tokens: int | None) -> str:
        if self.tokenizer is None or max_tokens is None:
            return text
        return self._cut(text, self._ids(text), max_tokens)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _cut(self, text: str, ids: list[int], max_tokens: int) -> str:
        """`text` (whose tokens are `ids`) cut to `max_tokens`."""
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)

    def fit(self, query: str, passages: Sequence[str],
            build: Callable[[str, list[str]], list[dict[str, str]]]) -> list[dict[str, str]]:
        """`build(query, passages)` with passages cut to their budget, and further as the class says so
        that the rendered prompt leaves `answer_tokens` of the context free."""
        passages = [self(p) for p in passages]
        messages = build(query, passages)
        if self.context_tokens is None or self.tokenizer is None:
            return messages
        limit = self.context_tokens - self.answer_tokens
        if self._tokens(messages) <= limit:
            return messages
        ids = [self._ids(p) for p in passages]  # each passage tokenised once for every cut tried below
        longest = max(map(len, ids), default=0)
        floor = min(PASSAGE_MIN_TOKENS, longest)

        def at(cap: int, q: str = query) -> list[dict[str, str]]:
            return build(q, [self._cut(p, i, cap) for p, i in zip(passages, ids)])

        if self._tokens(at(floor)) <= limit:  # the longest passage budget that fits
            lo, hi = floor, longest
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if self._tokens(at(mid)) <= limit else (lo, mid - 1)
            return at(lo)
        short_query = self.cut(query, QUERY_MIN_TOKENS)
        messages = at(floor, short_query)
        needed = self._tokens(messages)
        if needed <= limit:
            return messages
        raise PromptTooLong(
            f"a window of {len(passages)} passages needs {needed} prompt tokens even with each passage cut to "
            f"{floor} tokens and the query to {QUERY_MIN_TOKENS}, and the model's context (max_model_len) is "
            f"{self.context_tokens} tokens with {self.answer_tokens} kept for the answer: send fewer documents "
            f"per window or a shorter query")

    def _tokens(self, messages: list[dict[str, str]]) -> int:
        return len(prompt_token_ids(self.tokenizer, messages))


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
    """Chat messages asking the model to reason, then rank `passages` for `query` (cut by `truncate` to its
    passage budget and, when it knows the model's context, to fit it)."""
    def build(q: str, ps: Sequence[str]) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": listwise_user_message(q, ps)}]

    return build(query, passages) if truncate is None else truncate.fit(query, passages, build)


def assistant_turn(reasoning: str, order: Sequence[int]) -> str:
    """The target assistant text for SFT: `<think>reasoning</think><answer>[i] > [j] > …</answer>`."""
    from reasonrank.parsing import format_answer

    return f"<think>{reasoning}</think><answer>{format_answer(list(order))}</answer>"


def prompt_token_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The token ids of the prompt the model sees (`render`). The last windows' are remembered, so a window
    is tokenised once: where the truncator measures it, the engine that generates it finds its ids."""
    return list(_rendered_ids(tokenizer, tuple((m["role"], m["content"]) for m in messages)))


@lru_cache(maxsize=256)
def _rendered_ids(tokenizer: Any, messages: tuple[tuple[str, str], ...]) -> array:
    rendered = render(tokenizer, [{"role": role, "content": content} for role, content in messages])
    return array("l", tokenizer.encode(rendered, add_special_tokens=False))  # 8 bytes a token while remembered


def render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text the model sees: messages through the model's chat template, ready to generate. A
    trailing assistant message is the start of the model's turn, which it continues (an answer forced after
    cut-off reasoning, an empty reasoning in the direct mode)."""
    if messages and messages[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
