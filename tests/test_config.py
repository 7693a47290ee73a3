"""Configs: YAML validated into typed models, errors that name the wrong key; every shipped config loads."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from reasonrank.config import ConfigError, load_config, parse_config
from jobs.evaluate import EvaluateConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_misspelled_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("strategy:\n  window_sise: 20\n")
    with pytest.raises(ConfigError, match=r"strategy\.window_sise"):
        load_config(p, EvaluateConfig)


def test_wrong_type_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sampling:\n  max_new_tokens: lots\n")
    with pytest.raises(ConfigError, match=r"sampling\.max_new_tokens"):
        load_config(p, EvaluateConfig)


def test_not_a_mapping_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p, EvaluateConfig)
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "absent.yaml", EvaluateConfig)


def test_dotted_overrides_apply_before_validation(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("strategy:\n  window_size: 20\n")
    cfg = load_config(p, EvaluateConfig, {"strategy.step": 5, "engine.model": "m"})
    assert (cfg.strategy.window_size, cfg.strategy.step, cfg.engine.model) == (20, 5, "m")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("evaluate-*.yaml")), ids=lambda p: p.name)
def test_shipped_evaluate_configs_build_the_strategy_they_describe(path):
    from reasonrank.strategies import STRATEGIES

    written = yaml.safe_load(path.read_text())["strategy"]
    strategy = load_config(path, EvaluateConfig).strategy
    built = strategy.build()
    assert type(built) is STRATEGIES[written["name"]]
    keys = [k for k in ("window_size", "step", "depth") if k in type(strategy).model_fields]  # those it reads
    assert {k: getattr(built, k) for k in keys} == {k: written[k] for k in keys}


def test_every_shipped_job_config_loads():
    from jobs.grpo import GRPOConfig
    from jobs.sft_config import SFTConfig
    from jobs.synthesize import SynthesizeConfig
    from serve.config import ServeConfig

    models = {"evaluate": EvaluateConfig, "grpo": GRPOConfig, "serve": ServeConfig, "sft": SFTConfig,
              "synthesize": SynthesizeConfig}
    loaded = [load_config(p, models[p.name.split("-")[0]]) for p in sorted(CONFIGS.glob("*.yaml"))
              if p.name.split("-")[0] in models]
    assert {type(cfg) for cfg in loaded} == set(models.values())


# Each strategy's config with values that are none of its defaults, and the strategy it must build from them.
BUILT = [
    ({"name": "sliding_window", "window_size": 7, "step": 3, "depth": 30}, "SlidingWindow",
     {"window_size": 7, "step": 3, "depth": 30}),
    ({"name": "one_shot", "depth": 12}, "OneShot", {"depth": 12}),
    ({"name": "iterative_elimination", "depth": 9, "stop_at": 3}, "IterativeElimination", {"depth": 9, "stop_at": 3}),
    ({"name": "tdpart", "window_size": 8, "depth": 40, "cutoff": 3}, "TopDownPartition",
     {"window_size": 8, "depth": 40, "cutoff": 3}),
    ({"name": "parallel_blocks", "window_size": 6, "depth": 24, "rerank_top": True}, "ParallelBlocks",
     {"window_size": 6, "depth": 24, "rerank_top": True}),
]


@pytest.mark.parametrize("keys,cls,params", BUILT, ids=[b[1] for b in BUILT])
def test_each_strategy_config_builds_its_strategy_with_its_parameters(keys, cls, params):
    from reasonrank import strategies
    from reasonrank.config import ReasoningConfig

    cfg = parse_config({**keys, "reasoning": {"mode": "none", "answer_tokens": 40}}, strategies.StrategyConfig)
    built = cfg.build()
    assert type(built) is getattr(strategies, cls) and built.name == keys["name"]
    assert vars(built) == {**params, "reasoning": ReasoningConfig(mode="none", answer_tokens=40)}


@pytest.mark.parametrize("data,message", [
    ({"strategy": {"name": "one_shot", "window_size": 20}}, "strategy.window_size: strategy 'one_shot' does not"),
    ({"strategy": {"name": "iterative_elimination", "step": 5}},
     "strategy.step: strategy 'iterative_elimination' does not"),
    ({"strategy": {"name": "tdpart", "rerank_top": True}}, "strategy.rerank_top: strategy 'tdpart' does not"),
    ({"engine": {"backend": "transformers", "seed": 3}}, "engine.seed: engine 'transformers' does not"),
    ({"engine": {"backend": "openai", "dtype": "float32"}}, "engine.dtype: engine 'openai' does not"),
    ({"engine": {"max_concurrency": 4}}, "engine.max_concurrency: engine 'vllm' does not"),  # vllm when unnamed
])
def test_a_key_the_chosen_part_does_not_read_is_an_error_naming_it_and_the_part(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data, EvaluateConfig)


def test_an_override_that_picks_another_part_drops_the_keys_written_for_the_one_it_replaces():
    tiny = CONFIGS / "evaluate-tiny.yaml"
    cfg = load_config(tiny, EvaluateConfig, {"strategy.name": "tdpart", "engine.backend": "transformers"})
    written = yaml.safe_load(tiny.read_text())
    assert cfg.strategy.model_dump() == {
        "name": "tdpart", "window_size": written["strategy"]["window_size"], "cutoff": None,
        "depth": written["strategy"]["depth"], "passage_max_tokens": written["strategy"]["passage_max_tokens"],
        "reasoning": {"mode": "think", "budget_tokens": None, "answer_tokens": 192}}  # step: the sliding window's
    assert cfg.engine.model_dump() == {"backend": "transformers", "model": written["engine"]["model"],
                                       "dtype": written["engine"]["dtype"],
                                       "max_model_len": written["engine"]["max_model_len"]}
    with pytest.raises(ConfigError, match=re.escape("strategy.window_size: strategy 'one_shot' does not")):
        load_config(tiny, EvaluateConfig, {"strategy.name": "one_shot", "strategy.window_size": 4})  # set with it


def test_step_larger_than_window_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("strategy:\n  window_size: 10\n  step: 15\n")
    with pytest.raises(ConfigError, match="step .15. must not exceed window_size"):
        load_config(p, EvaluateConfig)


# ---- the prompt settings a model carries ------------------------------------------------------------------

def test_a_strategy_takes_the_prompt_settings_its_model_was_trained_with(tmp_path, caplog):
    import logging

    from reasonrank.config import PromptConfig, model_prompt, save_prompt
    from reasonrank.strategies import StrategyConfig

    model = str(tmp_path / "final")
    assert model_prompt(model) is None and StrategyConfig(step=5).for_model(model, logging.getLogger("t")) == \
        StrategyConfig(step=5)  # a model without the file: the config as it is
    save_prompt(model, PromptConfig(window_size=7, passage_max_tokens=33))
    assert model_prompt(model) == PromptConfig(window_size=7, passage_max_tokens=33)
    log = logging.getLogger("test.prompt")
    with caplog.at_level(logging.INFO, logger="test.prompt"):
        unset = StrategyConfig(step=5).for_model(model, log)
        assert (unset.window_size, unset.passage_max_tokens, unset.step) == (7, 33, 5)
        whole = StrategyConfig(name="one_shot", depth=9).for_model(model, log)  # one window: no window_size
        assert whole == StrategyConfig(name="one_shot", depth=9, passage_max_tokens=33)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        overridden = StrategyConfig(window_size=10, step=5).for_model(model, log)
    assert (overridden.window_size, overridden.passage_max_tokens) == (10, 33)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"strategy.window_size = 10 overrides the 7 that {model} was trained with"]


def test_every_stage_composes_the_one_prompt_piece():
    from jobs.grpo_config import RolloutConfig
    from jobs.sft_config import DemoSetConfig
    from jobs.synthesize import TeacherConfig
    from reasonrank.config import PassageBudget, PromptConfig
    from reasonrank.strategies import CONFIGS, OneShotConfig
    from reasonrank.strategies.iterative_elimination import IterativeEliminationConfig

    windowed = [c for c in CONFIGS if c not in (OneShotConfig, IterativeEliminationConfig)]
    for model in (*windowed, DemoSetConfig, TeacherConfig, RolloutConfig):
        assert issubclass(model, PromptConfig), model
    for model in (OneShotConfig, IterativeEliminationConfig):  # they show all their candidates at once
        assert issubclass(model, PassageBudget) and "window_size" not in model.model_fields
    for model in (*CONFIGS, DemoSetConfig, TeacherConfig, RolloutConfig):
        assert {k: repr(f) for k, f in model.model_fields.items() if k in PromptConfig.model_fields} == \
            {k: repr(f) for k, f in PromptConfig.model_fields.items() if k in model.model_fields}  # declared once


def test_the_configuration_page_lists_the_keys_the_models_declare():
    from reasonrank.config_reference import reference

    page = (CONFIGS.parent / "docs" / "configuration.md").read_text()
    assert reference() in page, "regenerate the tables: python -m reasonrank.config_reference"
    assert "| `one_shot` | `passage_max_tokens` (512), `depth` (100), `reasoning`" in reference()
