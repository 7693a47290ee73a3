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


# ---- fitting a window to the model's context -----------------------------------------------------------

def _prompt_tokens(tokenizer, messages) -> int:
    return len(tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"])


def test_a_window_over_the_context_has_its_passages_cut_to_fit(tiny_model_dir):
    from transformers import AutoTokenizer

    from reasonrank.prompt import PASSAGE_MIN_TOKENS

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    passages = [" ".join(f"w{j}x{i}" for j in range(600)) for i in range(4)]
    context, answer = 1024, 64
    truncate = PassageTruncator(tok, 4000, context_tokens=context, answer_tokens=answer)
    messages = listwise_messages("why do cats purr", passages, truncate)
    used = _prompt_tokens(tok, messages)
    assert used <= context - answer
    assert used > context - answer - 4 * 16  # cut no more than it had to: a few tokens a passage at most
    assert "why do cats purr" in messages[1]["content"]  # the query was not cut: passages went first
    for i in range(1, 5):
        assert f"[{i}] w0x{i - 1}" in messages[1]["content"]  # each passage keeps its beginning
    assert PASSAGE_MIN_TOKENS < 100


def test_a_window_fits_by_cutting_the_query_after_the_passages(tiny_model_dir):
    from transformers import AutoTokenizer

    from reasonrank.prompt import QUERY_MIN_TOKENS

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    query = " ".join(f"q{j}" for j in range(3000))
    truncate = PassageTruncator(tok, 64, context_tokens=1024, answer_tokens=64)
    messages = listwise_messages(query, ["short passage one", "short passage two"], truncate)
    assert _prompt_tokens(tok, messages) <= 1024 - 64
    assert "q0 q1" in messages[1]["content"] and f"q{QUERY_MIN_TOKENS * 2}" not in messages[1]["content"]


def test_what_cannot_fit_is_refused_naming_the_limit(tiny_model_dir):
    from transformers import AutoTokenizer

    from reasonrank.prompt import PromptTooLong

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    truncate = PassageTruncator(tok, 512, context_tokens=600, answer_tokens=64)
    with pytest.raises(PromptTooLong, match=r"max_model_len\) is 600 tokens with 64 kept for the answer"):
        listwise_messages("why", [f"passage number {i} " * 40 for i in range(60)], truncate)


def test_without_a_context_budget_passages_are_only_cut_to_their_budget(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = " ".join(f"w{j}" for j in range(2000))
    messages = listwise_messages("q", [long], PassageTruncator(tok, 20_000))  # far over the model's 4096
    assert long in messages[1]["content"]


class _CountingTokenizer:
    """The model's tokenizer, counting how often it tokenises a whole rendered prompt."""

    def __init__(self, tokenizer):
        self.tokenizer, self.prompts_tokenised = tokenizer, 0

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def encode(self, text, **options):
        self.prompts_tokenised += SYSTEM_PROMPT[:60] in text
        return self.tokenizer.encode(text, **options)


def test_a_window_is_tokenised_once_from_its_measure_to_the_engine(tiny_model_dir):
    from transformers import AutoTokenizer

    from reasonrank.prompt import prompt_token_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    counting = _CountingTokenizer(tok)
    truncate = PassageTruncator(counting, 64, context_tokens=4096, answer_tokens=256)  # fits: measured once
    messages = listwise_messages("why do cats purr", [f"passage {i} on purring" for i in range(5)], truncate)
    assert counting.prompts_tokenised == 1
    ids = prompt_token_ids(counting, messages)  # what the vLLM engine asks for the window it generates
    assert counting.prompts_tokenised == 1
    assert ids == tok.encode(render(tok, messages), add_special_tokens=False) and len(ids) > 50
