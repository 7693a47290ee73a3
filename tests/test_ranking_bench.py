"""Ranking-bench: the loader on a small copy the test writes in the dataset's layout (nothing downloads here),
the RL rows made from its items (DRanker one per item, IRanker's independent single steps), and evaluation by
greedy iterative elimination: the positive's rank rule and MRR / NDCG / Hit per task."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reasonrank.config import DataConfig
from reasonrank.data.ranking_bench import (elimination_step_rows, load_ranking_bench, one_shot_rows,
                                           ranking_dataset)
from reasonrank.data.tables import write_records
from reasonrank.elimination_metrics import gt_rank, per_task_metrics
from reasonrank.engines.base import Engine, Generation, SamplingParams
from reasonrank.strategies import IterativeElimination, OneShot, rank_requests

REPO = Path(__file__).resolve().parent.parent
TRAIN = [
    {"problem": "I watched Alien, Heat.", "candidates": ["Up", "Cars", "Jaws", "Fargo"], "gt": "Jaws",
     "task_name": "Rec-Movie"},
    {"problem": "Which model for a haiku?", "candidates": ["LLaMA-3 (8b)", "Mixtral-8x7B", "Qwen-1.5 (72b)"],
     "gt": "Mixtral-8x7B", "task_name": "Router-Cost"},
]
TEST = [
    {"problem": "what is a comet", "candidates": ["rocks", "ice", "gas", "dust", "a comet is icy"],
     "gt": "a comet is icy", "task_name": "Passage-5"},
]


@pytest.fixture
def bench(tmp_path):
    """A local copy in the dataset's layout: direct/train.parquet and direct/test.jsonl."""
    write_records(tmp_path / "direct" / "train.parquet", TRAIN)
    write_records(tmp_path / "direct" / "test.jsonl", TEST)
    return str(tmp_path)


def test_loader_reads_the_local_layout_both_formats(bench):
    items = load_ranking_bench(bench, "direct")
    assert [(i.qid, i.split, i.task_name, i.gt) for i in items] == [
        ("train-0", "train", "Rec-Movie", "Jaws"), ("train-1", "train", "Router-Cost", "Mixtral-8x7B"),
        ("test-0", "test", "Passage-5", "a comet is icy")]
    assert items[0].candidates == ("Up", "Cars", "Jaws", "Fargo") and items[0].problem == "I watched Alien, Heat."
    assert items[0].gt_docid == "train-0#2" and items[2].gt_docid == "test-0#4"


def test_data_config_gives_a_dataset_to_rerank(bench):
    dataset = DataConfig(source="ranking_bench", path=bench, split="train").load()
    first, second = dataset.requests()
    assert (first.query.text, first.query.domain) == ("I watched Alien, Heat.", "Rec-Movie")
    assert [c.text for c in first.candidates] == ["Up", "Cars", "Jaws", "Fargo"]  # the item's order
    assert dataset.qrels["train-0"] == {"train-0#2": 1} and second.query.domain == "Router-Cost"


def test_loader_names_what_is_wrong(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="iterative/<split>.parquet"):
        load_ranking_bench(bench, "iterative")
    write_records(tmp_path / "bad" / "direct" / "train.jsonl", [{"problem": "p", "candidates": ["a", "b"], "gt": "a"}])
    with pytest.raises(ValueError, match="lacks column.*task_name"):
        load_ranking_bench(str(tmp_path / "bad"))
    write_records(tmp_path / "bad" / "direct" / "train.jsonl",
                  [{"problem": "p", "candidates": ["a", "b"], "gt": "z", "task_name": "Rec-Game"}])
    with pytest.raises(ValueError, match="gt among them"):
        load_ranking_bench(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="unknown Ranking-bench config"):
        load_ranking_bench(bench, "listwise")


# ---- RL rows ---------------------------------------------------------------------------------------------------

def test_one_shot_rows_are_one_per_item_with_the_positive(bench):
    rows = one_shot_rows(load_ranking_bench(bench))
    assert [(r.task, r.domain, r.passages, r.relevant_docids) for r in rows[:1]] == [
        ("one_shot_list", "Rec-Movie", ["Up", "Cars", "Jaws", "Fargo"], ["train-0#2"])]
    assert "candidate items" in rows[0].messages()[1]["content"]


