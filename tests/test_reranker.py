"""The in-process API, `reasonrank.Reranker`: built from arguments or a config file, one query, a batch, async,
every backend; and the scores it gives.

The OpenAI-compatible backend talks to a scripted model on 127.0.0.1 (the simulated teacher with no noise),
which ranks each window's passages by their relevance grades, so the ranking each call must get is known;
the transformers and vLLM backends load the tiny model, whose untrained output is real garbage that the
parser still turns into a complete ranking.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from reasonrank import Reranker
from reasonrank.engines.base import Engine
from reasonrank.strategies import StrategyConfig
from reasonrank.scores import ScoreUnavailable, relevance_score, window_votes
from reasonrank.strategies import window_spans
from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig
from reasonrank.types import WindowLog

REPO = Path(__file__).resolve().parent.parent
QUERY = "why do cats purr"
DOCS = [f"passage {i}: cats purr when content, and sometimes when stressed; fact number {i}." for i in range(10)]
GRADES = {7: 3, 5: 2, 2: 1, 6: 1}  # document index → relevance grade; the others 0
WINDOW = StrategyConfig(window_size=4, step=2, depth=8)


def expected_order(n: int, depth: int = 8) -> list[int]:
    order = list(range(n))
    for start, end in window_spans(min(depth, n), 4, 2):
        order[start:end] = sorted(order[start:end], key=lambda i: -GRADES.get(i, 0))
    return order


@pytest.fixture(scope="module")
def model_server():
    second = "how do bees dance"
    teacher = SimulatedTeacher({"q": QUERY, "q2": second}, {str(i): t for i, t in enumerate(DOCS)},
                               {"q": {str(i): g for i, g in GRADES.items()}, "q2": {"3": 3, "1": 1}},
                               SimulationConfig(noise=0.0, reasoning_words=4))
    with teacher:
        yield teacher


@pytest.fixture(scope="module")
def scripted(model_server):
    with Reranker.from_model("scripted", backend="openai", strategy=WINDOW, max_new_tokens=256,
                             base_url=model_server.base_url, max_retries=0) as reranker:
        yield reranker


def test_rerank_gives_index_score_and_document(scripted):
    docs = [DOCS[0], {"text": DOCS[1], "title": "kept"}, *DOCS[2:]]
    results = scripted.rerank(QUERY, docs, top_n=3)
    top = expected_order(10)[:3]
    assert [r.index for r in results] == top and top != [0, 1, 2]
    assert [r.document for r in results] == [docs[i] for i in top]
    assert [r.score for r in results] == [relevance_score(k) for k in range(3)]
    assert [r.index for r in scripted.rerank(QUERY, docs)] == expected_order(10)


def test_a_call_may_override_the_strategy(scripted):
    whole = scripted.rerank(QUERY, DOCS, strategy=StrategyConfig(name="one_shot", depth=10))
    assert [r.index for r in whole] == sorted(range(10), key=lambda i: -GRADES.get(i, 0))


def test_batch_and_async_forms_agree_with_one_query_at_a_time(scripted, model_server):
    served_before = model_server.outcomes["ok"]
    batch = scripted.rerank_batch([QUERY, "how do bees dance"], [DOCS, DOCS[:4]], top_n=2)
    assert [r.index for r in batch[0]] == expected_order(10)[:2]
    assert [r.index for r in batch[1]] == [3, 1]
    assert model_server.outcomes["ok"] - served_before == len(window_spans(8, 4, 2)) + 1

    async def both():
        return await asyncio.gather(scripted.arerank(QUERY, DOCS[:6]), scripted.arerank_batch([QUERY], [DOCS]))

    single, (batched,) = asyncio.run(both())
    assert [r.index for r in single] == expected_order(6)
    assert [r.index for r in batched] == expected_order(10)


def test_votes_score_what_the_model_said_in_each_window(scripted):
    results = scripted.rerank(QUERY, DOCS, score="votes")
    votes = {r.index: r.score for r in results}
    assert [r.index for r in results] == expected_order(10)  # the order is the ranking's, whatever the score
    assert votes[7] == 1.0  # first in every window it was in
    assert votes[8] == votes[9] == 0.0  # below depth 8: never seen by the model
    # Windows (4,8) → 7 5 6 4, (2,6) → 7 5 2 3, (0,4) → 7 5 0 1: 5 is second in all three (2/3); 6, 2 and 0
    # third in the one each was in (1/3); 4, 3 and 1 last (0).
    assert votes == {7: 1.0, 5: 2 / 3, 6: 1 / 3, 2: 1 / 3, 0: 1 / 3, 4: 0.0, 3: 0.0, 1: 0.0, 8: 0.0, 9: 0.0}


@pytest.mark.parametrize("name", ["tdpart", "parallel_blocks"])
def test_votes_from_strategies_that_rank_windows_in_rounds(scripted, name):
    results = scripted.rerank(QUERY, DOCS, strategy=StrategyConfig(name=name, window_size=4, depth=10), score="votes")
    votes = {r.index: r.score for r in results}
    assert votes[7] == 1.0  # the best document: first in every window it was in
    assert all(0.0 <= v <= 1.0 for v in votes.values()) and min(votes.values()) == 0.0


def _window(ranked):
    return WindowLog("q", "sliding_window", 0, 0, 1, 1, 0.0, True, ranked=ranked)


def test_window_votes_are_mean_normalised_borda_counts():
    votes = window_votes([_window(["a", "b", "c"]), _window(["c", "a"]), _window(["d"])])
    assert votes == {"a": (1.0 + 0.0) / 2, "b": 0.5, "c": (0.0 + 1.0) / 2, "d": 1.0}


class _RecordingEngine(Engine):
    """An engine that records the prompts it is asked for and answers none."""

    def __init__(self):
        self.asked: list = []

    async def agenerate(self, messages, params):
        self.asked.append(messages)
        raise AssertionError("no window should be asked for")


def test_votes_from_a_strategy_whose_steps_do_not_rank_are_refused_before_any_engine_call(scripted):
    engine = _RecordingEngine()
    elimination = StrategyConfig(name="iterative_elimination", depth=10)
    with pytest.raises(ScoreUnavailable, match="iterative_elimination"):
        asyncio.run(Reranker(engine).rank(QUERY, DOCS, strategy=elimination, score="votes"))
    assert engine.asked == []
    with pytest.raises(ScoreUnavailable, match="iterative_elimination"):
        scripted.rerank_batch([QUERY], [DOCS], strategy=elimination, score="votes")


# A recommendation item whose fields, `title` then `genre`, make each candidate's text (its `text` is the same
# filler for all); the positive is third. The scripted model knows those texts: the positive grade 1, the others 0.
HISTORY = "I watched Alien, then Aliens, then Predator."
ITEMS = [{"text": "filler", "title": "Up", "genre": "animation", "year": 2009},
         {"text": "filler", "title": "Cars", "genre": "animation", "year": 2006},
         {"text": "filler", "title": "Prometheus", "genre": "science fiction", "year": 2012},
         {"text": "filler", "title": "Amelie", "genre": "romance", "year": 2001}]
ITEM_TEXTS = ["title: Up\ngenre: animation", "title: Cars\ngenre: animation",
              "title: Prometheus\ngenre: science fiction", "title: Amelie\ngenre: romance"]


@pytest.fixture(scope="module")
def item_model():
    """The scripted model answering elimination prompts (tests/scripted_model.py), grading ITEM_TEXTS."""
    from reasonrank.data.ranking_bench import RankingItem
    from tests.scripted_model import EliminatingModel, ranking_bench_script

    item = RankingItem("rec", "Rec-Movie", HISTORY, tuple(ITEM_TEXTS), ITEM_TEXTS[2], "test")
    with EliminatingModel(*ranking_bench_script([item])) as model:
        yield model


def test_rank_fields_make_items_text_ranked_with_their_familys_prompt(item_model):
    """Items that are not passages, ranked by iterative elimination with the recommendation prompt: the model
    eliminates Up, Cars, Amelie in turn (the first non-positive shown each step), so the positive leads and the
    others follow latest eliminated first — neither the items' order nor its reverse."""
    elimination = StrategyConfig(name="iterative_elimination", depth=10)
    with Reranker.from_model("scripted", backend="openai", strategy=elimination, max_new_tokens=64,
                             base_url=item_model.base_url, max_retries=0) as reranker:
        results = reranker.rerank(HISTORY, ITEMS, rank_fields=["title", "genre"], family="recommendation")
        assert [r.index for r in results] == [2, 3, 1, 0]
        assert [r.document for r in results] == [ITEMS[i] for i in (2, 3, 1, 0)]  # the objects, whole
        assert item_model.prompt_families == {"rec": "recommendation"}
        with pytest.raises(ValueError, match="documents.1 has no field 'genre'"):
            reranker.rerank(HISTORY, [ITEMS[0], {"title": "Heat"}], rank_fields=["title", "genre"])
        with pytest.raises(ValueError, match="unknown family 'movies'"):
            reranker.rerank(HISTORY, ITEMS, rank_fields=["title"], family="movies")


