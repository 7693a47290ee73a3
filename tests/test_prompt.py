"""The listwise prompt: the reference text, `[k]` rewriting, token-budget truncation, chat rendering."""
from __future__ import annotations

import pytest

from reasonrank.data.training_sets import RLSample, SFTSample
from reasonrank.parsing import parse_ranking
from reasonrank.prompt import (SYSTEM_PROMPT, PassageTruncator, assistant_turn, listwise_messages,
                               listwise_user_message, render, rewrite_brackets)


def test_user_message_follows_the_reference_layout():
    text = listwise_user_message("why is the sky blue", ["Rayleigh scattering.", "Clouds are white."])
    assert text.startswith("I will provide you with 2 passages, each indicated by a numerical identifier []. "
                           "Rank the passages based on their relevance to the search query: why is the sky blue.\n\n")
    assert "[1] Rayleigh scattering.\n[2] Clouds are white.\n" in text
    assert "Search Query: why is the sky blue.\n" in text
    assert text.endswith("e.g., [2] > [1].")
    assert text.index("[1] Rayleigh") < text.index("[2] Clouds") < text.index("Search Query:")


def test_system_prompt_asks_for_think_then_answer():
    msgs = listwise_messages("q", ["a"])
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert "<think> </think>" in SYSTEM_PROMPT and "<answer> </answer>" in SYSTEM_PROMPT


def test_bracketed_numbers_in_text_become_parentheses():
    assert rewrite_brackets("see [3] and [12], not [x]") == "see (3) and (12), not [x]"
    text = listwise_user_message("cite [1]?", ["as shown in [2]"])
    assert "cite (1)?" in text and "[1] as shown in (2)" in text


def test_truncation_cuts_to_the_token_budget(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = " ".join(["alpha beta gamma"] * 200)
    cut = PassageTruncator(tok, 16)(long)
    assert len(tok.encode(cut, add_special_tokens=False)) <= 16
    assert long.startswith(cut.strip()[:10])
    short = "alpha beta"
    assert PassageTruncator(tok, 16)(short) == short
    assert PassageTruncator(None, None)(long) == long


def test_rendered_with_the_model_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = render(tok, listwise_messages("q", ["a", "b"]))
    assert SYSTEM_PROMPT in text and "[2] b" in text
    assert text.rstrip().endswith("assistant")  # ready for the model to answer


def test_sft_sample_round_trips_through_the_prompt_builder():
    sample = SFTSample.from_listwise("s1", "q1", "math", "q?", ["p0", "p1", "p2"], "p2 answers it", [2, 0, 1])
    again = SFTSample.from_record(sample.to_record())
    assert again == sample
    assert again.messages[:2] == listwise_messages("q?", ["p0", "p1", "p2"])
    answer = again.messages[2]["content"]
    assert answer == assistant_turn("p2 answers it", [2, 0, 1])
    parsed = parse_ranking(answer, 3)
    assert parsed.order == [2, 0, 1] and parsed.well_formed
    with pytest.raises(ValueError, match="not a permutation"):
        SFTSample.from_listwise("s2", "q", "d", "q", ["a", "b"], "r", [0, 0])


def test_rl_sample_validates_and_round_trips():
    s = RLSample("r1", "q1", "web", "q?", ["d1", "d2"], ["t1", "t2"], ["d2", "d1"], ["d2"])
    assert RLSample.from_record(s.to_record()) == s
    assert s.messages() == listwise_messages("q?", ["t1", "t2"])
    with pytest.raises(ValueError, match="teacher_ranking"):
        RLSample("r2", "q", "web", "q", ["d1", "d2"], ["t1", "t2"], ["d1"], [])
    with pytest.raises(ValueError, match="relevant ids"):
        RLSample("r3", "q", "web", "q", ["d1"], ["t1"], ["d1"], ["zz"])
