"""Ranking-bench (`ulab-ai/Ranking-bench`), R1-Ranker's nine ranking sets: passages (Passage-5/7/9, MS MARCO),
LLM routing (Router-Performance/Balance/Cost) and recommendation (Rec-Movie/Music/Game).

Configs `direct` and `iterative`, splits `train` / `test`; each row has `problem` (the task text: a query, a
user's history, a routing question), `candidates` (a list of strings), `gt` (the one positive, one of the
candidates) and `task_name`. Read from the hub with `datasets`, or from a local copy in the same layout:
`<path>/<config>/<split>.parquet` or `.jsonl`.

Items become a `RetrievalDataset` (one query per item, its candidates as the first-stage list in their order,
`gt` the one relevant document; evaluation by iterative elimination reads it like any other dataset) and RL
rows: one DRanker row per item (`one_shot_rows`), and IRanker's independent single steps
(`elimination_step_rows`: for each item and k = 1..N-1, k random negatives plus `gt` at a random position,
as the release's `process_list` in examples/data_preprocess/dataset/data_rec/process_rec.py of
ulab-uiuc/R1-Ranker makes them, seeded here per item), or the starts of on-policy episodes
(`episode_start_rows`: each item's full list, `reasonrank.rl.episodes`).
"""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reasonrank.data.dataset import RetrievalDataset
from reasonrank.data.hub import rows
from reasonrank.data.training_sets import RLSample
from reasonrank.types import Query

log = logging.getLogger(__name__)

HUB = "ulab-ai/Ranking-bench"
CONFIGS = ("direct", "iterative")
SPLITS = ("train", "test")
COLUMNS = ("problem", "candidates", "gt", "task_name")
_LOCAL_FORMATS = (".parquet", ".jsonl")


@dataclass(frozen=True)
class RankingItem:
    qid: str  # "<split>-<row number>", unique over the splits read
    task_name: str  # Passage-5, Router-Balance, Rec-Movie, …
    problem: str
    candidates: tuple[str, ...]
    gt: str
    split: str

    @property
    def docids(self) -> list[str]:
        """One id per candidate, in the item's order."""
        return [f"{self.qid}#{j}" for j in range(len(self.candidates))]

    @property
    def gt_docid(self) -> str:
        return f"{self.qid}#{self.candidates.index(self.gt)}"


def load_ranking_bench(path: str | None = None, config: str = "direct", splits: Sequence[str] = SPLITS,
                       cache_dir: str | None = None) -> list[RankingItem]:
    """The items of `config`'s `splits`: from the local copy at `path` (a split it lacks is skipped), or from
    the hub when `path` is None."""
    if config not in CONFIGS:
        raise ValueError(f"unknown Ranking-bench config {config!r}; configs: {', '.join(CONFIGS)}")
    items: list[RankingItem] = []
    for split in splits:
        source, local_file = (path, _local_file(path, config, split)) if path is not None else (HUB, "")
        if local_file is None:
            log.info("Ranking-bench %s: no %s split under %s", config, split, path)
            continue
        items.extend(_items(rows(source, local_file, config, split, cache_dir), split, f"{source}/{local_file}"))
    if not items:
        raise FileNotFoundError(f"{path}: no Ranking-bench rows; expected {config}/<split>.parquet or .jsonl "
                                f"for splits {', '.join(splits)}")
    log.info("Ranking-bench %s: %d items over %s", config, len(items), ", ".join(sorted({i.task_name for i in items})))
    return items


def _local_file(path: str, config: str, split: str) -> str | None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a folder (a local copy of Ranking-bench: <config>/<split>.parquet)")
    return next((f"{config}/{split}{ext}" for ext in _LOCAL_FORMATS
                 if os.path.isfile(os.path.join(path, config, split + ext))), None)


def _items(records: Iterable[dict], split: str, where: str) -> list[RankingItem]:
    out = []
    for number, r in enumerate(records):
        if missing := [c for c in COLUMNS if c not in r]:
            raise ValueError(f"{where}: row {number} lacks column(s) {', '.join(missing)}")
        candidates = tuple(str(c) for c in r["candidates"])
        if len(candidates) < 2 or r["gt"] not in candidates:
            raise ValueError(f"{where}: row {number} needs at least 2 candidates with gt among them "
                             f"({len(candidates)} candidates, gt {r['gt']!r})")
        out.append(RankingItem(f"{split}-{number}", str(r["task_name"]), str(r["problem"]), candidates,
                               str(r["gt"]), split))
    return out


def ranking_dataset(items: Sequence[RankingItem]) -> RetrievalDataset:
    """The items as a dataset to rerank: each item a query (domain = its task name) whose first-stage list is
    its candidates in their order, with `gt` the one relevant document."""
    queries = [Query(i.qid, i.problem, i.task_name) for i in items]
    corpus = {d: text for i in items for d, text in zip(i.docids, i.candidates)}
    qrels = {i.qid: {i.gt_docid: 1} for i in items}
    run = {i.qid: {d: float(len(i.docids) - j) for j, d in enumerate(i.docids)} for i in items}
    return RetrievalDataset(queries, corpus, qrels, run, {i.qid: i.split for i in items})


def one_shot_rows(items: Sequence[RankingItem]) -> list[RLSample]:
    """DRanker's RL rows: one per item, every candidate in the item's order."""
    return [RLSample(i.qid, i.qid, i.task_name, i.problem, i.docids, list(i.candidates), [], [i.gt_docid],
                     task="one_shot_list") for i in items]


def elimination_step_rows(items: Sequence[RankingItem], seed: int = 0) -> list[RLSample]:
    """IRanker's independent single steps: for each item with N candidates and each k = 1..N-1, a row of k
    negatives drawn at random plus `gt` at a random position. Seeded per item (`seed`, qid), so an item's
    steps do not depend on which other items are read."""
    out = []
    for item in items:
        rng = random.Random(f"{seed}/{item.qid}")
        gt = item.candidates.index(item.gt)
        negatives = [j for j in range(len(item.candidates)) if j != gt]
        for k in range(1, len(item.candidates)):
            shown = rng.sample(negatives, k)
            shown.insert(rng.randint(0, k), gt)
            out.append(RLSample(f"{item.qid}-k{k}", item.qid, item.task_name, item.problem,
                                [item.docids[j] for j in shown], [item.candidates[j] for j in shown], [],
                                [item.gt_docid], task="elimination_step"))
    return out


def episode_start_rows(items: Sequence[RankingItem]) -> list[RLSample]:
    """Where IRanker's on-policy episodes start (`reasonrank.rl.episodes`): one elimination step per item over
    every candidate, in the item's order (the order iterative elimination evaluates in)."""
    return [RLSample(i.qid, i.qid, i.task_name, i.problem, i.docids, list(i.candidates), [], [i.gt_docid],
                     task="elimination_step") for i in items]


def rl_rows(items: Sequence[RankingItem], task: str, seed: int = 0) -> list[RLSample]:
    """The RL rows of `task` (one_shot_list, elimination_step, or elimination_episode: the episodes' starts)
    made from `items`."""
    if task == "one_shot_list":
        return one_shot_rows(items)
    if task == "elimination_step":
        return elimination_step_rows(items, seed)
    if task == "elimination_episode":
        return episode_start_rows(items)
    raise ValueError(f"Ranking-bench items make one_shot_list, elimination_step or elimination_episode rows, "
                     f"not {task!r}")