def test_from_config_takes_a_serve_or_an_evaluate_config(model_server, tmp_path):
    for name, extra in (("serve-tiny.yaml", "max_windows_in_flight"), ("evaluate-tiny.yaml",
                                                                       "windows_in_flight_per_replica")):
        data = yaml.safe_load((REPO / "configs" / name).read_text())
        data.pop("engine", None)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        with Reranker.from_config(path, {"engine.backend": "openai", "engine.model": "scripted",
                                         "engine.base_url": model_server.base_url, "engine.max_retries": 0,
                                         "sampling.max_new_tokens": 256, "strategy.window_size": 4,
                                         "strategy.step": 2, "strategy.depth": 8, "strategy.name": "sliding_window",
                                         extra: 3}) as reranker:
            assert reranker.windows.max_in_flight == 3
            assert [r.index for r in reranker.rerank(QUERY, DOCS, top_n=2)] == expected_order(10)[:2]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_local_backends_rank_completely(backend, tiny_model_dir):
    with Reranker.from_model(str(tiny_model_dir), backend=backend, strategy=WINDOW, max_new_tokens=8,
                             dtype="float32", max_model_len=2048) as reranker:
        results = reranker.rerank(QUERY, DOCS)
        assert sorted(r.index for r in results) == list(range(10))  # garbage output, a complete ranking
        assert [r.document for r in results] == [DOCS[r.index] for r in results]
        (batched,) = reranker.rerank_batch([QUERY], [DOCS[:3]], top_n=1)
        assert len(batched) == 1 and batched[0].index in range(3)


