"""The GPU code paths' decisions, checked on a CPU: what each would do on a GPU machine is shown with fakes
standing for what a CPU lacks (a CUDA device, NCCL), and each fake says what it stands for."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


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
            assert all(v.device == self.device for v in batch.values() if isinstance(v, torch.Tensor))
            return type("Out", (), {"loss": torch.tensor(1.0)})()

        def backward(self, loss):
            pass

        def step(self):
            pass

    micro = sft_loop.MicroBatch(["a"], [[1, 2, 3]], [[0, 1, 1]])
    steps = sft_loop.sft_steps(Engine(), sft_loop.TrainPlan(1, 1, 1, 1), sft_loop.TrainState(),
                               lambda epoch, step: [micro], pad_id=0)
    with pytest.raises(_Stop):
        next(steps)
    assert seen == [torch.device("meta")]


def test_token_mean_is_the_mean_over_all_tokens_of_an_update_across_micro_batches_and_ranks():
    """DeepSpeed scales each micro-batch's loss by 1/grad_accum and averages the ranks' gradients; with the
    learner's denominator the resulting gradient is that of one token mean over every response token."""
    from reasonrank.rl.batch import pad_right
    from reasonrank.rl.losses import GRPOLoss

    torch.manual_seed(0)
    lengths = [[[3, 9], [1, 2]], [[7, 7], [12, 4]]]  # rank → micro-batch → response lengths (unequal on purpose)
    data = [[(torch.randn(len(mb), max(mb), requires_grad=True), pad_right([[1.0] * n for n in mb], max(mb)),
              torch.randn(len(mb))) for mb in rank] for rank in lengths]
    loss = GRPOLoss(kl_coef=0.0, aggregation="token_mean")
    grad_accum, ranks = 2, 2
    tokens = sum(n for rank in lengths for mb in rank for n in mb) / (grad_accum * ranks)
    deepspeed_objective = sum(loss(lp, lp.detach(), None, adv, mask, tokens=tokens)[0] / grad_accum
                              for rank in data for lp, mask, adv in rank) / ranks
    deepspeed_objective.backward()
    got = [lp.grad.clone() for rank in data for lp, _, _ in rank]

    flat = [(lp, mask, adv) for rank in data for lp, mask, adv in rank]
    for lp, _, _ in flat:
        lp.grad = None
    per_token = [-(adv.unsqueeze(-1) * torch.exp(lp - lp.detach())) * mask for lp, mask, adv in flat]
    everything = sum(t.sum() for t in per_token) / sum(mask.sum() for _, mask, _ in flat)
    everything.backward()
    for g, (lp, _, _) in zip(got, flat):
        torch.testing.assert_close(g, lp.grad)


@pytest.fixture(scope="module")
def vllm_cpu_engine(tiny_model_dir):
    from reasonrank.config import EngineConfig
    from reasonrank.engines import build_engine

    engine = build_engine(EngineConfig(backend="vllm", model=str(tiny_model_dir), dtype="float32",
                                       max_model_len=1024, enforce_eager=True, cpu_kvcache_gib=1))
    yield engine
    engine.close()


@pytest.mark.slow
def test_engine_logprob_gap_is_near_zero_at_any_sampling_temperature(vllm_cpu_engine, tiny_model_dir):
    """Same weights, same tokens: the logged engine-vs-learner gap is ~0 at temperature 0.5 too (vLLM reports
    the raw logits' log-probabilities, before temperature)."""
    from transformers import AutoModelForCausalLM

    from reasonrank.engines.base import SamplingParams
    from reasonrank.prompt import listwise_messages, render
    from reasonrank.rl.batch import engine_logprob_gap, pack, pad_right, response_logits

    messages = [listwise_messages("who first isolated zorvium", ["zorvium was isolated by a chemist", "a dog"])]
    gens = vllm_cpu_engine.generate(messages, SamplingParams(temperature=0.5, max_new_tokens=16, n=2, seed=3,
                                                             logprobs=True))
    tokenizer = vllm_cpu_engine.tokenizer
    prompt = tokenizer(render(tokenizer, messages[0]), add_special_tokens=False)["input_ids"]
    batch = pack([prompt] * len(gens), [g.token_ids for g in gens], pad_id=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = response_logits(model, batch)
    gap = engine_logprob_gap(logits, batch, pad_right([g.logprobs for g in gens], batch.response_len))
    assert gap < 1e-3


class _FakeStream:  # stands for a CUDA stream
    def synchronize(self):
        pass


def _receiver(events: list):
    """A vLLM worker with the weight-receiving extension mixed in; the reload records what it takes."""
    from types import SimpleNamespace

    from reasonrank.engines.vllm_worker_extension import WeightReceiver

    class Worker(WeightReceiver):
        device = torch.device("cpu")
        vllm_config = SimpleNamespace(model_config=SimpleNamespace(
            dtype=torch.float32, hf_config=SimpleNamespace(tie_word_embeddings=False)))
        model_runner = SimpleNamespace(get_model=lambda: torch.nn.Module())

        def reload_weights(self, weights_iterator):
            for name, _ in weights_iterator:
                events.append(("load", name))

    return Worker()


def test_a_broadcast_is_streamed_into_the_reload_one_tensor_at_a_time(monkeypatch):
    """The engine must not buffer the whole model before reloading: each tensor is received when the
    layer-wise reload asks for it. A fake communicator stands for NCCL, a fake stream for CUDA's."""
    events: list = []

    class Communicator:
        def broadcast(self, buffer, src, stream):
            events.append(("receive", tuple(buffer.shape)))
            buffer.fill_(1.0)

    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _FakeStream())
    worker = _receiver(events)
    worker._reasonrank_nccl = Communicator()
    specs = [(f"layers.{i}.weight", "float32", (i + 1, 2)) for i in range(3)]
    assert worker.reasonrank_receive_broadcast(specs) == 3
    assert events == [e for i in range(3) for e in (("receive", (i + 1, 2)), ("load", f"layers.{i}.weight"))]


