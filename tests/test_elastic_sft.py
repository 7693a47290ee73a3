"""Elastic SFT: the worker range in the config, the global batch at any world size (the data cursor re-split
after a resize, the accumulation rule), and checkpoints that load at another world size (real DeepSpeed on
gloo, ranks as processes of this machine)."""
from __future__ import annotations

import numpy as np
import pytest

from reasonrank.training.global_batch import accumulation_steps, epoch_order, rank_micro_batches

BASE = {"data": {"path": "sft.parquet"}, "model": {"path": "model"}}


# --- the config ---------------------------------------------------------------------------------------

def _sft_config(scaling: dict, train: dict):
    from jobs.sft_config import SFTConfig

    return SFTConfig.model_validate(BASE | {"scaling": scaling, "train": train})


def test_num_workers_takes_a_fixed_count_or_a_range():
    assert list(_sft_config({"num_workers": [2, 4]}, {"micro_batch_size": 1, "global_batch_size": 12})
                .scaling.world_sizes) == [2, 3, 4]
    assert list(_sft_config({"num_workers": 3}, {"micro_batch_size": 2, "global_batch_size": 6})
                .scaling.world_sizes) == [3]


@pytest.mark.parametrize("bad", [[3, 2], [0, 2], 0])
def test_an_impossible_worker_range_is_refused_naming_the_key(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as raised:
        _sft_config({"num_workers": bad}, {})
    assert "scaling.num_workers" in str(raised.value) and "min <= max" in str(raised.value)


def test_a_world_size_that_cannot_split_the_global_batch_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"global_batch_size=8 cannot be split over 3 worker\(s\)"):
        _sft_config({"num_workers": [2, 4]}, {"micro_batch_size": 1, "global_batch_size": 8})


def test_shipped_tiny_profile_is_elastic_and_its_batch_divides_at_every_size():
    from pathlib import Path

    from jobs.sft_config import SFTConfig
    from reasonrank.config import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "sft-tiny.yaml", SFTConfig)
    assert len(cfg.scaling.world_sizes) > 1
    assert [accumulation_steps(cfg.train.global_batch_size, cfg.train.micro_batch_size, w)
            for w in cfg.scaling.world_sizes] == [2, 1]


# --- the global batch ---------------------------------------------------------------------------------

def test_accumulation_keeps_the_global_batch():
    assert accumulation_steps(24, 2, 1) == 12
    assert accumulation_steps(24, 2, 3) == 4
    assert accumulation_steps(24, 4, 2) == 3
    with pytest.raises(ValueError, match="multiple of micro_batch_size × workers = 10"):
        accumulation_steps(24, 2, 5)


def _trained(order: np.ndarray, steps: range, world_size: int) -> dict[int, list[list[int]]]:
    """Each step's micro-batches, all ranks in rank order, as `world_size` ranks train them."""
    return {s: [mb.tolist() for rank in range(world_size)
                for mb in rank_micro_batches(order, s, 24, 2, rank, world_size)] for s in steps}


def test_after_a_resize_the_rest_of_the_epoch_is_shared_among_the_new_ranks():
    """Steps 0-2 on 3 ranks, the node lost, steps 3-4 on 2, capacity back, steps 5-6 on 4: every step trains
    the very micro-batches an uninterrupted 3-rank run trains, each sample of the epoch once."""
    order = epoch_order(200, epoch=1, seed=7, shuffle=True)
    uninterrupted = _trained(order, range(7), 3)
    elastic = _trained(order, range(3), 3) | _trained(order, range(3, 5), 2) | _trained(order, range(5, 7), 4)
    assert elastic == uninterrupted
    samples = [i for s in range(7) for mb in elastic[s] for i in mb]
    assert sorted(samples) == sorted(order[:7 * 24].tolist())  # none repeated, none skipped
    # each rank's share: consecutive micro-batches of the step, its accumulation's worth
    assert [len(rank_micro_batches(order, 3, 24, 2, r, 2)) for r in range(2)] == [6, 6]
    assert rank_micro_batches(order, 3, 24, 2, 1, 2)[0].tolist() == order[72 + 12:72 + 14].tolist()


def test_each_epoch_has_its_own_order_the_same_on_every_attempt():
    first, again, second = (epoch_order(50, e, seed=3, shuffle=True) for e in (0, 0, 1))
    assert first.tolist() == again.tolist() and first.tolist() != second.tolist()
    assert sorted(first.tolist()) == list(range(50)) and first.tolist() != list(range(50))
    assert epoch_order(5, 4, seed=3, shuffle=False).tolist() == [0, 1, 2, 3, 4]


