"""Configs: YAML validated into typed models, errors that name the wrong key; every shipped config loads."""
from __future__ import annotations

from pathlib import Path

import pytest

from reasonrank.config import ConfigError, load_config
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
def test_shipped_evaluate_configs_load(path):
    cfg = load_config(path, EvaluateConfig)
    assert cfg.strategy.build() is not None


def test_step_larger_than_window_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("strategy:\n  window_size: 10\n  step: 15\n")
    with pytest.raises(ConfigError, match="step .15. must not exceed window_size"):
        load_config(p, EvaluateConfig)


# ---- the prompt settings a model carries ------------------------------------------------------------------

def test_a_strategy_takes_the_prompt_settings_its_model_was_trained_with(tmp_path, caplog):
    import logging

    from reasonrank.config import PromptConfig, StrategyConfig, model_prompt, save_prompt

    model = str(tmp_path / "final")
    assert model_prompt(model) is None and StrategyConfig(step=5).for_model(model, logging.getLogger("t")) == \
        StrategyConfig(step=5)  # a model without the file: the config as it is
    save_prompt(model, PromptConfig(window_size=7, passage_max_tokens=33))
    assert model_prompt(model) == PromptConfig(window_size=7, passage_max_tokens=33)
    log = logging.getLogger("test.prompt")
    with caplog.at_level(logging.INFO, logger="test.prompt"):
        unset = StrategyConfig(step=5).for_model(model, log)
        assert (unset.window_size, unset.passage_max_tokens, unset.step) == (7, 33, 5)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        overridden = StrategyConfig(window_size=10, step=5).for_model(model, log)
    assert (overridden.window_size, overridden.passage_max_tokens) == (10, 33)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"strategy.window_size = 10 overrides the 7 that {model} was trained with"]


def test_every_stage_composes_the_one_prompt_piece():
    from jobs.grpo_config import RolloutConfig
    from jobs.sft_config import DemoSetConfig
    from jobs.synthesize import TeacherConfig
    from reasonrank.config import PromptConfig, StrategyConfig

    for model in (StrategyConfig, DemoSetConfig, TeacherConfig, RolloutConfig):
        assert issubclass(model, PromptConfig)
        assert {k: repr(model.model_fields[k]) for k in PromptConfig.model_fields} == \
            {k: repr(f) for k, f in PromptConfig.model_fields.items()}  # declared once, not again
