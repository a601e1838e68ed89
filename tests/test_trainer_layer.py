"""The trainer layer stands alone: it imports nothing of the layers above it, leaves no process-wide state behind,
raises ordinary exceptions, and writes its files whole or not at all."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from trl_ext import DPORoundsConfig, DPORoundsTrainer, PPOConfig, PPOTrainer, RAFTConfig, RAFTTrainer
from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.trainer.files import write_atomic

REPO = Path(__file__).resolve().parents[1]
TRAINER_LAYER = REPO / "trl_ext" / "trainer"
UPPER_LAYERS = ("trl_ext.run", "trl_ext.platform", "trl_ext.data", "trl_ext.cli", "trl_ext.compare")
CPU = {"report_to": "none", "use_cpu": True, "bf16": False, "disable_tqdm": True, "gradient_checkpointing": False}


def parity_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


@pytest.fixture(scope="module")
def prompts() -> Dataset:
    return add_prompts(generate_gsm8k_like(16, seed=3), "Solve.")


def test_importing_the_trainers_loads_nothing_of_the_layers_above(tmp_path):
    code = (
        "import json, sys\n"
        "import trl_ext.trainer.raft_trainer, trl_ext.trainer.ppo_trainer, trl_ext.trainer.dpo_rounds_trainer\n"
        "import trl_ext.trainer.dynamic_sampling\n"
        "from trl_ext import RAFTTrainer, PPOTrainer, DPORoundsTrainer, RAFTConfig, PPOConfig, DPORoundsConfig\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('trl_ext'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "trl_ext.trainer.raft_trainer" in loaded  # the probe saw the trainers it imported
    assert [name for name in loaded if name.startswith(UPPER_LAYERS)] == []


def test_the_trainer_layer_imports_only_trl_transformers_and_its_own_modules():
    """No module of trl_ext/trainer imports another layer of trl_ext, or `unittest.mock`, even lazily."""
    offending = []
    for path in sorted(TRAINER_LAYER.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                if (name.startswith("trl_ext") and not name.startswith("trl_ext.trainer")) or name.startswith(
                    "unittest"
                ):
                    offending.append(f"{path.name}: {name}")
    assert offending == []


def generate_is_the_class_own(model) -> bool:
    return "generate" not in vars(model) and model.generate.__func__ is type(model).generate


def test_building_and_running_a_trainer_changes_no_process_wide_state(tiny_model_dir, prompts, tmp_path):
    """After each trainer is built (and RAFT has run a cycle), `os.environ` is as it was and every model's
    `generate` is its class's own."""
    environment = dict(os.environ)
    raft = RAFTTrainer(
        str(tiny_model_dir),
        parity_reward,
        RAFTConfig(
            output_dir=str(tmp_path / "raft"), num_cycles=1, prompts_per_cycle=4, num_generations=2,
            max_completion_length=8, generation_batch_size=8, per_device_train_batch_size=2, drop_truncated=False,
            **CPU,
        ),
        train_dataset=prompts,
    )  # fmt: skip
    raft.train()
    dpo = DPORoundsTrainer(
        str(tiny_model_dir),
        parity_reward,
        DPORoundsConfig(output_dir=str(tmp_path / "dpo"), prompts_per_round=4, generation_batch_size=16, **CPU),
        train_dataset=prompts,
    )
    ppo = PPOTrainer(
        str(tiny_model_dir),
        parity_reward,
        PPOConfig(output_dir=str(tmp_path / "ppo"), per_device_train_batch_size=4, max_completion_length=8, **CPU),
        train_dataset=prompts,
    )
    assert raft.cycle == 1 and raft.generation_count.completions == 4 * 2  # the cycle did sample
    assert dict(os.environ) == environment
    for model in (raft.model, dpo.model, ppo.model, ppo.ref_model):
        assert generate_is_the_class_own(model), type(model).__name__


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda tmp: RAFTConfig(output_dir=str(tmp), use_cpu=True, bf16=False, top_fraction=2.0), ValueError),
        (lambda tmp: DPORoundsConfig(output_dir=str(tmp), use_cpu=True, bf16=False, num_generations=1), ValueError),
        (lambda tmp: PPOConfig(output_dir=str(tmp), use_cpu=True, bf16=False, gamma=2.0), ValueError),
        (lambda tmp: RAFTTrainer("no/such-model", [], RAFTConfig(str(tmp), bf16=False)), ValueError),
        (lambda tmp: RAFTTrainer("no/such-model", parity_reward, PPOConfig(str(tmp), bf16=False)), TypeError),
        (
            lambda tmp: DPORoundsTrainer(
                "no/such-model", parity_reward, DPORoundsConfig(str(tmp), bf16=False), train_dataset=[{"prompt": "q"}]
            ),
            TypeError,
        ),
        (
            lambda tmp: RAFTTrainer(
                "no/such-model",
                parity_reward,
                RAFTConfig(str(tmp), bf16=False, prompts_per_cycle=1),
                train_dataset=Dataset.from_dict({"prompt": ["q"]}),
                optimizers=(object(), None),
            ),
            ValueError,
        ),
        (lambda tmp: PPOTrainer("no/such-model", parity_reward, RAFTConfig(str(tmp), bf16=False)), TypeError),
    ],
    ids=["raft-config", "dpo-config", "ppo-config", "no-reward", "wrong-config", "not-a-dataset", "optimizers", "ppo"],
)
def test_a_bad_setting_raises_an_ordinary_one_line_exception(build, expected, tmp_path):
    """`except Exception` catches it (no SystemExit), before any model loads, with one line that says what to fix."""
    try:
        build(tmp_path)
    except Exception as error:  # the property under test
        caught = error
    else:
        pytest.fail("the bad setting was accepted")
    assert type(caught) is expected, repr(caught)
    assert str(caught) and "\n" not in str(caught)


def test_atomic_writes_leave_the_whole_file_or_the_old_one(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, '{"round": 1}')
    write_atomic(path, lambda temporary: temporary.write_text('{"round": 2}'))
    assert path.read_text() == '{"round": 2}'

    def fails_halfway(temporary: Path) -> None:
        temporary.write_text('{"rou')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fails_halfway)
    assert path.read_text() == '{"round": 2}'  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # and no temporary file left behind