def test_the_loop_continues_from_a_global_cursor_and_turns_epochs():
    """A state saved at (epoch 0, step 3 of 4) asks for step 3, then the next epoch's steps from 0."""
    import torch

    from reasonrank.training import sft_loop

    class Engine:  # the engine surface the loop uses; the loss does not matter here
        device = torch.device("cpu")

        def get_lr(self):
            return [1e-3]

        def __call__(self, **batch):
            return type("Out", (), {"loss": torch.tensor(1.0)})()

        def backward(self, loss):
            pass

        def step(self):
            pass

    asked = []

    def step_batches(epoch, step_in_epoch):
        asked.append((epoch, step_in_epoch))
        return [sft_loop.MicroBatch([f"{epoch}-{step_in_epoch}"], [[1, 2, 3]], [np.array([0, 1, 1], np.int8)])]

    state = sft_loop.TrainState(step=3, epoch=0, step_in_epoch=3)
    plan = sft_loop.TrainPlan(total_steps=7, steps_per_epoch=4, global_batch_size=1, micro_batch_size=1)
    records = list(sft_loop.sft_steps(Engine(), plan, state, step_batches, pad_id=0))
    assert asked == [(0, 3), (1, 0), (1, 1), (1, 2)]
    assert [(r["step"], r["epoch"]) for r in records] == [(4, 0), (5, 1), (6, 1), (7, 1)]
    assert (state.epoch, state.step_in_epoch) == (1, 3)


# --- checkpoints at another world size --------------------------------------------------------------------

GLOBAL_BATCH, MICRO_BATCH = 4, 1


def _rank_main(rank: int, world_size: int, port: int, job: dict) -> None:
    """One rank: build the engine, maybe resume from `job["resume"]`, train `job["steps"]`, save when asked,
    and write each step's loss (mean over all ranks' micro-batches) to `job["losses"]`."""
    import faulthandler
    import json
    import os
    from pathlib import Path

    import torch.distributed as dist

    from reasonrank.training.checkpoint import load_training_state, save_training_state, saved_world_size
    from reasonrank.training.config import DeepSpeedConfig, ModelConfig, OptimizerConfig
    from reasonrank.training.deepspeed_engine import build_deepspeed_engine, load_causal_lm
    from reasonrank.training.sft_loop import MicroBatch, _one_step
    from reasonrank.training.universal_checkpoint import needs_conversion, universal_copy
    from reasonrank.training.zero_config import build_ds_config

    faulthandler.enable()  # a native abort (gloo, DeepSpeed) prints each thread's Python stack
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    resume = job.get("resume")
    universal = bool(resume) and needs_conversion(saved_world_size(resume), world_size, job["stage"])
    optim = OptimizerConfig(lr=5e-3, warmup_ratio=0.0, schedule="linear")
    ds_config = build_ds_config(DeepSpeedConfig(zero_stage=job["stage"], precision="fp32"), optim,
                                micro_batch_size=MICRO_BATCH,
                                grad_accum=accumulation_steps(GLOBAL_BATCH, MICRO_BATCH, world_size),
                                world_size=world_size, load_universal=universal)
    engine = build_deepspeed_engine(load_causal_lm(ModelConfig(path=job["model"]), ds_config).model, ds_config,
                                    optim, total_steps=10)
    step = 0
    if resume:
        if universal:
            with universal_copy(resume, job["run_dir"], rank, None) as converted:
                step = load_training_state(engine, converted)["step"]
        else:
            step = load_training_state(engine, resume)["step"]
    order = np.arange(len(job["samples"]))
    losses = []
    for _ in range(job["steps"]):
        micro = [MicroBatch([str(i) for i in idx], [job["samples"][i] for i in idx],
                            [np.ones(len(job["samples"][i]), np.int8) for i in idx])
                 for idx in rank_micro_batches(order, step, GLOBAL_BATCH, MICRO_BATCH, rank, world_size)]
        losses.append(_one_step(engine, micro, 0, engine.device, 0, step + 1)["loss"])
        step += 1
        if step == job.get("save_at"):
            save_training_state(engine, job["save"], {"step": step})
    if rank == 0:
        Path(job["losses"]).write_text(json.dumps(losses))
    # no rank closes its gloo connections while another may still be in a collective: a peer that goes away
    # mid-operation makes gloo abort the process that is left (SIGABRT)
    dist.barrier()
    dist.destroy_process_group()


def _spawn(world_size: int, job: dict) -> list[float]:
    import json

    import torch.multiprocessing as mp

    from reasonrank.ports import free_port

    mp.spawn(_rank_main, args=(world_size, free_port(), job), nprocs=world_size)
    with open(job["losses"]) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "saved_at", "loaded_at"), [(2, 2, 1), (3, 1, 2)])
def test_a_zero_checkpoint_loads_at_another_world_size_and_trains_on_identically(tmp_path, tiny_model_dir, stage,
                                                                                  saved_at, loaded_at):
    """Saved after one step at one world size, loaded at another: the next three steps (the first shows the
    weights, the second the Adam moments, the third the schedule too) give the losses the original ranks give."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [f"passage {i} about topic {i % 5}: " + "relevance " * (3 + i) for i in range(16)]  # 4 steps of 4
    samples = [tokenizer(t)["input_ids"] for t in texts]
    common = {"model": str(tiny_model_dir), "stage": stage, "samples": samples, "run_dir": str(tmp_path)}
    checkpoint = str(tmp_path / "checkpoint_00000001")
    continued = _spawn(saved_at, common | {"steps": 4, "save_at": 1, "save": checkpoint,
                                           "losses": str(tmp_path / "continued.json")})
    resumed = _spawn(loaded_at, common | {"steps": 3, "resume": checkpoint, "losses": str(tmp_path / "resumed.json")})
    assert resumed == pytest.approx(continued[1:], rel=1e-5)
    assert continued[2] != pytest.approx(continued[1], rel=1e-3)  # the steps did change the model
