"""The pointwise relevance prompt the teacher answers for each (query, passage), and its verdict parser.

The teacher is given the query's gold answer when the source has one: ReasonRank found its relevance
judgements more accurate that way (a passage is relevant when it helps reach that answer). The listwise
prompt is the reranker's own (`reasonrank.prompt.listwise_messages`), so the SFT set trains on the text
the reranker will see.
"""
from __future__ import annotations

import re

from reasonrank.parsing import extract_answer
from reasonrank.prompt import rewrite_brackets

POINTWISE_SYSTEM_PROMPT = (
    "You are an expert relevance judge for a search engine. Given a search query and a passage, decide "
    "whether the passage is relevant: whether it provides knowledge (facts, theorems, methods, code, "
    "reasoning) that helps answer the query. First think about it inside <think> </think>, then give your "
    "verdict inside <answer> </answer> as exactly Yes or No."
)

# Markers of the user message; the simulated teacher reads prompts back by them.
QUERY_MARK = "Search Query: "
ANSWER_MARK = "Reference Answer: "
PASSAGE_MARK = "Passage: "
QUESTION = "Is the passage relevant to the search query? Answer Yes or No."
ANSWER_HINT = ("The reference answer is the known correct answer to the query; judge the passage relevant "
               "when it helps derive or support that answer.")

_YES = {"yes", "relevant", "true"}
_NO = {"no", "not", "irrelevant", "false"}
_FIRST_WORD = re.compile(r"[a-z]+")


def pointwise_user_message(query: str, passage: str, answer: str | None = None) -> str:
    parts = [f"{QUERY_MARK}{rewrite_brackets(query)}"]
    if answer:
        parts.append(f"{ANSWER_MARK}{rewrite_brackets(answer)}")
    parts.append(f"{PASSAGE_MARK}{rewrite_brackets(passage)}")
    parts.append(f"{ANSWER_HINT} {QUESTION}" if answer else QUESTION)
    return "\n\n".join(parts)


def pointwise_messages(query: str, passage: str, answer: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking the teacher whether `passage` is relevant to `query` (given `answer` if any)."""
    return [
        {"role": "system", "content": POINTWISE_SYSTEM_PROMPT},
        {"role": "user", "content": pointwise_user_message(query, passage, answer)},
    ]


def parse_relevance(response: str) -> bool | None:
    """The teacher's verdict: True (relevant), False, or None when no Yes/No can be read.

    The verdict is the `<answer>` section, or, when there is none, the text after the (closed) reasoning;
    its first word decides (Yes/Relevant/True vs No/Not/Irrelevant/False).
    """
    answer = extract_answer(response)
    if answer is None:
        if "<think>" in response and "</think>" not in response:
            return None  # reasoning cut off: never read a verdict out of it
        answer = response.rsplit("</think>", 1)[-1]
    word = _FIRST_WORD.search(answer.lower())
    if word is None:
        return None
    if word.group() in _YES:
        return True
    if word.group() in _NO:
        return False
    return None