def test_joining_a_rebuilt_group_releases_the_old_communicator(monkeypatch):
    """After an engine restart the group is rebuilt: each surviving engine worker destroys its old NCCL
    communicator before it joins the new one. Fakes stand for vLLM's NCCL communicator and store."""
    from types import SimpleNamespace

    import vllm.distributed.device_communicators.pynccl as pynccl
    import vllm.distributed.parallel_state as parallel_state
    import vllm.distributed.utils as vllm_utils

    events: list = []

    class Communicator:
        available, disabled = True, False  # libnccl loaded

        def __init__(self, group, device):
            self.port = group
            events.append(("open", group))

        def destroy(self):
            events.append(("destroy", self.port))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(pynccl, "PyNcclCommunicator", Communicator)
    monkeypatch.setattr(vllm_utils.StatelessProcessGroup, "create", staticmethod(lambda **kw: kw["port"]))
    monkeypatch.setattr(parallel_state, "get_world_group", lambda: SimpleNamespace(rank=0))
    worker = _receiver(events)
    worker.reasonrank_init_broadcast_group("127.0.0.1", 1001, 1, 2)
    worker.reasonrank_init_broadcast_group("127.0.0.1", 1002, 1, 2)
    assert events == [("open", 1001), ("destroy", 1001), ("open", 1002)]


def test_an_nccl_communicator_that_disabled_itself_is_refused_before_any_broadcast(monkeypatch):
    """vLLM's NCCL communicator disables itself when libnccl cannot be loaded, logging at most: its broadcasts
    then return at once having sent nothing, and the engines wait forever. Here the real communicator on a
    real two-member group, on a machine without NCCL (as a node whose libnccl is missing); only CUDA, which
    the broadcaster checks first, is faked."""
    import socket
    import threading

    from vllm.distributed.utils import StatelessProcessGroup

    from reasonrank.engines.weight_broadcast import WeightBroadcaster

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    peer = threading.Thread(target=StatelessProcessGroup.create, daemon=True,
                            kwargs=dict(host="127.0.0.1", port=port, rank=1, world_size=2))
    peer.start()
    with pytest.raises(RuntimeError, match=r"rank 0 of 2's NCCL communicator is disabled \(libnccl could not be "
                                           r"loaded: .*VLLM_NCCL_SO_PATH"):
        WeightBroadcaster("127.0.0.1", port, world_size=2, device="cuda:0")
    peer.join(timeout=30)


@pytest.mark.slow
def test_the_prefix_cache_reset_waits_for_held_blocks_and_fails_loudly_if_they_stay(vllm_cpu_engine, monkeypatch):
    """vLLM resets nothing while a request holds KV blocks, and says so only by returning False. After a weight
    load none may run (new ones are held), so blocks still held are about to be freed: the reset waits for
    them, and raises if they stay. A long generation stands for such blocks."""
    import threading
    import time

    from reasonrank.engines.base import SamplingParams
    from reasonrank.prompt import listwise_messages

    messages = [listwise_messages("who first isolated zorvium", ["zorvium was isolated by a chemist", "a dog"])]
    running = threading.Thread(target=vllm_cpu_engine.generate, daemon=True,
                               args=(messages, SamplingParams(max_new_tokens=900, ignore_eos=True)))
    running.start()
    while vllm_cpu_engine.windows_in_flight() == 0:
        time.sleep(0.01)
    engine_class = type(vllm_cpu_engine)
    monkeypatch.setattr(engine_class, "PREFIX_RESET_TIMEOUT_S", 0.5)
    with pytest.raises(RuntimeError, match=r"prefix cache could not be reset: 1 request\(s\) still hold KV blocks"):
        vllm_cpu_engine.reset_prefix_cache()
    assert running.is_alive()
    monkeypatch.setattr(engine_class, "PREFIX_RESET_TIMEOUT_S", 300.0)
    vllm_cpu_engine.reset_prefix_cache()  # returns once the generation has let its blocks go
    running.join(timeout=10)
    assert not running.is_alive()


