"""Prompts for R1-Ranker's three families of ranking problems (Feng et al., 2025, "R1-Ranker: Teaching LLM
Rankers to Reason"): passages for a query, items for a user's history (recommendation), language models for
a question (routing). For each, a one-shot list prompt (DRanker: rank every candidate, `[2] > [1] > …`) and
an elimination prompt (IRanker: name the single least likely candidate, `[k]`).

Passages use the project's own prompts unchanged (`reasonrank.prompt.listwise_messages`,
`reasonrank.elimination.elimination_messages`); the other families say what their candidates and context
are. In every family candidates are numbered `[1]..[n]` and `[k]` inside the context or a candidate is
rewritten to `(k)`. The release writes its prompts into the dataset's `problem` text
(examples/data_preprocess/dataset/data_rec/process_rec.py, data_router/process_router.py,
data_ms_marco/process_passage.py in ulab-uiuc/R1-Ranker) and has answers name candidates by their text;
here they name identifiers, so one parser reads every family.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from reasonrank.elimination import elimination_messages
from reasonrank.prompt import PassageTruncator, listwise_messages, rewrite_brackets

_FORMAT = ("The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
           "respectively, i.e., <think> reasoning process here </think> <answer> {example} </answer>.")


@dataclass(frozen=True)
class Family:
    name: str
    candidates: str  # what the candidates are, plural ("candidate items")
    candidate: str  # singular ("candidate item")
    context_label: str  # the heading of the row's `query` text ("The user's history")
    role: str  # what the assistant does, for the system prompt
    rank_by: str  # the order the one-shot list asks for
    least: str  # the candidate an elimination step asks for

    def list_messages(self, context: str, candidates: Sequence[str],
                      truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
        """Rank every candidate (DRanker)."""
        if self.name == PASSAGES:
            return listwise_messages(context, candidates, truncate)
        system = (f"You are RankLLM, an intelligent assistant that {self.role}. You first think about the "
                  f"reasoning process in the mind and then provide the answer (i.e., the ranked list of "
                  f"{self.candidates}). " + _FORMAT.format(example="answer here"))

        def user(c: str, cands: Sequence[str]) -> str:
            n = len(cands)
            return (f"I will provide you with {n} {self.candidates}, each indicated by a numerical identifier []. "
                    f"Rank them by {self.rank_by}.\n\n{self._context_and_list(c, cands)}\n"
                    f"Rank the {n} {self.candidates} above by {self.rank_by}. All the {self.candidates} should be "
                    f"included and listed using identifiers, in descending order. The format of the answer "
                    f"should be [] > [], e.g., [2] > [1].")

        return self._messages(system, user, context, candidates, truncate)

    def elimination_messages(self, context: str, candidates: Sequence[str],
                             truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
        """Name the single least likely candidate (one IRanker step)."""
        if self.name == PASSAGES:
            return elimination_messages(context, candidates, truncate)
        system = (f"You are RankLLM, an intelligent assistant that {self.role}, one elimination at a time. You "
                  f"first think about the reasoning process in the mind and then name the single "
                  f"{self.candidate} that {self.least}. " + _FORMAT.format(example="[k]"))

        def user(c: str, cands: Sequence[str]) -> str:
            return (f"I will provide you with {len(cands)} {self.candidates}, each indicated by a numerical "
                    f"identifier []. Find the {self.candidate} that {self.least}.\n\n"
                    f"{self._context_and_list(c, cands)}\n"
                    f"Name the ONE {self.candidate} above that {self.least}, by its identifier only, e.g., [3].")

        return self._messages(system, user, context, candidates, truncate)

    def _context_and_list(self, context: str, candidates: Sequence[str]) -> str:
        body = "".join(f"[{i}] {rewrite_brackets(c)}\n" for i, c in enumerate(candidates, start=1))
        return f"{self.context_label}:\n{rewrite_brackets(context)}\n\n{self.candidates.capitalize()}:\n{body}"

    @staticmethod
    def _messages(system: str, user: Callable[[str, Sequence[str]], str], context: str, candidates: Sequence[str],
                  truncate: PassageTruncator | None) -> list[dict[str, str]]:
        def build(c: str, cands: Sequence[str]) -> list[dict[str, str]]:
            return [{"role": "system", "content": system}, {"role": "user", "content": user(c, cands)}]

        return build(context, candidates) if truncate is None else truncate.fit(context, candidates, build)


FamilyName = Literal["passages", "recommendation", "routing"]  # what a request or a caller may name
PASSAGES, RECOMMENDATION, ROUTING = get_args(FamilyName)

FAMILIES = {
    PASSAGES: Family(PASSAGES, "passages", "passage", "Search query",
                     "ranks passages by their relevance to a query", "their relevance to the search query",
                     "is least relevant to the search query"),
    RECOMMENDATION: Family(
        RECOMMENDATION, "candidate items", "candidate item", "The user's history, in order",
        "recommends items to a user from the user's history",
        "how likely the user is to choose each one next, given the user's history",
        "the user is least likely to choose next"),
    ROUTING: Family(
        ROUTING, "candidate models", "candidate model", "The question",
        "routes a question to the language model best suited to answer it, weighing answer quality against cost",
        "how well each model suits the question, weighing the quality of its answer against its cost",
        "is least suited to the question, weighing the quality of its answer against its cost"),
}

# Ranking-bench's task names (`task_name`: Passage-5, Router-Balance, Rec-Movie, …) start with their family.
_TASK_NAME_PREFIXES = {"Rec-": RECOMMENDATION, "Router-": ROUTING, "Passage-": PASSAGES}


def family_of(domain: str) -> Family:
    """The family `domain` names (`FamilyName`: what a caller asks for), or the family of a row whose `domain` is
    a Ranking-bench task name; passages for any other domain (the ReasonRank sets' domains: biology, code, …)."""
    if domain in FAMILIES:
        return FAMILIES[domain]
    for prefix, family in _TASK_NAME_PREFIXES.items():
        if domain.startswith(prefix):
            return FAMILIES[family]
    return FAMILIES[PASSAGES]
