"""The gold demo SFT set: every window's reasoning quotes the prompt's passages in order with the verdicts the
qrels give, and its answer ranks the relevant ones first, then the rest in list order."""
from __future__ import annotations

import re

import pytest

from reasonrank.parsing import parse_ranking
from reasonrank.training.demo_set import demo_sft_samples, verdict_walk

_PROMPT_PASSAGE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)


def test_verdict_walk_quotes_then_judges_each_passage():
    assert verdict_walk(["Zorvium melts at 40 degrees.", "Forum post: when?"], [True, False]) == \
        "[1] Zorvium melts at 40 degrees. yes. [2] Forum post: when? no. Relevant: [1]."
    assert verdict_walk(["a", "b", "c"], [False, True, True]).endswith("[3] c yes. Relevant: [2] [3].")
    assert verdict_walk(["a"], [False]) == "[1] a no. Relevant: none."
    # with `others`, the recap names the rest too
    assert verdict_walk(["a", "b", "c", "d"], [False, True, False, True], others=True).endswith(
        "[4] d yes. Relevant: [2] [4]. Others: [1] [3].")
    assert verdict_walk(["a"], [True], others=True) == "[1] a yes. Relevant: [1]. Others: none."
    with pytest.raises(ValueError, match="2 passages but 1 verdicts"):
        verdict_walk(["a", "b"], [True])


def test_gold_windows_quote_the_prompt_and_rank_relevant_passages_first(demo_data):
    dataset = demo_data.load()
    samples = demo_sft_samples(dataset, split="test", shuffled_windows=1)
    assert len(samples) == 4 * len(dataset.subset("test").queries)  # 3 sliding windows of 10 over 20, 1 shuffled
    docid_by_text = {text: docid for docid, text in dataset.corpus.items()}  # demo passages are unique texts
    verdicts = []
    for sample in samples:
        qrels = dataset.qrels[sample.qid]
        shown = [text for _, text in _PROMPT_PASSAGE.findall(sample.messages[1]["content"])]
        relevant = [qrels.get(docid_by_text[text], 0) > 0 for text in shown]
        answer = sample.messages[2]["content"]
        assert answer.startswith(f"<think>{verdict_walk(shown, relevant)}</think><answer>")
        parsed = parse_ranking(answer, len(shown))
        assert parsed.well_formed
        expected = [i for i, r in enumerate(relevant) if r] + [i for i, r in enumerate(relevant) if not r]
        assert parsed.order == expected
        verdicts += relevant
    # the shuffled windows gather each query's relevant passages, so "yes" is not rare
    assert 0.1 < sum(verdicts) / len(verdicts) < 0.5
