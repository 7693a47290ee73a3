"""A demo-scale Ranking-bench of R1-Ranker's three families, generated deterministically (no downloads).

Made-up names (no model knows them beforehand) in six tasks, two per family, 5 to 8 candidates, one positive,
shuffled to a random position. In each task the positive is the one candidate that a stated rule picks from
the text, a rule a tiny model can learn (one salient word shared with the problem, or two):

- Passage-5, Passage-7: the question asks about one entity (its last word, "What color is Zorvium?"); the
  positive states a fact about that entity, every other candidate a fact about another entity.
- Rec-Game, Rec-Movie: the user's history lists titles with their genre, most in one genre; the positive is
  the one candidate of that genre, every other candidate of another genre.
- Router-Performance: the question names its topic ("Math question: …"); each candidate model is "strong at"
  one topic, and the positive is the one strong at the question's.
- Router-Cost: two candidate models are strong at the question's topic, one at low cost and one at high cost;
  the positive is the low-cost one.

Written in the dataset's own layout (`reasonrank.data.ranking_bench`): `<dir>/<config>/<split>.parquet` with
the columns problem, candidates, gt, task_name, for both configs (`direct` and `iterative` hold the same rows:
the project's prompts come from the family, not from the row). Items are interleaved over the tasks, so the
first rows of a split (the GRPO job's fixed evaluation set) hold every family.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reasonrank.data.demo import made_up_word
from reasonrank.data.ranking_bench import CONFIGS
from reasonrank.data.tables import write_records

TRAIN_PER_TASK, TEST_PER_TASK = 150, 50  # 300 train and 100 test items per family

_COLORS = ("red", "green", "blue", "violet", "amber", "grey", "white", "black")
_QUESTIONS = ("What color is pure {e}?", "Who first isolated {e}?", "What is the melting point of {e}?",
              "Which town mines {e}?")
_FACTS = ("Pure {e} is {color} in color.", "{e} was first isolated by Dr. {name}.",
          "{e} melts at {number} degrees.", "The town of {place} mines {e}.")

_GENRES = {
    "Rec-Game": ("played", ("puzzle", "racing", "strategy", "shooter", "farming", "horror", "sports", "rhythm",
                            "platform")),
    "Rec-Movie": ("watched", ("comedy", "western", "horror", "romance", "musical", "documentary", "thriller",
                              "animation", "war")),
}
_TOPICS = {
    "math": "prove that the {w} series converges.", "code": "fix the bug in the {w} parser.",
    "law": "is the {w} contract binding?", "medicine": "what dose of {w} is safe for a child?",
    "poetry": "write a sonnet about {w}.", "chemistry": "balance the {w} reaction.",
    "history": "when did the {w} empire fall?", "finance": "what is the {w} bond worth?",
}


def _names(rng: random.Random, count: int, parts: int = 2) -> list[str]:
    """`count` different capitalised made-up names."""
    names: list[str] = []
    while len(names) < count:
        name = made_up_word(rng, parts).capitalize()
        if name not in names:
            names.append(name)
    return names


def _passage(rng: random.Random, size: int) -> tuple[str, str, list[str]]:
    """(question, positive, negatives): facts about other entities, of any kind."""
    entities = [e + rng.choice(("ium", "ite", "ase")) for e in _names(rng, size)]

    def fact(entity: str, kind: int) -> str:
        return _FACTS[kind].format(e=entity, color=rng.choice(_COLORS), name=made_up_word(rng, 2).capitalize(),
                                   number=rng.randint(40, 3000), place=made_up_word(rng, 2).capitalize())

    asked = rng.randrange(len(_QUESTIONS))
    question, positive = _QUESTIONS[asked].format(e=entities[0]), fact(entities[0], asked)
    return question, positive, [fact(e, rng.randrange(len(_FACTS))) for e in entities[1:]]


def _recommendation(task: str) -> Callable[[random.Random, int], tuple[str, str, list[str]]]:
    verb, genres = _GENRES[task]

    def make(rng: random.Random, size: int) -> tuple[str, str, list[str]]:
        """(history, positive, negatives): the history mostly in one genre, the positive of that genre."""
        liked, *others = rng.sample(genres, size)
        history_length = rng.randint(3, 5)
        history_genres = [liked] * (history_length - 1) + [rng.choice([g for g in genres if g != liked])]
        rng.shuffle(history_genres)
        titles = _names(rng, history_length + size)
        history = "; ".join(f"{t} ({g})" for t, g in zip(titles, history_genres))
        candidates = [f"{t} ({g})" for t, g in zip(titles[history_length:], [liked, *others])]
        return f"The user {verb}: {history}.", candidates[0], candidates[1:]

    return make


def _model(name: str, topic: str, cost: str) -> str:
    return f"{name}: strong at {topic}, {cost} cost."


def _router(cheapest_of_two: bool) -> Callable[[random.Random, int], tuple[str, str, list[str]]]:
    def make(rng: random.Random, size: int) -> tuple[str, str, list[str]]:
        """(question, positive, negatives): Router-Performance's positive is the one model strong at the
        question's topic; Router-Cost's the low-cost one of the two strong at it."""
        topic, *others = rng.sample(list(_TOPICS), size - 1 if cheapest_of_two else size)
        names = [f"{n}-{rng.randint(1, 9)}" for n in _names(rng, size)]
        question = f"{topic.capitalize()} question: {_TOPICS[topic].format(w=made_up_word(rng, 2).capitalize())}"
        positive = _model(names[0], topic, "low" if cheapest_of_two else rng.choice(("low", "high")))
        negatives = [_model(n, t, rng.choice(("low", "high"))) for n, t in zip(names[1:], others)]
        if cheapest_of_two:
            negatives.append(_model(names[-1], topic, "high"))
        return question, positive, negatives

    return make


@dataclass(frozen=True)
class _Task:
    name: str
    candidates: int
    make: Callable[[random.Random, int], tuple[str, str, list[str]]]


TASKS = (
    _Task("Passage-5", 5, _passage), _Task("Rec-Game", 8, _recommendation("Rec-Game")),
    _Task("Router-Performance", 5, _router(False)), _Task("Passage-7", 7, _passage),
    _Task("Rec-Movie", 6, _recommendation("Rec-Movie")), _Task("Router-Cost", 6, _router(True)),
)


def _rows(rng: random.Random, per_task: int) -> Iterator[dict]:
    for _ in range(per_task):
        for task in TASKS:
            problem, positive, negatives = task.make(rng, task.candidates)
            candidates = [positive, *negatives]
            rng.shuffle(candidates)
            yield {"problem": problem, "candidates": candidates, "gt": positive, "task_name": task.name}


def write_ranking_bench_demo(out_dir: str | Path, seed: int = 0, train_per_task: int = TRAIN_PER_TASK,
                             test_per_task: int = TEST_PER_TASK) -> Path:
    """Generate the set into `out_dir` (same seed, same files); returns `out_dir`."""
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    splits = {"train": list(_rows(rng, train_per_task)), "test": list(_rows(rng, test_per_task))}
    for config in CONFIGS:
        for split, rows in splits.items():
            write_records(out_dir / config / f"{split}.parquet", rows)
    return out_dir


def ensure_ranking_bench_demo(out_dir: str | Path, seed: int = 0) -> Path:
    """The set in `out_dir`, generated there first when a file of it is missing."""
    out_dir = Path(out_dir)
    files = [out_dir / config / f"{split}.parquet" for config in CONFIGS for split in ("train", "test")]
    return out_dir if all(f.is_file() for f in files) else write_ranking_bench_demo(out_dir, seed)

