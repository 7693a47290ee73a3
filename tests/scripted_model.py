"""A scripted model behind an OpenAI-compatible server on 127.0.0.1, and the rankings it makes known in advance.

The server is the simulated teacher with no noise and no faults (reasonrank/teacher/simulated.py, a test double
for a real model server): it ranks every window's passages by their relevance grades (ties in the window's
order), each answer after a fixed delay. A service whose engine is the OpenAI-compatible backend pointed at it
is cheap to start (no model in the replica), and the ranking each request must get is known — and far from
the documents' order.

`EliminatingModel` is the same server answering R1-Ranker's elimination prompts too (every family's): each
step it names the lowest-graded candidate shown, the first of equals. `ranking_bench_script` grades
Ranking-bench items for it so that the positive is never eliminated, or is eliminated at a chosen step.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from reasonrank.data.ranking_bench import RankingItem
from reasonrank.strategies import window_spans
from reasonrank.tasks.families import FAMILIES
from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig, _normalise

QUERY = "why do cats purr"
# A request's documents; the first DEPTH are ranked in three windows, one after another (three model answers)
_ALL = [f"passage {i}: cats purr when content, and sometimes when stressed; fact number {i}." for i in range(20)]
DOCS = _ALL[:10]
MORE_DOCS = _ALL[10:]  # ten more the model knows, all grade 0: `DOCS + MORE_DOCS` is a twenty-document request
GRADES = {7: 3, 5: 2, 2: 1, 6: 1}  # document index → relevance grade; the others 0
WINDOW, STEP, DEPTH = 4, 2, 8
# Cohere's rank_fields: objects whose `title` and `body`, in that order, make the text ranked (their `text` is
# the same filler for all); the scripted model knows those texts, graded as the plain documents are.
FIELDED = [{"text": "filler", "title": f"title {i}", "body": doc} for i, doc in enumerate(DOCS)]
FIELDED_TEXTS = {f"fielded-{i}": f"title: title {i}\nbody: {doc}" for i, doc in enumerate(DOCS)}


def expected_order(n: int, window: int = WINDOW, step: int = STEP, depth: int = DEPTH) -> list[int]:
    """What a sliding window over a model that sorts each window by grade (stable) makes of documents 0…n-1."""
    order = list(range(n))
    for start, end in window_spans(min(depth, n), window, step):
        order[start:end] = sorted(order[start:end], key=lambda i: -GRADES.get(i, 0))
    return order


def scripted_model(latency_s: float) -> SimulatedTeacher:
    """The server (not started: use it as a context manager), answering each window after `latency_s`."""
    return SimulatedTeacher({"q": QUERY}, {**{str(i): t for i, t in enumerate(_ALL)}, **FIELDED_TEXTS},
                            {"q": {**{str(i): g for i, g in GRADES.items()},
                                   **{f"fielded-{i}": g for i, g in GRADES.items()}}},
                            SimulationConfig(noise=0.0, latency_s=latency_s, reasoning_words=8))


def scripted_serve_config(base_url: str, **sections: Any) -> dict[str, Any]:
    """A serve config (as its YAML would read) whose replicas rank with the scripted model at `base_url` through
    the OpenAI-compatible backend, by the sliding window `expected_order` assumes; `sections` add or replace
    keys."""
    return {"model_name": "scripted",
            "engine": {"backend": "openai", "model": "scripted-ranker", "base_url": base_url, "max_retries": 0},
            "strategy": {"name": "sliding_window", "window_size": WINDOW, "step": STEP, "depth": DEPTH},
            "sampling": {"max_new_tokens": 512}, "limits": {"request_timeout_s": 60}, **sections}


def fixed_replicas(replicas: int) -> dict[str, Any]:
    """The `deployment` section of a service with exactly `replicas` model replicas, quick to notice one dead."""
    return {"autoscaling": {"min_replicas": replicas, "max_replicas": replicas}, "resources": {"num_cpus": 0.5},
            "health_check_period_s": 2, "graceful_shutdown_timeout_s": 30}


# the system prompt of each family's elimination step → the family
_ELIMINATION_SYSTEMS = {f.elimination_messages("", ["x"])[0]["content"]: f.name for f in FAMILIES.values()}
_SHOWN = re.compile(r"\n\[(\d+)\] ")


class EliminatingModel(SimulatedTeacher):
    """The scripted model answering elimination prompts as well (never with noise): it finds the query whose text
    the prompt holds, grades each candidate shown from `qrels` and names the lowest-graded one, the first of
    equals. Records which family's prompt each query was asked with (`prompt_families`: qid → family)."""

    def __init__(self, queries: Mapping[str, str], corpus: Mapping[str, str],
                 qrels: Mapping[str, Mapping[str, int]], config: SimulationConfig | None = None):
        super().__init__(queries, corpus, qrels, config or SimulationConfig(noise=0.0, reasoning_words=8))
        self.prompt_families: dict[str, str] = {}

    def _answer(self, messages: list[dict[str, str]], digest: str) -> tuple[str, str]:
        family = _ELIMINATION_SYSTEMS.get(messages[0]["content"])
        if family is None:
            return super()._answer(messages, digest)
        user = messages[-1]["content"]
        shown = _normalise(user)
        known = [text for text in self._qid_by_text if text in shown]
        if not known:
            raise ValueError("the elimination prompt holds no query this model knows")
        qid = self._qid_by_text[max(known, key=len)]
        self.prompt_families[qid] = family
        pieces = _SHOWN.split("\n" + user)[1:]
        candidates = [text.split("\n\n")[0].strip() for text in pieces[1::2]]
        grades = [self._grade(qid, text) for text in candidates]
        k = grades.index(min(grades)) + 1
        return f"Of the {len(candidates)} shown, [{k}] fits least.", f"<answer>[{k}]</answer>"


def ranking_bench_script(items: Sequence[RankingItem], positive_out_at: Mapping[str, int] | None = None,
                         ) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """The queries, corpus and grades an `EliminatingModel` needs to eliminate `items`' candidates in a known
    order. By default the positive grades 1 and the others 0: the other candidates go first to last, the
    positive is never eliminated (rank 1). An item whose qid maps to s in `positive_out_at`: its first s-1
    other candidates grade 0, the positive 1, the rest 2: they go, then the positive (its rank N - s + 1)."""
    out_at = positive_out_at or {}
    queries = {i.qid: i.problem for i in items}
    corpus = {d: text for i in items for d, text in zip(i.docids, i.candidates)}
    qrels = {}
    for item in items:
        others = [d for d in item.docids if d != item.gt_docid]
        before = out_at.get(item.qid, len(others) + 1) - 1
        qrels[item.qid] = {item.gt_docid: 1, **{d: 0 if j < before else 2 for j, d in enumerate(others)}}
    return queries, corpus, qrels


def elimination_order(item: RankingItem, positive_out_at: int | None = None) -> list[str]:
    """The docids `EliminatingModel` eliminates, in order, under `ranking_bench_script`'s grades for `item`."""
    others = [d for d in item.docids if d != item.gt_docid]
    if positive_out_at is None:
        return others
    before = positive_out_at - 1
    return others[:before] + [item.gt_docid] + others[before:][:len(others) - before - 1]