@pytest.mark.parametrize("job, key", [("sft", "model.attn_implementation"), ("grpo", "learner.attn_implementation")])
def test_an_attention_backend_that_is_not_installed_fails_validation(job, key):
    """flash-attn is in neither requirements file nor the image: asking for it must fail when the config is
    read, naming the key and the missing package, not at model load on every GPU worker."""
    from importlib.util import find_spec

    from reasonrank.config import ConfigError, load_config

    if find_spec("flash_attn") or find_spec("kernels"):
        pytest.skip("flash-attn (or kernels) is installed here")
    model = {"sft": "jobs.sft_config:SFTConfig", "grpo": "jobs.grpo_config:GRPOConfig"}[job]
    module, name = model.split(":")
    config = getattr(__import__(module, fromlist=[name]), name)
    path = REPO / "configs" / {"sft": "sft-qwen2.5-7b.yaml", "grpo": "grpo-qwen2.5-7b.yaml"}[job]
    with pytest.raises(ConfigError, match=rf"{key}: .*needs the flash-attn package .* neither is installed"):
        load_config(path, config, {key: "flash_attention_2"})
    with pytest.raises(ConfigError, match=rf"{key}: .*unknown attn_implementation 'flash2'"):
        load_config(path, config, {key: "flash2"})
    assert load_config(path, config).model_dump()[key.split(".")[0]]["attn_implementation"] == "sdpa"


@pytest.mark.slow
def test_the_reference_actor_decides_its_precision_where_it_runs(ray_cluster, tiny_model_dir, monkeypatch):
    """`precision: auto` means bf16 on CUDA: a driver that sees a GPU (or none) must not decide it for an actor
    on another machine. The driver here pretends to see one; the actor, on this CPU, must stay in fp32."""
    import ray

    from actors.reference import ReferenceWorker
    from reasonrank.training.config import DeepSpeedConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    reference = ReferenceWorker.remote(str(tiny_model_dir), DeepSpeedConfig(precision="auto"), 2, 1.0, 0)
    try:
        dtype = ray.get(reference.__ray_call__.remote(lambda worker: str(worker.policy.model.dtype)))
    finally:
        ray.kill(reference)
    assert dtype == "torch.float32"


def test_learners_are_strictly_packed_and_engines_kept_on_their_labelled_nodes(monkeypatch):
    """A ZeRO-3 group split over pods all-gathers over TCP: the learners' placement group is STRICT_PACK, and
    learners and engines go to the nodes of their role. Fakes record what Ray would be asked."""
    import actors.learner as learner
    import actors.rollout_worker as rollout_worker
    from reasonrank.config import EngineConfig

    asked = {}

    def placement_group(bundles, strategy=None, bundle_label_selector=None, **_):
        asked["learners"] = (strategy, bundle_label_selector)
        raise _Stop

    class Worker:
        @staticmethod
        def options(**options):
            asked["engines"] = options.get("label_selector")
            raise _Stop

    monkeypatch.setattr(learner, "placement_group", placement_group)
    monkeypatch.setattr(rollout_worker, "RemoteRolloutWorker", Worker)
    with pytest.raises(_Stop):
        learner.LearnerGroup(None, 4, 8.0, 1.0, {"reasonrank.io/role": "learner"})
    with pytest.raises(_Stop):
        rollout_worker.RolloutGroup(EngineConfig(), 2, 8.0, 2.0, 512, {"reasonrank.io/role": "rollout"})
    assert asked == {"learners": ("STRICT_PACK", [{"reasonrank.io/role": "learner"}] * 4),
                     "engines": {"reasonrank.io/role": "rollout"}}


def test_the_grpo_gpu_profile_fits_its_rayjob_one_learner_node_and_labelled_groups():
    import yaml

    from jobs.grpo_config import GRPOConfig
    from reasonrank.config import load_config

    cfg = load_config(REPO / "configs" / "grpo-qwen2.5-7b.yaml", GRPOConfig)
    job = yaml.safe_load((REPO / "cluster" / "manifests" / "rayjob-grpo-qwen2.5-7b.yaml").read_text())
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    for part, labels in (("learner", cfg.learner.node_labels), ("rollout", cfg.rollout.node_labels)):
        carrying = [g for g in groups if labels and labels.items() <= g["labels"].items()]
        assert carrying, f"no worker group carries {part} node labels {labels}"
    (learner_group,) = [g for g in groups if cfg.learner.node_labels.items() <= g["labels"].items()]
    pod = learner_group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(pod["nvidia.com/gpu"]) >= cfg.learner.replicas * cfg.learner.num_gpus  # all ranks on one pod
    assert float(pod["cpu"]) >= cfg.learner.replicas * cfg.learner.num_cpus