def test_elimination_steps_are_k_negatives_plus_the_positive_seeded(bench):
    items = load_ranking_bench(bench)
    rows = elimination_step_rows(items, seed=3)
    assert [r.id for r in rows] == ["train-0-k1", "train-0-k2", "train-0-k3", "train-1-k1", "train-1-k2",
                                    "test-0-k1", "test-0-k2", "test-0-k3", "test-0-k4"]
    for r in rows:
        k = int(r.id.rsplit("-k", 1)[1])
        item = next(i for i in items if i.qid == r.qid)
        assert len(r.docids) == k + 1 and len(set(r.docids)) == k + 1  # k distinct negatives and the positive
        assert r.relevant_docids == [item.gt_docid] and r.docids.count(item.gt_docid) == 1
        assert r.passages == [item.candidates[int(d.split("#")[1])] for d in r.docids]
        assert r.task == "elimination_step" and r.domain == item.task_name
    assert elimination_step_rows(items, seed=3) == rows  # seeded: the same rows again
    assert elimination_step_rows(items[2:], seed=3) == rows[5:]  # an item's steps do not depend on the others
    many = [r for s in range(20) for r in elimination_step_rows(items, seed=s)]
    positions = {r.docids.index(r.relevant_docids[0]) for r in many if len(r.docids) == 5}
    assert positions == {0, 1, 2, 3, 4}  # the positive lands anywhere, not always first or last
    assert elimination_step_rows(items, seed=4) != rows


# ---- evaluation by greedy iterative elimination -------------------------------------------------------------

def test_gt_rank_rule():
    assert gt_rank(5, ["a", "b"], "z") == 1  # never eliminated
    assert gt_rank(5, ["z"], "z") == 5  # eliminated first: last
    assert gt_rank(5, ["a", "b", "z"], "z") == 3  # 5 - 3 + 1
    assert gt_rank(4, ["a", "b", "c"], "c") == 2


_SHOWN = re.compile(r"^\[(\d+)\] (.+)$", flags=re.M)


class ScriptedEliminator(Engine):
    """A test double for a model: eliminates, among the candidates the prompt shows, the first one in its
    query's script (candidate texts, in the order to eliminate them); records each query's system prompt."""

    def __init__(self, scripts: dict[str, list[str]]):
        self.scripts, self.systems = scripts, {}

    async def agenerate(self, messages, params: SamplingParams) -> list[Generation]:
        user = messages[-1]["content"]
        query = next(q for q in self.scripts if q in user)
        self.systems[query] = messages[0]["content"]
        shown = {text: k for k, text in _SHOWN.findall(user)}
        script = self.scripts[query]
        k = next(shown[t] for t in script if t in shown)
        return [Generation(f"<think>drop it</think><answer>[{k}]</answer>", prompt_tokens=10, completion_tokens=5,
                           latency_s=0.0)]


def test_greedy_elimination_ranks_the_positive_by_the_rule_and_scores_per_task(bench):
    items = load_ranking_bench(bench)
    scripts = {"I watched Alien": ["Up", "Jaws", "Cars"],  # the positive goes second of 4: rank 3
               "haiku": ["LLaMA-3 (8b)", "Qwen-1.5 (72b)"],  # never eliminated: rank 1
               "comet": ["a comet is icy", "rocks", "ice", "gas"]}  # eliminated first of 5: rank 5
    engine = ScriptedEliminator(scripts)
    dataset = ranking_dataset(items)
    ranked = rank_requests(engine, IterativeElimination(depth=None), dataset.requests(), SamplingParams())
    rankings = {r.qid: [c.docid for c in r.candidates] for r in ranked}
    for item in items:
        script = next(s for q, s in scripts.items() if q in item.problem)
        n = len(item.candidates)
        eliminated = [t for t in script if t in item.candidates][:n - 1]
        assert rankings[item.qid].index(item.gt_docid) + 1 == gt_rank(n, eliminated, item.gt)
    assert [rankings[i.qid].index(i.gt_docid) + 1 for i in items] == [3, 1, 5]
    assert "candidate item" in engine.systems["I watched Alien"]  # each family's own prompt
    assert "candidate model" in engine.systems["haiku"] and "passage" in engine.systems["comet"]

    metrics = per_task_metrics(rankings, dataset.qrels, {i.qid: i.task_name for i in items}, ks=(1, 3))
    assert metrics["Rec-Movie"] == pytest.approx({"queries": 1, "mrr": 1 / 3, "ndcg@1": 0.0, "ndcg@3": 0.5,
                                                  "hit@1": 0.0, "hit@3": 1.0})
    assert metrics["Router-Cost"]["mrr"] == 1.0 and metrics["Router-Cost"]["hit@1"] == 1.0
    assert metrics["Passage-5"] == pytest.approx({"queries": 1, "mrr": 0.2, "ndcg@1": 0.0, "ndcg@3": 0.0,
                                                  "hit@1": 0.0, "hit@3": 0.0})


