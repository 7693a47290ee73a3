"""A few AdamW steps of the tiny model on chats (plain torch over the shared chat tokenisation): the models the
RL tests start from, which answer in a format only some of the time."""
from __future__ import annotations

import random
from pathlib import Path


def briefly_tune(tiny_model_dir: Path, tokenizer, chats: list, steps: int, rng: random.Random, out: Path) -> Path:
    """`steps` AdamW steps (lr 2e-3, batches of 8 chats drawn by `rng`) from the tiny model, saved to `out`."""
    import torch
    from transformers import AutoModelForCausalLM

    from reasonrank.training.chat_tokenize import collate

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(steps):
        batch = rng.sample(chats, 8)
        loss = model(**collate([c.input_ids for c in batch], [c.loss_mask for c in batch],
                               tokenizer.pad_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
