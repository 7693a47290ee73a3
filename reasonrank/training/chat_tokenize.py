"""Chat samples → token ids with a loss mask on the assistant turns only.

The conversation is cut at the chat template's own turn boundaries: the text before each assistant turn is
exactly what `render` (the serving prompt) produces, so each prompt segment is tokenized the way the model
sees it at inference, and the assistant segments (answer plus the template's end-of-turn token, without the
whitespace some templates put after it) carry the loss. This needs no `{% generation %}` markers in the
template (Qwen2.5's has none).
A template that rewrites earlier turns (so a prefix is not a prefix) is rejected with a clear error instead
of silently training on misaligned masks.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: the training loop needs no pyarrow (a lean GPU image has none)
    import pyarrow as pa

IGNORE_INDEX = -100  # labels the loss skips (torch's cross-entropy default)


@dataclass(frozen=True)
class TokenizedChat:
    input_ids: list[int]
    loss_mask: list[int]  # 1 on assistant tokens (trained), 0 on everything else

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def chat_segments(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation as consecutive (text, trained) segments; trained ones are assistant turns."""
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn to train on")
    full = _render(tokenizer, messages, generation_prompt=False)
    segments: list[tuple[str, bool]] = []
    done = 0  # characters of `full` already assigned to segments
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through) and len(before) >= done):
            raise ValueError(
                f"the chat template does not render turn {i} as a prefix of the conversation; "
                "assistant-only loss masks cannot be derived from it")
        turn = through[len(before):]
        trained = turn.rstrip()  # the template's whitespace after the end-of-turn token is not trained
        segments.append((full[done:len(before)], False))
        segments.append((trained, True))
        done = len(before) + len(trained)
    if done < len(full):
        segments.append((full[done:], False))
    return [(text, trained) for text, trained in segments if text]


def tokenize_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> TokenizedChat:
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in chat_segments(tokenizer, messages):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        mask.extend([int(trained)] * len(piece))
    return TokenizedChat(ids, mask)


@lru_cache(maxsize=4)
def _cached_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def tokenize_chat_batch(batch: pa.Table, tokenizer_path: str, max_seq_len: int) -> pa.Table:
    """A batch function (e.g. for Ray Data `map_batches`): rows with `id` and `messages` → token columns.

    Rows longer than `max_seq_len` tokens are kept, marked `fits = False`, so the caller can count and
    report them instead of losing them silently.
    """
    import pyarrow as pa

    missing = {"id", "messages"} - set(batch.column_names)
    if missing:
        raise ValueError(f"SFT rows need columns {sorted(missing)}; these have {batch.column_names}")
    tokenizer = _cached_tokenizer(tokenizer_path)
    chats = [tokenize_chat(tokenizer, messages) for messages in batch.column("messages").to_pylist()]
    lengths = np.asarray([c.num_tokens for c in chats], dtype=np.int32)
    return pa.table({
        "id": batch.column("id"),
        "input_ids": pa.array([c.input_ids for c in chats], type=pa.list_(pa.int32())),
        "loss_mask": pa.array([c.loss_mask for c in chats], type=pa.list_(pa.int8())),
        "num_tokens": pa.array(lengths),
        "fits": pa.array(lengths <= max_seq_len),
    })


def collate(input_ids: Sequence[Sequence[int]], loss_masks: Sequence[Sequence[int]], pad_id: int):
    """Right-padded tensors for a causal LM: input_ids, labels (IGNORE_INDEX off-target) and `logits_to_keep`
    (Hugging Face causal LMs' argument). Two savings, each leaving the loss exactly as it was:

    - no attention mask: the padding follows every real token, so under causal attention no real token sees it
      (its own outputs carry no label), and positions count from 0 either way; without a mask PyTorch's fused
      causal attention runs instead of its slower masked kernel;
    - logits only from the position before the batch's first target onwards, with `labels` cut to match (the
      model's loss shifts them by one as usual): the LM head's work and the logits' memory (vocabulary ×
      sequence, the largest activation of a 7B model's long prompts) shrink to the completions' share.
    """
    import torch

    width = max(len(x) for x in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    labels = torch.full((len(input_ids), width), IGNORE_INDEX, dtype=torch.long)
    for row, (seq, mask) in enumerate(zip(input_ids, loss_masks, strict=True)):
        seq_t = torch.tensor(np.asarray(seq), dtype=torch.long)
        mask_t = torch.tensor(np.asarray(mask), dtype=torch.bool)
        ids[row, : len(seq)] = seq_t
        labels[row, : len(seq)] = torch.where(mask_t, seq_t, IGNORE_INDEX)
    targets = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    keep = width - max(int(targets[0]) - 1, 0) if len(targets) else 1
    return {"input_ids": ids, "labels": labels[:, -keep:], "logits_to_keep": keep}