def test_one_shot_ranks_with_each_familys_list_prompt(bench):
    items = load_ranking_bench(bench)
    engine = ScriptedEliminator({"I watched Alien": ["Up"], "haiku": ["Mixtral-8x7B"], "comet": ["ice"]})
    ranked = rank_requests(engine, OneShot(depth=None), ranking_dataset(items).requests(), SamplingParams())
    assert [len(r.candidates) for r in ranked] == [4, 3, 5]
    assert "candidate items" in engine.systems["I watched Alien"]
    assert "candidate models" in engine.systems["haiku"]
    assert "rank passages based on their relevance" in engine.systems["comet"]  # ReasonRank's listwise prompt


def test_grpo_makes_the_rl_task_rows_from_ranking_bench(bench):
    from jobs.grpo import load_rl_set
    from jobs.grpo_config import GRPOConfig
    from reasonrank.config import ConfigError, parse_config

    cfg = parse_config({"data": {"source": "ranking_bench", "path": bench, "split": "train"},
                        "rl_task": "elimination_step", "seed": 5}, GRPOConfig)
    rows = load_rl_set(cfg.rl_set, cfg.data, cfg.rollout.window_size, cfg.rl_task, cfg.seed)
    assert rows == elimination_step_rows(load_ranking_bench(bench, splits=["train"]), seed=5)
    assert {r.qid for r in rows} == {"train-0", "train-1"}  # data.split keeps the train items
    lists = load_rl_set(None, cfg.data, 20, "one_shot_list")
    assert [(r.id, r.task) for r in lists] == [("train-0", "one_shot_list"), ("train-1", "one_shot_list")]
    with pytest.raises(ConfigError, match="rl_task.*ranking_bench"):
        parse_config({"rl_task": "one_shot_list"}, GRPOConfig)


def test_evaluate_reports_each_task_and_compares_a_baseline_within_it(ray_cluster, tiny_model_dir, tmp_path):
    """The evaluate job on the tiny model (transformers engine) by iterative elimination: its per-task report is
    the run's own ranking scored per task, and the comparison with a baseline that ranks every positive first
    is made within each task."""
    from jobs.evaluate import EvaluateConfig, evaluate
    from reasonrank.config import load_config
    from reasonrank.data.trec import read_run, write_run

    more = [{**TRAIN[0], "problem": "I watched Brazil.", "gt": "Up"},
            {**TRAIN[1], "problem": "Which model for a proof?", "gt": "Qwen-1.5 (72b)"}]
    bench = tmp_path / "bench"
    write_records(bench / "direct" / "train.jsonl", TRAIN + more)  # two queries per task: a paired comparison
    items = load_ranking_bench(str(bench))
    baseline = tmp_path / "oracle.trec"
    write_run(baseline, {i.qid: [i.gt_docid] + [d for d in i.docids if d != i.gt_docid] for i in items}, tag="oracle")
    cfg = load_config(REPO / "configs" / "evaluate-tiny.yaml", EvaluateConfig, {
        "data.source": "ranking_bench", "data.path": str(bench), "data.split": "train", "engine.model": str(tiny_model_dir),
        "engine.backend": "transformers", "sampling.max_new_tokens": 8, "build_tiny_model": False,
        "strategy.name": "iterative_elimination", "output_dir": str(tmp_path / "out"), "baseline_run": str(baseline)})
    summary = evaluate(cfg)
    run = {q: sorted(scores, key=lambda d: -scores[d]) for q, scores in read_run(tmp_path / "out" / "run.trec").items()}
    qrels = {i.qid: {i.gt_docid: 1} for i in items}
    expected = per_task_metrics(run, qrels, {i.qid: i.task_name for i in items})
    per_task = json.loads((tmp_path / "out" / "metrics.json").read_text())["per_task"]
    assert sorted(per_task) == ["Rec-Movie", "Router-Cost"] and summary["per_task"] == per_task
    for task, values in per_task.items():
        assert {k: v for k, v in values.items() if k != "vs_baseline"} == pytest.approx(expected[task])
        mrr = values["vs_baseline"]["mrr"]
        assert values["queries"] == mrr["queries"] == 2
        assert mrr["difference"] == pytest.approx(expected[task]["mrr"] - 1.0)


