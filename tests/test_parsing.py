"""The listwise parser: whatever the text, the result is a permutation of the window (DESIGN.md's rules)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonrank.parsing import answer_ids, extract_answer, format_answer, has_think_then_answer, parse_ranking

# Pieces a broken or adversarial model output is made of: tags (closed, unclosed, nested), ids in and out
# of range, unicode digits, separators and free text.
_FRAGMENTS = st.one_of(
    st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<think><think>", "<answer><answer>",
                     " > ", ">", "[", "]", "[]", "[ 3 ]", "[３]", "[٣]", "[-1]", "[0]", "[99999999999]",
                     "[2.5]", "\n", "reasoning about [4] and [1]", "[1] > [1] > [1]"]),
    st.integers(min_value=-5, max_value=40).map(lambda k: f"[{k}]"),
    st.text(max_size=12),
)
_RESPONSES = st.one_of(st.text(max_size=200), st.lists(_FRAGMENTS, max_size=40).map("".join))


@settings(max_examples=600, deadline=None, database=None)
@given(_RESPONSES, st.integers(min_value=0, max_value=25))
def test_any_text_parses_to_a_permutation(response, n):
    parsed = parse_ranking(response, n)
    assert sorted(parsed.order) == list(range(n))
    if parsed.well_formed:
        assert parsed.has_answer and has_think_then_answer(response)


@settings(max_examples=300, deadline=None, database=None)
@given(st.permutations(list(range(12))), st.text(alphabet=st.characters(blacklist_characters="<>[]"), max_size=60))
def test_a_well_formed_answer_round_trips(order, reasoning):
    response = f"<think>{reasoning}</think>\n<answer>{format_answer(order)}</answer>"
    parsed = parse_ranking(response, len(order))
    assert parsed.order == order and parsed.well_formed and parsed.has_answer


def test_duplicates_keep_their_first_place_and_missing_ids_are_appended_in_order():
    parsed = parse_ranking("<think>x</think><answer>[3] > [1] > [3] > [1]</answer>", 5)
    assert parsed.order == [2, 0, 1, 3, 4]
    assert parsed.has_answer and not parsed.well_formed


def test_out_of_range_ids_are_dropped():
    parsed = parse_ranking("<think>x</think><answer>[0] > [2] > [7] > [-1] > [1]</answer>", 3)
    assert parsed.order == [1, 0, 2] and not parsed.well_formed


def test_no_answer_keeps_the_window_order_and_never_reads_the_reasoning():
    cut_off = "<think>Passage [3] is best, then [2] > [1], so the answer is [3] > [2"
    parsed = parse_ranking(cut_off, 3)
    assert parsed.order == [0, 1, 2] and not parsed.has_answer and not parsed.well_formed


def test_unclosed_answer_counts_up_to_the_end():
    parsed = parse_ranking("<think>ok</think><answer>[2] > [3]", 3)
    assert parsed.order == [1, 2, 0] and parsed.has_answer and not parsed.well_formed


def test_answer_without_reasoning_is_parsed_but_not_well_formed():
    parsed = parse_ranking("<answer>[2] > [1]</answer>", 2)
    assert parsed.order == [1, 0] and parsed.has_answer and not parsed.well_formed


def test_the_answer_after_think_wins_over_an_earlier_one():
    response = "<answer>[1] > [2]</answer><think>second thoughts</think><answer>[2] > [1]</answer>"
    assert extract_answer(response) == "[2] > [1]"
    assert parse_ranking(response, 2).order == [1, 0]


def test_unicode_digits_and_spaces_inside_brackets_are_ids():
    assert answer_ids("[３] > [ 1 ] > [٢]") == [3, 1, 2]
    assert parse_ranking("<think>t</think><answer>[３] > [ 1 ] > [٢]</answer>", 3).well_formed


def test_empty_window_and_negative_size():
    assert parse_ranking("<think></think><answer></answer>", 0).order == []
    with pytest.raises(ValueError, match="num_passages"):
        parse_ranking("", -1)
