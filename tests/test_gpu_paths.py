"""The GPU code paths' decisions, checked on a CPU: what each would do on a GPU machine is shown with fakes
standing for what a CPU lacks (a CUDA device, NCCL), and each fake says what it stands for."""
from __future__ import annotations

import pytest
import torch


class _Stop(Exception):
    pass


def test_sft_step_reduces_its_statistics_on_the_models_device(monkeypatch):
    """NCCL reduces CUDA tensors only: the step's all-reduce must use the model's device, not the CPU.
    The `meta` device stands for a GPU; a fake all-reduce records the device it was handed."""
    from reasonrank.training import sft_loop

    seen: list[torch.device] = []

    def all_reduce(t):
        seen.append(t.device)
        raise _Stop

    monkeypatch.setattr(sft_loop.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sft_loop.dist, "all_reduce", all_reduce)

    class Engine:  # a DeepSpeed engine whose model lives on another device
        device = torch.device("meta")

        def get_lr(self):
            return [1e-5]

        def __call__(self, **batch):
            assert all(v.device == self.device for v in batch.values())
            return type("Out", (), {"loss": torch.tensor(1.0)})()

        def backward(self, loss):
            pass

        def step(self):
            pass

    micro = sft_loop.MicroBatch(["a"], [[1, 2, 3]], [[0, 1, 1]])
    steps = sft_loop.sft_steps(Engine(), sft_loop.TrainPlan(1, 1, 1), sft_loop.TrainState(),
                               lambda epoch: iter([micro]), pad_id=0)
    with pytest.raises(_Stop):
        next(steps)
    assert seen == [torch.device("meta")]
