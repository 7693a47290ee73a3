"""R1-Ranker's cold start for a tiny model: an SFT set that teaches the answer FORMAT and nothing of the ranking.

R1-Ranker runs RL from an instruct model, which already answers `<think>…</think><answer>…</answer>` when
asked. The tiny model starts from random weights and needs the format first; but SFT on the right answers
would teach the ranking itself and leave RL nothing to find. So every target here answers at random:

- an IRanker step (`elimination_step` rows: the independent single steps of every list size) eliminates a
  candidate drawn uniformly from those shown, the positive as often as any other:
  `<think>Least likely: [k] <candidate k's text></think><answer>[k]</answer>`;
- a DRanker row (`one_shot_list`, with `one_shot`) puts a candidate drawn uniformly first, then the others in
  their list order: `<think>Most likely: [a] <candidate a's text></think><answer>[a] > [1] > [2] > …</answer>`
  ([a] left out of the tail). A uniformly random permutation would teach the format no better and is harder
  to write: after 300 steps on it the tiny model repeated one id through the whole answer when greedy.

The reasoning quotes the chosen candidate as the prompt shows it, so the model learns to look at the candidate
its answer names. The prompts are the tasks' own (the family prompts), as GRPO and evaluation build them.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from reasonrank.data.ranking_bench import RankingItem, elimination_step_rows, one_shot_rows
from reasonrank.data.training_sets import RLSample, SFTSample
from reasonrank.parsing import format_answer
from reasonrank.prompt import rewrite_brackets


def random_target(row: RLSample, rng: random.Random) -> str:
    """A well-formed answer to `row`'s task that names candidates at random."""
    if row.task == "elimination_step":
        k = rng.randrange(len(row.docids))
        return f"<think>Least likely: [{k + 1}] {rewrite_brackets(row.passages[k])}</think><answer>[{k + 1}]</answer>"
    if row.task == "one_shot_list":
        first = rng.randrange(len(row.docids))
        order = [first] + [j for j in range(len(row.docids)) if j != first]
        return (f"<think>Most likely: [{first + 1}] {rewrite_brackets(row.passages[first])}</think>"
                f"<answer>{format_answer(order)}</answer>")
    raise ValueError(f"row {row.id}: no cold-start answer for task {row.task!r}")


def cold_start_samples(items: Sequence[RankingItem], *, seed: int = 0, one_shot: bool = True) -> list[SFTSample]:
    """Every elimination step of `items` (drawn with `seed`, as the GRPO job draws them) and, with `one_shot`,
    one list row per item, each answered at random; the same list for the same seed."""
    rng = random.Random(seed)
    rows = elimination_step_rows(items, seed) + (one_shot_rows(items) if one_shot else [])
    return [SFTSample(f"{row.id}-{row.task}", row.qid, row.domain,
                      row.messages() + [{"role": "assistant", "content": random_target(row, rng)}]) for row in rows]