def test_a_resuming_rank_fetches_only_the_files_it_reads_into_the_staging_folder(tmp_path, monkeypatch):
    """A 7B ZeRO-3 checkpoint is ~100 GB: staged on the data volume (not /tmp on the container's root
    filesystem), and each rank fetches the shared files and its own partition only."""
    import os

    import fsspec

    from reasonrank.training import staging

    fs = fsspec.filesystem("memory")
    names = ["latest", "trainer_state.json", "rng_state_rank0.pt", "rng_state_rank1.pt"] + [
        f"state/{kind}zero_pp_rank_{r}_mp_rank_00_{what}_states.pt"
        for r in (0, 1) for kind, what in (("", "model"), ("bf16_", "optim"))]
    for name in names:
        fs.pipe(f"/run/step-000004/{name}", b"x")
    volume = tmp_path / "data"
    volume.mkdir()
    monkeypatch.setattr(staging, "DATA_VOLUME", str(volume))
    with staging.staged("memory://run/step-000004", 1, download=True) as local:
        assert local.startswith(str(volume / "staging"))
        fetched = sorted(os.path.relpath(os.path.join(d, f), local) for d, _, files in os.walk(local) for f in files)
    assert fetched == ["latest", "rng_state_rank1.pt", "state/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
                       "state/zero_pp_rank_1_mp_rank_00_model_states.pt", "trainer_state.json"]
    assert os.listdir(volume / "staging") == []  # removed after use
    assert staging.staging_root(str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")
    fs.rm("/run", recursive=True)


def _long_sample(words: int):
    from reasonrank.data.training_sets import RLSample

    passages = [" ".join(["zorvium was isolated by a chemist"] * words), " ".join(["a lazy dog"] * words), "towns"]
    return RLSample("long-1", "q1", "d", "who first isolated zorvium", ["d1", "d2", "d3"], passages,
                    ["d1", "d2", "d3"], ["d1"], {})


def test_a_prompt_too_long_for_the_engine_is_cut_to_fit_and_says_so(tiny_model_dir):
    from transformers import AutoTokenizer

    from reasonrank.rl.prompt_fit import fit_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sample = _long_sample(40)
    whole = fit_prompt(sample, tokenizer, 512, 100_000)
    assert whole.cut_to is None
    cut = fit_prompt(sample, tokenizer, 512, len(whole.ids) - 50)
    assert len(cut.ids) <= len(whole.ids) - 50 and cut.cut_to is not None and cut.cut_to < 512
    assert len(fit_prompt(sample, tokenizer, cut.cut_to + 1, 100_000).ids) > len(whole.ids) - 50  # the largest
    with pytest.raises(ValueError, match="even with empty passages"):
        fit_prompt(sample, tokenizer, 512, 20)


@pytest.mark.slow
def test_the_engine_takes_a_cut_prompt_it_would_refuse_whole(vllm_cpu_engine, tiny_model_dir):
    """max_model_len 1024: the whole prompt is refused (what killed a GRPO step), the cut one is answered."""
    from reasonrank.engines.base import SamplingParams
    from reasonrank.rl.prompt_fit import fit_prompt

    tokenizer = vllm_cpu_engine.tokenizer
    sample, params = _long_sample(120), SamplingParams(temperature=1.0, max_new_tokens=64, seed=0)
    whole = fit_prompt(sample, tokenizer, 512, 100_000)
    assert len(whole.ids) > 1024
    with pytest.raises(Exception, match="max_model_len|maximum model length"):
        vllm_cpu_engine.generate([whole.messages], params)
    cut = fit_prompt(sample, tokenizer, 512, 1024 - params.max_new_tokens)
    (generation,) = vllm_cpu_engine.generate([cut.messages], params)
    assert generation.prompt_tokens == len(cut.ids) <= 1024 - 64


def test_the_grpo_config_check_warns_when_prompts_may_not_fit_the_engine():
    from jobs.grpo_config import GRPOConfig
    from reasonrank.config import ConfigError, load_config

    path = REPO / "configs" / "grpo-qwen2.5-7b.yaml"
    with pytest.warns(UserWarning, match="may exceed rollout.engine.max_model_len"):
        load_config(path, GRPOConfig, {"rollout.engine.max_model_len": 8192})
    with pytest.raises(ConfigError, match="leaves no room for a prompt"):
        load_config(path, GRPOConfig, {"rollout.engine.max_model_len": 3072})