_RANK_A_FEW = """
import asyncio, gc, sys
from reasonrank import Reranker
from reasonrank.strategies import StrategyConfig

base_url, ending = sys.argv[1], sys.argv[2]
docs = [f"passage {i} about cats" for i in range(6)]
queries = ["why do cats purr", "how do bees dance", "why do cats purr"]


def build():
    return Reranker.from_model("scripted", backend="openai", strategy=StrategyConfig(window_size=4, step=2, depth=6),
                               max_new_tokens=64, base_url=base_url, max_retries=0)


if ending == "async":
    async def main():
        async with build() as reranker:
            for query in queries:
                await reranker.arerank(query, docs)
    asyncio.run(main())
else:
    reranker = build()
    reranker.rerank_batch(queries, [docs] * len(queries))
    for query in queries:
        reranker.rerank(query, docs)
    if ending == "close":
        reranker.close()
    del reranker
gc.collect()
print("ranked", flush=True)
"""


@pytest.mark.parametrize("ending", ["close", "async"])
def test_a_closed_reranker_leaves_no_http_session_open(model_server, ending, tmp_path):
    """A script that ranks a few queries on the OpenAI-compatible backend and closes its reranker (or leaves
    its `async with`) ends with no "Unclosed client session" warning; one that does not close gets them,
    so the check sees what it looks for."""
    import subprocess
    import sys

    script = tmp_path / "rank_a_few.py"
    script.write_text(_RANK_A_FEW)

    def warnings_of(how: str) -> str:
        done = subprocess.run([sys.executable, "-W", "always::ResourceWarning", str(script), model_server.base_url,
                               how], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 0 and "ranked" in done.stdout, done.stderr
        return done.stderr

    assert "Unclosed client session" in warnings_of("open")  # the check catches a session left open
    closed = warnings_of(ending)
    assert "Unclosed" not in closed and "ResourceWarning" not in closed, closed
