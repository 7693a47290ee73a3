"""Rollouts → padded token tensors for one forward pass of a causal LM.

Layout: prompts LEFT-padded and responses RIGHT-padded to a common width, so every response starts in the
same column. The logits of only the last `response_len + 1` positions are then needed (`logits_to_keep`),
which matters with 150K-word vocabularies and prompts of ten thousand tokens.

    [pad pad p1 p2 p3 | r1 r2 r3 pad]      attention_mask 0 on pads, position_ids counted over real tokens
    [ p1 p2 p3 p4 p5  | r1 r2 pad pad]     response_mask  1 on r1..rk (what the loss and KL are taken over)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R)
    position_ids: torch.Tensor  # (B, P + R)
    response_ids: torch.Tensor  # (B, R)
    response_mask: torch.Tensor  # (B, R) 1.0 on sampled tokens

    @property
    def response_len(self) -> int:
        return self.response_ids.shape[1]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def pack(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Pack prompt/response token id pairs (left-padded prompts, right-padded responses)."""
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"need as many prompts as responses, at least one: {len(prompts)} vs {len(responses)}")
    if any(len(r) == 0 for r in responses):
        raise ValueError("a response has no tokens; nothing to train on (drop it before packing)")
    p_width = max(len(p) for p in prompts)
    r_width = max(len(r) for r in responses)
    b = len(prompts)
    input_ids = torch.full((b, p_width + r_width), pad_id, dtype=torch.long)
    attention = torch.zeros((b, p_width + r_width), dtype=torch.long)
    response_mask = torch.zeros((b, r_width))
    for i, (p, r) in enumerate(zip(prompts, responses)):
        input_ids[i, p_width - len(p): p_width] = torch.as_tensor(list(p), dtype=torch.long)
        input_ids[i, p_width: p_width + len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        attention[i, p_width - len(p): p_width + len(r)] = 1
        response_mask[i, : len(r)] = 1.0
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return TokenBatch(input_ids, attention, position_ids, input_ids[:, p_width:], response_mask)


def response_logits(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """The float32 logits that predict each response token, shaped (B, R, vocabulary)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=batch.response_len + 1, use_cache=False)
    return out.logits[:, :-1, :].float()  # position t predicts token t + 1


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at `ids`, shaped like `ids`."""
    logits = logits / temperature if temperature != 1.0 else logits
    chosen = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)  # log_softmax without a second vocabulary-wide tensor


def response_logprobs(model: torch.nn.Module, batch: TokenBatch, temperature: float = 1.0) -> torch.Tensor:
    """log pi(r_t | prompt, r_<t) of every response token, shaped (B, R); padding positions hold garbage
    that `response_mask` hides. Logits are divided by the sampling `temperature`, as the engine sampled."""
    return token_logprobs(response_logits(model, batch), batch.response_ids, temperature)


@torch.no_grad()
def engine_logprob_gap(logits: torch.Tensor, batch: TokenBatch, engine_logprobs: torch.Tensor) -> float:
    """Mean |engine − learner| log-probability over the response tokens: the training-inference mismatch.

    vLLM reports the log-probabilities of the raw logits (its default `logprobs_mode`, raw_logprobs: before
    temperature, penalties and top-p), so the learner's side is taken at temperature 1 whatever temperature the
    engine sampled at. One row at a time: a second vocabulary-wide tensor for the whole batch could be GBs.
    """
    mask = batch.response_mask.to(logits.device)
    gap = sum(((token_logprobs(logits[i], batch.response_ids[i].to(logits.device))
                - engine_logprobs[i].to(logits.device)).abs() * mask[i]).sum() for i in range(len(logits)))
    return float(gap) / max(float(mask.sum()), 1.0)


def pad_right(rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    """Per-token values of each response (logprobs, …) as a (B, width) tensor, zeros after each row's end."""
    out = torch.zeros((len(rows), width))
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.float32)
    return out
