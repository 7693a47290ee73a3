"""Cold-start SFT: fine-tune a causal LM on the SFT set with Ray Train (TorchTrainer) and DeepSpeed.

    python -m jobs.sft --config configs/sft-tiny.yaml [--set train.max_steps=40]

The recipe:
1. The SFT set (Parquet: id, qid, domain, messages) goes through Ray Data: read, tokenized once with
   assistant-only loss masks; samples over `data.max_seq_len` are left out, counted and named in the log.
   The tokenized blocks stay in the object store; every worker maps them (zero-copy on its node).
2. Each Ray Train worker runs a DeepSpeed engine (ZeRO stage from the config) and the SFT loop. Every
   optimizer step trains `train.global_batch_size` samples of the epoch's order, whatever the number of
   workers: each takes its share of the step's micro-batches (reasonrank/training/global_batch.py).
3. Every `train.checkpoint_every` steps each worker saves its part of the DeepSpeed checkpoint, its RNG state
   and the data cursor (epoch, optimizer step in epoch); Ray Train stores them under
   `<storage.path>/<storage.name>`. A lost worker (a spot preemption) restarts the group from the latest
   checkpoint, up to `scaling.max_failures` times; with `scaling.num_workers: [min, max]` on the workers left
   (at least min), without waiting for the lost node, and it grows back when capacity returns (a checkpoint
   saved at another world size loads through a universal checkpoint). A killed job resubmitted with the same
   config resumes too (docs/elastic-sft.md).
4. At the end: a Hugging Face export in `<output_dir>/final` (what evaluate and vLLM load), the per-step
   history and a loss-curve plot next to it. Each attempt's own step log is kept under
   `<storage.path>/<storage.name>/attempts/` (replayed steps included), for post-mortems.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from jobs.common import init_ray, main
from jobs.progress import ProgressRelay, StageProgress
from jobs.sft_config import SFTConfig, SFTDataConfig
from reasonrank import fingerprint, storage
from reasonrank.config import load_config, save_prompt
from reasonrank.training.checkpoint import saved_world_size
from reasonrank.training.global_batch import accumulation_steps, epoch_order, rank_micro_batches
from reasonrank.training.sft_loop import MicroBatch, TrainPlan, TrainState
from reasonrank.training.universal_checkpoint import needs_conversion

log = logging.getLogger("jobs.sft")

_WORKER_ENV = ("TORCH_EXTENSIONS_DIR", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE")


def run(config_path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return train(load_config(config_path, SFTConfig, overrides))


def train(cfg: SFTConfig) -> dict[str, Any]:
    import ray.train
    from ray.train.torch import TorchTrainer

    run_dir = storage.join(_absolute(cfg.storage.path), cfg.storage.name)
    fingerprint.check_and_record(run_dir, "sft", results_fingerprint(cfg), moved_by="storage.name")
    _prepare_inputs(cfg)
    outputs = cfg.output_dir  # as the user named it, for the progress line
    # Ray Train workers do not run in the driver's working directory: hand them absolute paths.
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": _absolute(cfg.model.path)}),
                                 "output_dir": _absolute(cfg.output_dir)})
    init_ray(cfg.ray_num_cpus)
    progress = StageProgress("sft", 0, "steps", outputs)
    progress.status("tokenizing the SFT set")
    blocks, kept, pad_id = _tokenized_blocks(cfg)
    plan = _plan(cfg, kept)
    progress.set_total(plan.last_step)
    progress.status("starting the Ray Train workers")
    log.info("SFT: %d samples, workers %s, %d steps (%d per epoch, %d samples each); checkpoints in %s", kept,
             cfg.scaling.num_workers, plan.total_steps, plan.steps_per_epoch, plan.global_batch_size, run_dir)
    relay = ProgressRelay(progress)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "plan": asdict(plan), "pad_id": pad_id,
                           "blocks": blocks, "run_dir": run_dir, "progress": relay.handle},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=dict(cfg.scaling.resources_per_worker),
            placement_strategy=cfg.scaling.placement_strategy,
            elastic_resize_monitor_interval_s=cfg.scaling.elastic_resize_monitor_interval_s),
        run_config=ray.train.RunConfig(
            name=cfg.storage.name, storage_path=_absolute(cfg.storage.path),
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            worker_runtime_env={"env_vars": {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}}),
    )
    with progress, relay:
        result = trainer.fit()
        model = exported_model(cfg, plan)
        if not storage.exists(storage.join(model, "config.json")):  # only a pause an earlier run had passed
            raise RuntimeError(f"no model at {model}: the run's checkpoint is past the pause at step "
                               f"{plan.last_step}; start a new run (storage.name) to export one there")
        save_prompt(model, cfg.data.trained_prompt())
        return _summary(cfg, plan, kept, run_dir, result)


def results_fingerprint(cfg: SFTConfig) -> dict[str, Any]:
    """What the checkpoints in the run folder depend on (not where they are kept, how often, nor where a run
    pauses)."""
    return fingerprint.fingerprint(cfg, ignore=(
        "storage.*", "tracking.*", "build_tiny_model", "train.checkpoint_every", "train.keep_checkpoints",
        "train.pause_after_epochs",
        "train.report_every", "scaling.resources_per_worker.*", "scaling.placement_strategy", "scaling.max_failures",
        "scaling.num_workers", "scaling.elastic_resize_monitor_interval_s",
        "data.tokenize_batch_rows", "model.gradient_checkpointing", "deepspeed.offload_*"))


# --- inputs ------------------------------------------------------------------------------------------

def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _prepare_inputs(cfg: SFTConfig) -> None:
    """Build what the tiny demo profiles ask for and is missing: the tiny model, the SFT set (the passage demo's,
    or R1-Ranker's cold start)."""
    if cfg.data.cold_start is not None:
        _prepare_cold_start(cfg)
        return
    demo = cfg.data.demo
    if cfg.build_tiny_model:
        from reasonrank.data.demo import ensure_demo_dataset
        from reasonrank.tiny_model import ensure_tiny_model

        ensure_tiny_model(cfg.model.path, ensure_demo_dataset(demo.demo_dir if demo else "outputs/demo").texts())
    if demo is not None and not storage.exists(cfg.data.path):
        from transformers import AutoTokenizer

        from reasonrank.data.demo import ensure_demo_dataset
        from reasonrank.data.tables import write_records
        from reasonrank.prompt import PassageTruncator
        from reasonrank.training.demo_set import demo_sft_samples

        truncate = PassageTruncator(AutoTokenizer.from_pretrained(cfg.model.path), demo.passage_max_tokens)
        samples = demo_sft_samples(ensure_demo_dataset(demo.demo_dir).load(), depth=demo.depth,
                                   window_size=demo.window_size, step=demo.step,
                                   shuffled_windows=demo.shuffled_windows, seed=demo.seed, truncate=truncate)
        write_records(cfg.data.path, [s.to_record() for s in samples])
        log.info("wrote the demo SFT set: %d samples → %s", len(samples), cfg.data.path)


def _prepare_cold_start(cfg: SFTConfig) -> None:
    """R1-Ranker's cold-start set from the demo-scale Ranking-bench's train split; the tiny model's tokenizer
    learns the set's own text (the family prompts, the items, the answers)."""
    from reasonrank.data.ranking_bench import load_ranking_bench
    from reasonrank.data.ranking_bench_demo import ensure_ranking_bench_demo
    from reasonrank.data.tables import write_records
    from reasonrank.tiny_model import ensure_tiny_model
    from reasonrank.training.cold_start_set import cold_start_samples

    cold = cfg.data.cold_start
    build_set = not storage.exists(cfg.data.path)
    if not (build_set or cfg.build_tiny_model):
        return
    items = load_ranking_bench(str(ensure_ranking_bench_demo(cold.bench_dir)), splits=["train"])
    samples = cold_start_samples(items, seed=cold.seed, one_shot=cold.one_shot)
    if cfg.build_tiny_model:
        ensure_tiny_model(cfg.model.path, (m["content"] for s in samples for m in s.messages))
    if build_set:
        write_records(cfg.data.path, [s.to_record() for s in samples])
        log.info("wrote the cold-start SFT set: %d samples → %s", len(samples), cfg.data.path)


def _tokenized_blocks(cfg: SFTConfig):
    """The tokenized training set (over-long samples left out) as object-store refs to Arrow blocks in the
    file order, its number of samples, the pad id.

    Tokenized once, by Ray Data tasks (rebuilt from lineage if a node holding blocks is lost), and kept in
    the object store, so each epoch reads it without tokenizing again.
    """
    import ray.data
    from transformers import AutoTokenizer

    from reasonrank.training.chat_tokenize import tokenize_chat_batch

    data: SFTDataConfig = cfg.data
    if not storage.exists(data.path):
        raise FileNotFoundError(f"data.path: no SFT set at {data.path}")
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    rows = ray.data.read_parquet(data.path)
    if missing := {"id", "messages"} - set(rows.schema().names):
        raise ValueError(f"{data.path}: SFT rows need column(s) {sorted(missing)}; found {rows.schema().names}")
    tokenized = rows.map_batches(tokenize_chat_batch, batch_format="pyarrow", batch_size=data.tokenize_batch_rows,
                                 fn_kwargs={"tokenizer_path": cfg.model.path,
                                            "max_seq_len": data.max_seq_len}).materialize()
    stats = tokenized.select_columns(["id", "num_tokens", "fits"]).to_pandas()
    if stats.empty:
        raise ValueError(f"{data.path}: the SFT set is empty")
    overlong = stats[~stats.fits]
    if len(overlong):
        log.warning("left out %d of %d samples longer than data.max_seq_len=%d tokens (longest %d): %s",
                    len(overlong), len(stats), data.max_seq_len, overlong.num_tokens.max(),
                    ", ".join(overlong.id.astype(str).head(10)))
    log.info("tokenized %d samples: %.0f tokens on average, %d at most", len(stats), stats.num_tokens.mean(),
             stats.num_tokens.max())
    pad_id = AutoTokenizer.from_pretrained(cfg.model.path).pad_token_id
    if pad_id is None:
        raise ValueError(f"{cfg.model.path}: the tokenizer has no pad token")
    training = tokenized.map_batches(_only_fitting, batch_format="pyarrow") if len(overlong) else tokenized
    training = training.select_columns(["id", "input_ids", "loss_mask"]).materialize()
    return training.to_arrow_refs(), int(stats.fits.sum()), int(pad_id)


def _only_fitting(batch: pa.Table) -> pa.Table:
    return batch.filter(batch.column("fits"))


def _plan(cfg: SFTConfig, samples: int) -> TrainPlan:
    steps_per_epoch = samples // cfg.train.global_batch_size  # the epoch's remainder (less than a step) is left out
    if steps_per_epoch < 1:
        raise ValueError(f"{samples} samples cannot fill one step of train.global_batch_size="
                         f"{cfg.train.global_batch_size}")
    pause = cfg.train.pause_after_epochs
    return TrainPlan(cfg.train.max_steps or cfg.train.epochs * steps_per_epoch, steps_per_epoch,
                     cfg.train.global_batch_size, cfg.train.micro_batch_size,
                     pause * steps_per_epoch if pause else None)


def exported_model(cfg: SFTConfig, plan: TrainPlan) -> str:
    """Where the run exports its model: `final`, or `epoch-N` for a run that pauses after N epochs."""
    return storage.join(cfg.output_dir, f"epoch-{cfg.train.pause_after_epochs}" if plan.pauses else "final")


# --- the worker ----------------------------------------------------------------------------------------

def _ragged(column: pa.ChunkedArray) -> list[np.ndarray]:
    flat = column.combine_chunks()
    offsets, values = flat.offsets.to_numpy(), flat.values.to_numpy()
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(flat))]


