"""An SFT set built straight from the demo dataset's labels (no teacher), for the local demo and tests.

Each training query gives listwise windows over its first-stage candidates: the windows the sliding-window
strategy visits (same size and step as evaluation), plus shuffled windows holding all of the query's relevant
candidates among others, so that relevant passages are not rare and position carries no signal. The target
order puts the relevant passages first (by grade, then list position) and keeps the others in their list
order. The templated reasoning quotes each passage in turn and judges it, a pattern a tiny model can learn:
restating a passage next to its verdict keeps the judgement local (a bare verdict would have to look passage
[k] up in the prompt, which the tiny model never learned); a closing recap names the ids judged relevant, and
the answer lists them, then the rest.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from reasonrank.data.dataset import RetrievalDataset
from reasonrank.data.training_sets import SFTSample
from reasonrank.prompt import PassageTruncator, shown_passage
from reasonrank.strategies import window_spans
from reasonrank.types import Candidate, RerankRequest


def gold_order(window: Sequence[Candidate], qrels: dict[str, int]) -> list[int]:
    """0-based indices: relevant candidates first (higher grade first, then list order), then the rest."""
    return sorted(range(len(window)), key=lambda i: (-qrels.get(window[i].docid, 0), i))


def verdict_walk(passages: Sequence[str], relevant: Sequence[bool], others: bool = False) -> str:
    """Each passage quoted as the prompt shows it, then its verdict, in list order, then the ids judged
    relevant: `[1] <passage 1> no. [2] <passage 2> yes. … Relevant: [2].` (also the simulated teacher's
    reasoning). The closing recap sits next to the answer, so writing the rest of the ranking is a matter of
    skipping the ids it names (without it the tiny model repeated ids in the answer's tail). `others` adds the
    rest, `… Relevant: [2]. Others: [1] [3].`, so that the answer copies two lists; over sample orders it moved
    the failures into the second list and lowered NDCG@10 (docs/measurements-demo.md), so the demo does not."""
    if len(passages) != len(relevant):
        raise ValueError(f"{len(passages)} passages but {len(relevant)} verdicts")
    walk = [f"[{i}] {text} {'yes' if r else 'no'}."
            for i, (text, r) in enumerate(zip(passages, relevant), start=1)]

    def named(verdict: bool) -> str:
        return " ".join(f"[{i}]" for i, r in enumerate(relevant, start=1) if r == verdict) or "none"
    return " ".join([*walk, f"Relevant: {named(True)}.", *([f"Others: {named(False)}."] if others else [])])


def templated_reasoning(window: Sequence[Candidate], qrels: dict[str, int],
                        truncate: PassageTruncator | None = None) -> str:
    """The verdict walk over `window` (passages as the prompt shows them): the answer then lists the yes-ids,
    then the rest."""
    shown = [shown_passage(c.text, truncate) for c in window]
    return verdict_walk(shown, [qrels.get(c.docid, 0) > 0 for c in window])


def _windows(request: RerankRequest, relevant: set[str], window_size: int, step: int, shuffled: int,
             rng: random.Random) -> list[list[Candidate]]:
    """The strategy's windows, then shuffled windows that hold every relevant candidate (filled up with
    others): relevant passages are rare in first-stage lists, and these give them weight."""
    candidates = list(request.candidates)
    out = [candidates[a:b] for a, b in window_spans(len(candidates), window_size, step)]
    positives = [c for c in candidates if c.docid in relevant][:window_size]
    others = [c for c in candidates if c.docid not in relevant]
    for _ in range(shuffled):
        window = positives + rng.sample(others, min(window_size - len(positives), len(others)))
        rng.shuffle(window)
        out.append(window)
    return out


def demo_sft_samples(dataset: RetrievalDataset, *, split: str = "train", depth: int = 20, window_size: int = 10,
                     step: int = 5, shuffled_windows: int = 3, seed: int = 0,
                     truncate: PassageTruncator | None = None) -> list[SFTSample]:
    """SFT samples from the queries of `split`, in a fixed order for a fixed seed."""
    rng = random.Random(seed)
    samples = []
    for request in dataset.subset(split).requests(depth):
        qrels = dataset.qrels.get(request.query.qid, {})
        relevant = {d for d, grade in qrels.items() if grade > 0}
        for k, window in enumerate(_windows(request, relevant, window_size, step, shuffled_windows, rng)):
            query = request.query
            samples.append(SFTSample.from_listwise(
                f"{query.qid}-w{k}", query.qid, query.domain, query.text, [c.text for c in window],
                templated_reasoning(window, qrels, truncate), gold_order(window, qrels), truncate))
    return samples
