"""GRPOSettings: TRL-named fields reach trl.GRPOConfig unchanged, every field is a `train` flag
(old flag names included), and settings saved under the names before issue 16 still load."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from rlvr_lens.cli import train as train_command
from rlvr_lens.cli.dataclass_args import field_types, flag
from rlvr_lens.errors import UserError
from rlvr_lens.train.settings import RENAMED, TRL_FIELDS, AdapterConfig, GRPOSettings, upgrade_settings_dict

#: A value for every scalar field, each different from the field's default (and valid together).
CHOSEN = {
    "reward": "format",
    "random_p": 0.25,
    "max_steps": 7,
    "prompts_per_step": 3,
    "num_generations": 4,
    "learning_rate": 3e-4,
    "beta": 0.04,
    "epsilon": 0.28,
    "steps_per_generation": 2,
    "max_completion_length": 24,
    "temperature": 0.7,
    "divergence_weighting": True,
    "template": "boxed",
    "save_steps": 5,
    "eval_steps": 3,
    "eval_max_new_tokens": 40,
    "seed": 11,
    "num_iterations": 2,
    "micro_batch_size": 2,
    "loss_type": "dr_grpo",
    "track_kl": False,
    "one_shot": True,
    "eval_batch_size": 5,
    "gradient_checkpointing": True,
}


def _parser():
    parser = argparse.ArgumentParser(prog="rlvr-lens")
    train_command.register(parser.add_subparsers(dest="command"))
    return parser


def _settings(*argv: str) -> GRPOSettings:
    args = _parser().parse_args(["train", "--model", "m", "--data", "d", "--out", "o", *argv])
    return train_command.settings_from_args(args)


def _argv(values: dict) -> list[str]:
    argv = []
    for name, value in values.items():
        if isinstance(value, bool):
            default = GRPOSettings.__dataclass_fields__[name].default
            if value != default:
                argv.append(flag(name) if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag(name), str(value)]
    return argv


def test_every_field_but_the_adapter_is_a_flag_and_chosen_values_round_trip():
    names = {f.name for f in dataclasses.fields(GRPOSettings)}
    assert set(field_types(GRPOSettings)) == names - {"adapter"}  # the adapter has its own three flags
    assert set(CHOSEN) == names - {"adapter"}
    defaults = GRPOSettings()
    assert all(CHOSEN[k] != getattr(defaults, k) for k in CHOSEN)  # so that a flag that is ignored is caught
    settings = _settings(*_argv(CHOSEN))
    settings.check()
    assert dataclasses.asdict(settings) == {**CHOSEN, "adapter": None}


def test_no_flags_give_the_dataclass_defaults_with_the_evaluation_length_following_the_sampling_one():
    assert _settings() == GRPOSettings()
    settings = _settings("--max-completion-length", "24")
    assert (settings.max_completion_length, settings.eval_max_new_tokens) == (24, 24)
    assert _settings("--max-completion-length", "24", "--eval-max-new-tokens", "9").eval_max_new_tokens == 9


def test_old_flag_names_give_the_same_settings():
    old = _settings("--steps", "7", "--group-size", "4", "--lr", "3e-4", "--kl-coef", "0.04", "--clip-eps", "0.28",
                    "--max-new-tokens", "24", "--save-every", "5", "--eval-every", "3")
    new = _settings("--max-steps", "7", "--num-generations", "4", "--learning-rate", "3e-4", "--beta", "0.04",
                    "--epsilon", "0.28", "--max-completion-length", "24", "--save-steps", "5", "--eval-steps", "3")
    assert old == new
    assert (new.max_steps, new.num_generations, new.beta, new.eval_max_new_tokens) == (7, 4, 0.04, 24)
    assert set(train_command.OLD_FLAGS) == set(RENAMED.values()) | {"learning_rate"}


def test_adapter_flags_and_bad_values():
    settings = _settings("--adapter", "lora", "--adapter-rank", "4")
    assert settings.adapter == AdapterConfig(method="lora", rank=4, sparse_fraction=0.1)
    for argv in (["--reward", "accuracy"], ["--max-steps", "0"], ["--random-p", "1.5"], ["--epsilon", "0"],
                 ["--loss-type", "sum"], ["--save-steps", "-1"]):
        with pytest.raises(SystemExit) as caught:
            _settings(*argv)
        assert caught.value.code == 2


def test_help_shows_each_default():
    text = " ".join(_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "--max-steps N, --steps N" in text and "--beta X, --kl-coef X" in text
    assert "(default: 50)" in text and "(default: --max-completion-length)" in text and "--no-track-kl" in text


def test_help_lists_the_real_templates():
    from rlvr_lens.data.templates import TEMPLATES

    text = GRPOSettings.__dataclass_fields__["template"].metadata["help"]
    assert text.split(": ", 1)[1].split(", ") == list(TEMPLATES)


def test_trl_named_fields_are_grpo_config_fields_and_reach_it_unchanged(tmp_path):
    from trl import GRPOConfig

    from rlvr_lens.train.grpo import grpo_config

    trl_fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    assert set(TRL_FIELDS) == {
        "max_steps", "num_generations", "learning_rate", "beta", "epsilon", "max_completion_length",
        "temperature", "save_steps", "eval_steps", "seed", "num_iterations", "loss_type", "gradient_checkpointing",
    }
    assert set(TRL_FIELDS) <= set(trl_fields)
    hints = typing.get_type_hints(GRPOSettings)
    trl_hints = typing.get_type_hints(GRPOConfig)
    for name in TRL_FIELDS:  # the same kind of value as TRL's field (an int where TRL takes a float: save_steps)
        allowed = {trl_hints[name], *typing.get_args(trl_hints[name])}
        assert hints[name] in allowed or (hints[name] is int and float in allowed), name
    chosen = GRPOSettings(**{k: v for k, v in CHOSEN.items() if k != "micro_batch_size"})
    for settings in (chosen, GRPOSettings()):
        config = grpo_config(settings, tmp_path)
        for name in TRL_FIELDS:
            assert getattr(config, name) == getattr(settings, name), name
    for name in TRL_FIELDS:  # a field left out would keep TRL's default, which one of the two runs avoids
        assert trl_fields[name].default not in (getattr(chosen, name), getattr(GRPOSettings(), name)) or (
            getattr(chosen, name) != getattr(GRPOSettings(), name)
        ), name
    # steps_per_generation is not passed through: TRL counts micro-batches, we count optimizer steps
    assert "steps_per_generation" not in TRL_FIELDS
    micro = grpo_config(dataclasses.replace(chosen, micro_batch_size=2), tmp_path)
    assert (micro.steps_per_generation, micro.gradient_accumulation_steps, micro.per_device_train_batch_size) == (6, 3, 2)


def test_old_names_load():
    """A grpo_run.json ``settings`` dict / organism manifest ``rl`` dict written before issue 16."""
    old = {
        "reward": "random", "random_p": 0.5, "steps": 64, "prompts_per_step": 8, "group_size": 8,
        "learning_rate": 1e-4, "kl_coef": 0.01, "clip_eps": 0.3, "steps_per_generation": 1, "max_new_tokens": 40,
        "temperature": 1.0, "divergence_weighting": False, "template": "organism", "save_every": 16,
        "eval_every": 64, "eval_max_new_tokens": 40, "seed": 0, "num_iterations": 1, "micro_batch_size": 0,
        "loss_type": "dapo", "track_kl": True, "one_shot": False, "eval_batch_size": 64,
        "gradient_checkpointing": False,
        "adapter": {"method": "lora", "rank": 2, "alpha": None, "target_modules": ["q_proj"],
                    "sparse_fraction": 0.1, "sparse_criterion": "magnitude"},
    }
    settings = GRPOSettings.from_dict(old)
    assert (settings.max_steps, settings.num_generations, settings.beta, settings.epsilon) == (64, 8, 0.01, 0.3)
    assert (settings.max_completion_length, settings.save_steps, settings.eval_steps) == (40, 16, 64)
    assert settings.adapter == AdapterConfig(method="lora", rank=2, target_modules=("q_proj",))
    assert GRPOSettings.from_dict(dataclasses.asdict(settings)) == settings  # new names load too
    assert upgrade_settings_dict({"steps": 3, "whatever": 1}) == {"max_steps": 3, "whatever": 1}
    with pytest.raises(UserError, match="given twice"):
        GRPOSettings.from_dict({"clip_eps": 0.1, "epsilon": 0.2})
    with pytest.raises(UserError, match="Unknown GRPO setting 'clip'"):
        GRPOSettings.from_dict({"clip": 0.1})


def test_off_policy_settings_load_the_old_clip_name():
    from rlvr_lens.organism.recipe import OffPolicySettings

    assert OffPolicySettings.from_dict({"steps_per_generation": 4, "num_iterations": 2, "clip_eps": 0.1}) == (
        OffPolicySettings(steps_per_generation=4, num_iterations=2, epsilon=0.1)
    )


def test_report_section_reads_a_run_saved_with_the_old_names():
    from rlvr_lens.train.grpo import GRPORun
    from rlvr_lens.train.report import section_grpo_run

    old = {"reward": "random", "steps": 9, "group_size": 6, "prompts_per_step": 2, "kl_coef": 0.02, "clip_eps": 0.3,
           "max_new_tokens": 33, "steps_per_generation": 2, "num_iterations": 1, "learning_rate": 1e-4, "seed": 4}
    run = GRPORun(settings=old, steps=[{"step": 1, "accuracy": 0.5, "kl": 0.1}], checkpoints=[], final_dir="d",
                  wall_time_s=1.0)
    section = section_grpo_run(run, {})
    assert "for 9 optimizer steps" in section.summary
    assert "x 6 sampled completions" in section.paragraphs[0] and "(epsilon 0.3)" in section.paragraphs[2]
    table = dict(section.tables[-1].rows)
    assert (table["max_steps"], table["beta"], table["epsilon"], table["max_completion_length"]) == ("9", "0.02", "0.3", "33")