class RankSamples:
    """This rank's micro-batches of each optimizer step, read from the tokenized set's Arrow blocks."""

    def __init__(self, blocks: list[Any], data: SFTDataConfig, plan: TrainPlan, rank: int, world_size: int):
        import ray

        self.table = pa.concat_tables(ray.get(blocks))  # zero-copy views of the node's object store
        self.data, self.plan, self.rank, self.world_size = data, plan, rank, world_size
        self._order: tuple[int, np.ndarray] | None = None

    def __call__(self, epoch: int, step_in_epoch: int) -> list[MicroBatch]:
        if self._order is None or self._order[0] != epoch:
            self._order = epoch, epoch_order(self.table.num_rows, epoch, self.data.shuffle_seed, self.data.shuffle)
        return [self._micro_batch(self.table.take(indices)) for indices in rank_micro_batches(
            self._order[1], step_in_epoch, self.plan.global_batch_size, self.plan.micro_batch_size, self.rank,
            self.world_size)]

    @staticmethod
    def _micro_batch(rows: pa.Table) -> MicroBatch:
        return MicroBatch([str(i) for i in rows.column("id").to_pylist()], _ragged(rows.column("input_ids")),
                          _ragged(rows.column("loss_mask")))


class AttemptLog:
    """Rank 0's record of every step one attempt ran (steps replayed after a resume included).

    Local files grow a line per step; on object stores the file is rewritten at checkpoints and the end.
    """

    def __init__(self, run_dir: str):
        self.path = storage.join(run_dir, "attempts", time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}.jsonl")
        self.local = isinstance(storage.filesystem(self.path)[0], LocalFileSystem)
        self.records: list[dict[str, Any]] = []
        storage.makedirs(storage.join(run_dir, "attempts"))

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.local:
            with storage.open_file(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if not self.local:
            storage.write_jsonl_atomic(self.path, self.records)


def train_loop_per_worker(job: dict[str, Any]) -> None:
    import ray.train
    from transformers import AutoTokenizer

    from reasonrank.training.deepspeed_engine import build_deepspeed_engine, load_causal_lm
    from reasonrank.training.export import export_hf
    from reasonrank.training.sft_loop import sft_steps
    from reasonrank.training.zero_config import build_ds_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, plan = SFTConfig.model_validate(job["cfg"]), TrainPlan(**job["plan"])
    rank, world_size = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    checkpoint = ray.train.get_checkpoint()
    stored = storage.join(job["run_dir"], os.path.basename(checkpoint.path.rstrip("/"))) if checkpoint else None
    universal = stored is not None and needs_conversion(saved_world_size(stored), world_size,
                                                        cfg.deepspeed.zero_stage)
    ds_config = build_ds_config(cfg.deepspeed, cfg.optimizer, micro_batch_size=cfg.train.micro_batch_size,
                                grad_accum=accumulation_steps(plan.global_batch_size, plan.micro_batch_size,
                                                              world_size),
                                world_size=world_size, load_universal=universal)
    loaded = load_causal_lm(cfg.model, ds_config)
    engine = build_deepspeed_engine(loaded.model, ds_config, cfg.optimizer, plan.total_steps)
    state = TrainState() if stored is None else _resume(engine, stored, universal, job["run_dir"], cfg, rank)
    log.info("rank %d of %d: %d micro-batches of %d per step", rank, world_size,
             ds_config["gradient_accumulation_steps"], plan.micro_batch_size)
    resumed_from = state.step
    attempt = AttemptLog(job["run_dir"]) if rank == 0 else None
    tensorboard = None
    if rank == 0 and cfg.tracking.tensorboard_dir:
        from reasonrank.training.tracking import TensorBoardLog

        tensorboard = TensorBoardLog(cfg.tracking.tensorboard_dir)
    batches = RankSamples(job["blocks"], cfg.data, plan, rank, world_size)
    for record in sft_steps(engine, plan, state, batches, job["pad_id"]):
        metrics = {k: v for k, v in record.items() if k != "samples"} | {"resumed_from_step": resumed_from}
        if rank == 0:
            if job.get("progress") is not None:
                job["progress"].report.remote(record["step"])  # the driver's progress line (no wait)
            log.info("step %d/%d epoch %d loss %.4f lr %.3g tokens/s %.0f step %.2fs", record["step"],
                     plan.total_steps, record["epoch"], record["loss"], record["lr"], record["tokens_per_s"],
                     record["step_time_s"])
            attempt.append(record)
            if tensorboard:
                tensorboard.log(record)
        if state.step % cfg.train.checkpoint_every == 0 or state.step == plan.last_step:
            if attempt:
                attempt.flush()
            _report_checkpoint(engine, state, metrics, cfg.storage.staging_dir)
        elif state.step % cfg.train.report_every == 0:
            ray.train.report(metrics)
    if tensorboard:
        tensorboard.close()
    if resumed_from > plan.last_step:  # a pause an earlier run had already passed: its export stands
        log.warning("the checkpoint is at step %d, past the pause at step %d: %s is left as it is", resumed_from,
                    plan.last_step, exported_model(cfg, plan))
        return
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path) if rank == 0 else None
    exported = exported_model(cfg, plan)
    export_hf(engine, tokenizer, exported, lora_base_path=cfg.model.path if cfg.model.lora else None)
    if rank == 0:
        storage.write_jsonl_atomic(storage.join(cfg.output_dir, "history.jsonl"), state.history)
        log.info("exported the model to %s", exported)


