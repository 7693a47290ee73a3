"""The SFT job's config: data, model, optimizer, DeepSpeed, loop, scaling, storage (YAML in configs/sft-*.yaml)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from reasonrank.config import PromptConfig, Strict
from reasonrank.training.config import DeepSpeedConfig, ModelConfig, OptimizerConfig
from reasonrank.training.global_batch import accumulation_steps


class DemoSetConfig(PromptConfig):
    """Build the SFT set from the demo dataset's labels (no teacher) when `data.path` does not exist yet, with
    the prompt settings (window_size, passage_max_tokens) the trained model will carry."""

    demo_dir: str = "outputs/demo"
    depth: int = Field(20, ge=1)  # first-stage candidates per query
    step: int = Field(5, ge=1)
    shuffled_windows: int = Field(3, ge=0)  # extra windows of shuffled candidates per query
    seed: int = 0


class ColdStartSetConfig(Strict):
    """Build R1-Ranker's cold-start set (the answer format only: `reasonrank/training/cold_start_set.py`) from
    the train split of the demo-scale Ranking-bench when `data.path` does not exist yet; the bench is generated
    at `bench_dir` first when it is absent (`reasonrank/data/ranking_bench_demo.py`)."""

    bench_dir: str = "outputs/r1-demo"
    seed: int = 0  # draws the single steps and the random answers
    one_shot: bool = True  # also DRanker's list format (one row per item), for a DRanker trained from the same model


class SFTDataConfig(Strict):
    path: str  # the SFT set: a Parquet file or folder (rows: id, qid, domain, messages), local or s3:// gs://
    max_seq_len: int = Field(4096, ge=16)  # longer samples are left out, counted and named in the log
    shuffle_seed: int = 0
    shuffle: bool = True  # a new order of the whole set each epoch (from shuffle_seed); false: file order
    tokenize_batch_rows: int = Field(64, ge=1)
    demo: DemoSetConfig | None = None
    cold_start: ColdStartSetConfig | None = None
    # The prompt settings the set was built with (the synthesis job's list_size and passage budget), carried by
    # the exported model; with `demo`, the demo set's own.
    prompt: PromptConfig = PromptConfig()

    @model_validator(mode="after")
    def _one_builder(self):
        if self.demo is not None and self.cold_start is not None:
            raise ValueError("data.demo and data.cold_start both build the SFT set: keep one")
        return self

    def trained_prompt(self) -> PromptConfig:
        return (self.demo or self.prompt).prompt()


class LoopConfig(Strict):
    micro_batch_size: int = Field(1, ge=1)  # samples per forward pass of one worker
    # samples per optimizer step, all workers together: the same whatever the number of workers (each worker
    # accumulates global_batch_size / (micro_batch_size × workers) micro-batches per step)
    global_batch_size: int = Field(8, ge=1)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)  # optimizer steps; default: as many as `epochs` allow
    # stop after this many epochs, checkpointed, with the model exported to `output_dir`/epoch-N (a look at the
    # model half-way); the same job run again without it continues the same schedule from that checkpoint
    pause_after_epochs: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(100, ge=1)  # optimizer steps; the last step is always checkpointed
    keep_checkpoints: int = Field(2, ge=1)
    report_every: int = Field(1, ge=1)  # metrics to Ray Train (a cross-worker barrier) every N steps


class WorkerScalingConfig(Strict):
    # a fixed number of workers, or [min, max]: an elastic group that starts with as many as fit (at least min),
    # goes on with the workers left when a node is lost and grows back when capacity returns (docs/elastic-sft.md)
    num_workers: int | tuple[int, int] = 2
    elastic_resize_monitor_interval_s: float = Field(60.0, ge=0)  # how often an elastic group looks for room to grow
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = {"CPU": 1.0}
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_failures: int = Field(3, ge=-1)  # worker losses (e.g. spot preemptions) to recover from; -1: any

    @field_validator("num_workers")
    @classmethod
    def _a_valid_range(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        low, high = (value, value) if isinstance(value, int) else value
        if low < 1 or low > high:
            raise ValueError(f"needs 1 <= min <= max workers, got {list(value) if isinstance(value, tuple) else value}")
        return value

    @property
    def world_sizes(self) -> range:
        """Every number of workers the group may train with."""
        low, high = (self.num_workers, self.num_workers) if isinstance(self.num_workers, int) else self.num_workers
        return range(low, high + 1)


class RunStorageConfig(Strict):
    """Where Ray Train keeps checkpoints: `<path>/<name>`. The same name resumes a killed job."""

    path: str = "outputs/ray-train"  # local folder or s3:// gs:// (shared by all nodes on a cluster)
    name: str = "sft"
    staging_dir: str | None = None  # where workers stage checkpoints on their node; None: /data/staging or temp


class TrackingConfig(Strict):
    tensorboard_dir: str | None = None  # local folder for TensorBoard event files


class SFTConfig(Strict):
    data: SFTDataConfig
    model: ModelConfig
    optimizer: OptimizerConfig = OptimizerConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    train: LoopConfig = LoopConfig()
    scaling: WorkerScalingConfig = WorkerScalingConfig()
    storage: RunStorageConfig = RunStorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    output_dir: str = "outputs/sft"  # final/ (HF export), history.jsonl, loss_curve.png, attempts/
    build_tiny_model: bool = False  # build the untrained tiny demo model at model.path when absent
    ray_num_cpus: int | None = 8  # logical CPUs of an embedded Ray (ignored on a cluster)

    @model_validator(mode="after")
    def _every_world_size_splits_the_batch(self):
        for world_size in self.scaling.world_sizes:
            accumulation_steps(self.train.global_batch_size, self.train.micro_batch_size, world_size)
        return self
