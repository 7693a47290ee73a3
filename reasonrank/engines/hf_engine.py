"""The transformers backend: `model.generate` on left-padded batches. The fallback for small models.

Reports what the vLLM backend reports: the sampled ids up to and including the end-of-turn token, their
raw log-probabilities (log-softmax of the unprocessed logits, as vLLM's default), and finish_reason
"length" when max_new_tokens cut the response.
"""
from __future__ import annotations

import time
from typing import Any

from reasonrank.config import EngineConfig
from reasonrank.engines.base import Engine, Generation, Messages, SamplingParams
from reasonrank.prompt import render


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, config: EngineConfig, micro_batch_size: int = 8):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.micro_batch_size = micro_batch_size
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer = AutoTokenizer.from_pretrained(config.model)
        self._tokenizer.padding_side = "left"
        dtype = config.dtype if config.dtype == "auto" else getattr(torch, config.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self._stop_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._pad_id = self._tokenizer.pad_token_id
        if not self._stop_ids:
            raise ValueError(f"{config.model}: the generation config names no eos_token_id to stop at")

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        started = time.perf_counter()
        rows: list[tuple[int, list[int], list[float]]] = []
        for first in range(0, len(batch), self.micro_batch_size):
            rows.extend(self._generate_chunk(batch[first:first + self.micro_batch_size], params))
        latency = time.perf_counter() - started
        return [self._generation(prompt_tokens, ids, logprobs, params, latency)
                for prompt_tokens, ids, logprobs in rows]

    def _generate_chunk(self, chunk: list[Messages], params: SamplingParams):
        import torch

        prompts = [render(self._tokenizer, messages) for messages in chunk]
        encoded = self._tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(self.device)
        sample = params.temperature > 0
        options: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens, do_sample=sample, num_return_sequences=params.n,
            return_dict_in_generate=True, output_logits=params.logprobs,
            pad_token_id=self._pad_id,
        )
        if sample:  # top_k=0: no top-k cut, whatever the model's generation config says (as vLLM)
            options.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            options.update(stop_strings=list(params.stop), tokenizer=self._tokenizer)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                out = self.model.generate(**encoded, **options)
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        new_tokens = out.sequences[:, encoded["input_ids"].shape[1]:]
        step_logprobs = (torch.stack(out.logits, dim=1).float().log_softmax(dim=-1)
                         .gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1) if params.logprobs else None)
        for row, ids in enumerate(new_tokens.tolist()):
            ids = self._until_stop(ids)
            logprobs = step_logprobs[row, :len(ids)].tolist() if step_logprobs is not None else []
            yield prompt_lengths[row // params.n], ids, logprobs

    def _until_stop(self, ids: list[int]) -> list[int]:
        """The sampled ids up to and including the first stop token; a row that a stop string ended early
        is padded by generate after its end."""
        for i, token in enumerate(ids):
            if token in self._stop_ids:
                return ids[:i + 1]
            if token == self._pad_id:
                return ids[:i]
        return ids

    def _generation(self, prompt_tokens: int, ids: list[int], logprobs: list[float], params: SamplingParams,
                    latency: float) -> Generation:
        text = self._tokenizer.decode(ids, skip_special_tokens=True)
        stopped_by_string = False
        for stop in params.stop:  # vLLM's convention: the text ends before the stop string
            at = text.find(stop)
            if at >= 0:
                text, stopped_by_string = text[:at], True
        ended = bool(ids) and ids[-1] in self._stop_ids
        finish = "stop" if ended or stopped_by_string or len(ids) < params.max_new_tokens else "length"
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(ids), latency_s=latency,
                          finish_reason=finish, token_ids=ids, logprobs=logprobs if params.logprobs else None)