def _resume(engine: Any, stored: str, universal: bool, run_dir: str, cfg: SFTConfig, rank: int) -> TrainState:
    """The engine and RNGs restored from the stored checkpoint; the trainer state it saved. Each rank stages
    only the files it reads on the data volume (not all of them in /tmp: see training/staging.py)."""
    from reasonrank.training.checkpoint import load_training_state
    from reasonrank.training.staging import staged
    from reasonrank.training.universal_checkpoint import universal_copy

    source = universal_copy(stored, run_dir, rank, cfg.storage.staging_dir) if universal else nullcontext(stored)
    # a universal checkpoint has no per-rank files: every rank reads all of it
    with source as folder, staged(folder, None if universal else rank, cfg.storage.staging_dir,
                                  download=True) as directory:
        state = TrainState.from_dict(load_training_state(engine, directory))
    log.info("rank %d resumed at step %d (epoch %d, step %d in it)%s", rank, state.step, state.epoch,
             state.step_in_epoch, " from a checkpoint of another world size" if universal else "")
    return state


def _report_checkpoint(engine: Any, state: TrainState, metrics: dict[str, Any], staging_dir: str | None) -> None:
    """Each worker saves its part into a local folder on the staging volume; Ray Train merges them into one
    stored checkpoint."""
    import ray.train

    from reasonrank.training.checkpoint import save_training_state
    from reasonrank.training.staging import staging_root

    with tempfile.TemporaryDirectory(prefix="sft-checkpoint-", dir=staging_root(staging_dir),
                                     ignore_cleanup_errors=True) as local:
        save_training_state(engine, local, state.to_dict())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(local),
                         checkpoint_dir_name=f"checkpoint_{state.step:08d}")


