"""The run pipeline's properties: settings resolved once with their sources, `--print_config`, no process-wide state
changed by a run, and README's first command printing no warning of our own making."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from recipe_runs import launch_recipe
from trl import GRPOConfig, GRPOTrainer

from trl_ext.run import Run, resolve_settings

REPO = Path(__file__).resolve().parents[1]

# Warnings README's first command prints that come from upstream code we cannot change, each with where it is raised.
UPSTREAM_WARNINGS = [
    # accelerate lists the defaults it chose when launched without a config file (accelerate/commands/launch.py,
    # `_validate_launch_command`); README's command is deliberately the plain `accelerate launch`.
    r"The following values were not passed to `accelerate launch`",
    r"To avoid this warning pass in values for each of the problematic parameters",
    # TRL 1.16's `disable_gradient_checkpointing` (trl/models/utils.py, added by huggingface/trl#4636) reads
    # `model.is_gradient_checkpointing`, which transformers 5 renamed `is_activation_checkpointing`.
    r"FutureWarning: `is_gradient_checkpointing` is deprecated",
    # TRL's model card asks for the W&B run's URL (trl/trainer/base_trainer.py, `create_model_card`); an offline run
    # has none.
    r"wandb: WARNING URL not available in offline run",
]
WARNING_LINE = re.compile(r"Warning\b|WARNING|warning\b", re.IGNORECASE)


@pytest.mark.slow
def test_readme_first_command_prints_no_warning_of_our_own_making(embedded_model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env |= {"HOME": str(tmp_path), "WANDB_DIR": str(tmp_path)}  # no W&B credentials: it logs offline, as for a user
    command = [sys.executable, "-m", "accelerate.commands.launch", str(REPO / "recipes" / "grpo_gsm8k.py")]
    command += ["--max_steps", "2", "--eval_num_problems", "8", "--output_dir", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    lines = (result.stdout + result.stderr).splitlines()
    ours = [
        line
        for line in lines
        if WARNING_LINE.search(line)
        and line.strip() != "warnings.warn("
        and not any(re.search(pattern, line) for pattern in UPSTREAM_WARNINGS)
    ]
    assert not ours, "\n".join(ours)


def test_print_config_shows_each_changed_value_and_its_source(tiny_model_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1.0e-5\nper_device_train_batch_size: 16\nactivation_checkpointing: true\n")
    args = ["--model_name_or_path", str(tiny_model_dir), "--config", str(config), "--learning_rate", "3e-5"]
    args += ["--output_dir", str(tmp_path / "run"), "--report_to", "none", "--print_config"]
    result = launch_recipe("grpo_gsm8k.py", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = {
        match["name"]: (match["value"], match["source"])
        for match in re.finditer(r"^  (?P<name>\w+) +(?P<value>.+?)  \[(?P<source>[^]]+)\]$", result.stdout, re.M)
    }
    assert shown["learning_rate"] == ("3e-05", "command line")  # a flag beats YAML
    assert shown["per_device_train_batch_size"] == ("16", f"YAML {config}")
    assert shown["activation_checkpointing"] == ("true", f"YAML {config}")  # YAML beats the preset's `false`
    assert shown["bf16"] == ("false", "preset cpu")  # fp32 on a CPU
    assert shown["dataloader_pin_memory"] == ("false", "trl-ext default")
    assert shown["model_name_or_path"] == (f'"{tiny_model_dir}"', "command line")
    assert "max_steps" not in shown  # at TRL's default, so not listed
    assert "held-out accuracy" not in result.stdout and not (tmp_path / "run").exists()  # it stopped there


def test_each_config_is_built_once():
    built = []

    @dataclass
    class CountedGRPOConfig(GRPOConfig):
        def __post_init__(self):
            built.append(self)
            super().__post_init__()

    settings = resolve_settings("grpo", CountedGRPOConfig, argv=["--output_dir", "unused", "--report_to", "none"])
    assert built == [settings.training]  # one construction, no rebuild to apply a preset or defaults


def test_a_run_with_wandb_offline_leaves_the_process_as_it_found_it(tiny_model_dir, tmp_path, monkeypatch):
    """No environment variable set or changed, and `model.generate` still the model class's own."""
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no `wandb login` credentials: the run logs offline
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    before = dict(os.environ)
    argv = ["--model_name_or_path", str(tiny_model_dir), "--max_steps", "1", "--per_device_train_batch_size", "8"]
    argv += ["--num_generations", "4", "--max_completion_length", "8", "--eval_num_problems", "4"]
    argv += ["--output_dir", str(tmp_path / "run"), "--budget_tokens", "100000", "--disable_tqdm", "true"]
    run = Run.start(resolve_settings("grpo", GRPOConfig, argv=argv))
    assert run.wandb_run is not None and run.wandb_run.settings.mode == "offline"
    trainer = GRPOTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    run.train(trainer)
    assert "generate" not in vars(trainer.model)  # not wrapped: tokens are counted from what generation returned
    changed = {k for k in before.keys() | os.environ.keys() if before.get(k) != os.environ.get(k)}
    assert changed <= {"PYTEST_CURRENT_TEST"}, changed
    assert (tmp_path / "run" / "eval_results.json").exists()


def test_compared_methods_are_methods_the_planner_knows():
    from trl_ext.compare import METHODS as COMPARED
    from trl_ext.platform.memory import METHODS

    assert set(COMPARED) <= set(METHODS)