# the positive never first (nor where eliminating the first shown each step would rank it); every candidate text
# its own, so the scripted model knows each one
SCRIPTED_ITEMS = [
    {"problem": "I played Portal, then Braid.", "candidates": ["Doom", "Fez", "Limbo", "Quake"], "gt": "Limbo",
     "task_name": "Rec-Game"},
    {"problem": "Which model should prove a lemma cheaply?",
     "candidates": ["model A, $0.9 per call", "model C, $0.5 per call", "model B, $0.1 per call"],
     "gt": "model B, $0.1 per call", "task_name": "Router-Cost"},
    {"problem": "what makes a glacier move", "candidates": ["ice is cold", "snow falls", "glaciers are blue",
                                                            "gravity pulls the ice downhill", "rocks erode"],
     "gt": "gravity pulls the ice downhill", "task_name": "Passage-5"},
]


@pytest.mark.parametrize("positive_out_at", [{}, {"test-0": 1, "test-1": 2, "test-2": 3}],
                         ids=["never-eliminated", "eliminated-at-step"])
def test_reasonrank_evaluate_scores_a_scripted_eliminator_by_the_gt_rank_rule(ray_cluster, tmp_path, positive_out_at):
    """`reasonrank evaluate` by iterative elimination, its engine the OpenAI-compatible backend against a scripted
    model on 127.0.0.1 (tests/scripted_model.py: a test double for a model server) that eliminates the lowest-
    graded candidate. Never eliminating the positive gives MRR 1.0 in every task; eliminating it at step s of N
    gives it rank N - s + 1, as the gt-rank rule says."""
    from typer.testing import CliRunner

    from jobs.cli import app
    from tests.scripted_model import EliminatingModel, elimination_order, ranking_bench_script

    bench = tmp_path / "bench"
    write_records(bench / "direct" / "test.jsonl", SCRIPTED_ITEMS)
    items = load_ranking_bench(str(bench))
    with EliminatingModel(*ranking_bench_script(items, positive_out_at)) as model:
        config = tmp_path / "evaluate.yaml"
        config.write_text(json.dumps({
            "data": {"source": "ranking_bench", "path": str(bench), "split": "test"},
            "engine": {"backend": "openai", "model": "scripted", "base_url": model.base_url, "max_retries": 0},
            "strategy": {"name": "iterative_elimination", "depth": 20}, "sampling": {"max_new_tokens": 64},
            "num_cpus_per_replica": 0.5, "output_dir": str(tmp_path / "out")}))
        result = CliRunner().invoke(app, ["evaluate", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert model.prompt_families == {"test-0": "recommendation", "test-1": "routing", "test-2": "passages"}
    ranks = {i.task_name: gt_rank(len(i.candidates), elimination_order(i, positive_out_at.get(i.qid)), i.gt_docid)
             for i in items}
    assert ranks == ({"Rec-Game": 1, "Router-Cost": 1, "Passage-5": 1} if not positive_out_at else
                     {"Rec-Game": 4, "Router-Cost": 2, "Passage-5": 3})
    per_task = json.loads((tmp_path / "out" / "metrics.json").read_text())["per_task"]
    assert {task: values["mrr"] for task, values in per_task.items()} == pytest.approx(
        {task: 1 / rank for task, rank in ranks.items()})