# --- the summary --------------------------------------------------------------------------------------

def _summary(cfg: SFTConfig, plan: TrainPlan, samples: int, run_dir: str, result: Any) -> dict[str, Any]:
    from reasonrank.reporting import plot_curve

    history = list(storage.read_jsonl(storage.join(cfg.output_dir, "history.jsonl")))
    steps = [r["step"] for r in history]
    with storage.writing(storage.join(cfg.output_dir, "loss_curve.png")) as png:
        plot_curve(steps, {"loss": [r["loss"] for r in history]}, png,
                   f"SFT loss · {os.path.basename(cfg.model.path.rstrip('/'))}")
    last = (result.metrics or {}) if result is not None else {}
    summary = {
        "model": exported_model(cfg, plan),
        "steps": len(history),
        "planned_steps": plan.total_steps,
        "paused_at_step": plan.last_step if plan.pauses else None,
        "steps_per_epoch": plan.steps_per_epoch,
        "samples": samples,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "mean_tokens_per_s": float(np.mean([r["tokens_per_s"] for r in history])) if history else None,
        "mean_step_time_s": float(np.mean([r["step_time_s"] for r in history])) if history else None,
        "resumed_from_step": last.get("resumed_from_step"),
        "attempts": len(storage.listdir(storage.join(run_dir, "attempts"))),
        "checkpoints": run_dir,
        "loss_curve": storage.join(cfg.output_dir, "loss_curve.png"),
    }
    storage.write_text_atomic(storage.join(cfg.output_dir, "summary.json"), json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
