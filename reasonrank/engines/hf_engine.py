"""The transformers backend: `model.generate` on left-padded batches. The fallback for small models.

`model.generate` cannot take a prompt into a batch that is running, so this backend keeps the one batcher
left in the system: prompts queue, and a worker runs whatever has queued (same sampling parameters) as
one batch the moment the model is free. A prompt cancelled while queued is dropped; one already in a
batch finishes with it. A synchronous `generate` call is one item of that queue, so the model runs on one
thread whoever calls.

Reports what the vLLM backend reports: the sampled ids up to and including the end-of-turn token, their
raw log-probabilities (log-softmax of the unprocessed logits, as vLLM's default), and finish_reason
"length" when max_new_tokens cut the response.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from reasonrank.config import EngineConfig
from reasonrank.engines.base import Engine, Generation, Messages, SamplingParams
from reasonrank.engines.engine_loop import EngineLoop
from reasonrank.prompt import prompt_token_ids


@dataclass
class _Queued:
    batch: list[Messages]
    params: SamplingParams
    done: asyncio.Future


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, config: EngineConfig, micro_batch_size: int = 8):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.micro_batch_size = micro_batch_size
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer = AutoTokenizer.from_pretrained(config.model)
        dtype = config.dtype if config.dtype == "auto" else getattr(torch, config.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self._stop_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._pad_id = self._tokenizer.pad_token_id
        if not self._stop_ids:
            raise ValueError(f"{config.model}: the generation config names no eos_token_id to stop at")
        self._loop = EngineLoop("transformers-engine")
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="transformers-generate")
        self._queue: list[_Queued] = []  # touched on the engine loop only
        self._running = 0  # prompts in the batch the model is generating
        self._arrived = asyncio.Event()
        self._worker = self._loop.run(_spawn(self._work()))

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def windows_in_flight(self) -> int:
        return self._running + sum(len(item.batch) for item in self._queue)

    async def agenerate(self, messages: Messages, params: SamplingParams) -> list[Generation]:
        return await self._loop.call(self._submit([messages], params))

    def generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        return self._loop.run(self._submit(batch, params)) if batch else []

    async def _submit(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        item = _Queued(batch, params, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._arrived.set()
        try:
            return await item.done
        finally:
            if not item.done.done():
                item.done.cancel()

    async def _work(self) -> None:
        """Run what has queued: the first item's parameters, and every queued item that shares them."""
        while True:
            await self._arrived.wait()
            self._queue = [item for item in self._queue if not item.done.done()]
            if not self._queue:
                self._arrived.clear()
                continue
            params = self._queue[0].params
            taken = [item for item in self._queue if item.params == params]
            self._queue = [item for item in self._queue if item.params != params]
            batch = [messages for item in taken for messages in item.batch]
            self._running = len(batch)
            try:
                generations = await asyncio.get_running_loop().run_in_executor(
                    self._model_thread, self._generate_batch, batch, params)
            except Exception as e:  # every caller in the batch hears about it; the worker goes on
                for item in taken:
                    if not item.done.done():
                        item.done.set_exception(e)
                continue
            finally:
                self._running = 0
            at = 0
            for item in taken:
                size = len(item.batch) * params.n
                if not item.done.done():
                    item.done.set_result(generations[at: at + size])
                at += size

    def _generate_batch(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        started = time.perf_counter()
        rows: list[tuple[int, list[int], list[float]]] = []
        for first in range(0, len(batch), self.micro_batch_size):
            rows.extend(self._generate_chunk(batch[first:first + self.micro_batch_size], params))
        latency = time.perf_counter() - started
        return [self._generation(prompt_tokens, ids, logprobs, params, latency)
                for prompt_tokens, ids, logprobs in rows]

    def _generate_chunk(self, chunk: list[Messages], params: SamplingParams):
        import torch

        prompts = [prompt_token_ids(self._tokenizer, messages) for messages in chunk]
        encoded = self._left_padded(prompts)
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
        prompt_lengths = [len(ids) for ids in prompts]
        new_tokens = out.sequences[:, encoded["input_ids"].shape[1]:]
        step_logprobs = (torch.stack(out.logits, dim=1).float().log_softmax(dim=-1)
                         .gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1) if params.logprobs else None)
        for row, ids in enumerate(new_tokens.tolist()):
            ids = self._until_stop(ids)
            logprobs = step_logprobs[row, :len(ids)].tolist() if step_logprobs is not None else []
            yield prompt_lengths[row // params.n], ids, logprobs

    def _left_padded(self, prompts: list[list[int]]) -> dict[str, Any]:
        """`input_ids` and `attention_mask` of the prompts, left-padded by hand. The tokenizer's own padding
        would switch padding on and off in the tokenizer object that the strategy's truncator shares from
        another thread, and an encode there between the switch and this batch's encoding leaves the batch
        unpadded ("expected sequence of length …")."""
        import torch

        longest = max(map(len, prompts))
        input_ids = torch.full((len(prompts), longest), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, longest - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, longest - len(ids):] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}

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

    def close(self) -> None:
        if self._loop.loop.is_running():
            self._loop.loop.call_soon_threadsafe(self._worker.cancel)
        self._loop.close()
        self._model_thread.shutdown(wait=True)


async def _spawn(coroutine) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(coroutine)
