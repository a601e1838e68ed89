"""`trl-ext env`, `trl-ext plan` and `trl-ext launch`, on this CPU and on mocked GPUs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trl_ext import cli
from trl_ext.platform.detect import Platform, detect_platform
from trl_ext.platform.launch import (
    CONFIG_DIR,
    build_launch_command,
    launch_environment,
    recommended_strategy,
    resolve_recipe,
    without_expandable_segments,
)
from trl_ext.platform.memory import GIB
from trl_ext.platform.presets import PRESETS, resolve_preset

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, model_type="qwen2")  # fmt: skip


def gpu(count=1, *, backend="cuda", arch="sm_90", apu=False, bf16=True):
    return Platform(
        backend=backend, device_name="test GPU", arch=arch, device_count=count, total_memory=80 * GIB,
        memory_budget=80 * GIB, is_apu=apu, bf16=bf16, has_bitsandbytes=True, has_vllm=False, has_flash_attn=False,
        has_deepspeed=True, torch_version="2.13", runtime_version="12.8",
    )  # fmt: skip


@pytest.fixture
def config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN25_05B))
    return str(path)


@pytest.fixture(autouse=True)
def this_cpu(monkeypatch):
    # The machine these tests run on may have a GPU; the CLI tests describe a CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRL_EXT_MEMORY_BUDGET_GIB", raising=False)


def test_env_on_cpu(capsys):
    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    assert "backend:            CPU" in out and "bf16:               no" in out
    assert "preset (auto):      cpu (embedded default model, grpo)" in out
    assert "accelerate config:  none" in out


def test_env_json_recommends_a_preset_for_a_model(capsys, config_json):
    assert cli.main(["env", "--json", "--model", config_json, "--method", "sft"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["platform"]["backend"] == "cpu" and report["accelerate_config"] is None
    planned = resolve_preset("cpu", config_json, "sft", detect_platform())  # what the planner says for this model
    assert report["preset"]["name"] == "cpu"
    assert report["preset"]["estimated_peak_gib"] == round(planned.estimate.peak_bytes / GIB, 2)


def test_plan_on_cpu_lists_every_preset(capsys, config_json):
    assert cli.main(["plan", "--model", config_json, "--method", "grpo"]) == 0
    out = capsys.readouterr().out
    assert "0.49B parameters" in out
    for name in PRESETS:
        assert f"\n{name}" in out
    assert "* --preset auto picks cpu" in out


def test_plan_for_a_hypothetical_gpu(capsys, config_json):
    assert cli.main(["plan", "--model", config_json, "--method", "ppo", "--device_gib", "24"]) == 0
    out = capsys.readouterr().out
    assert "\ncpu " not in out and "hypothetical 24 GiB GPU" in out and "vllm 0." in out
    picked = [line for line in out.splitlines() if line.startswith("* --preset auto picks ")]
    # the unified-memory preset is not for a discrete GPU; of the rest, the most capable fits a 0.5B model
    assert picked == ["* --preset auto picks full-80gb"]
    assert [line.split()[1] for line in out.splitlines() if line.startswith("full-80gb")] == ["*"]


def test_plan_errors_say_what_to_fix(capsys, tmp_path):
    assert cli.main(["plan", "--model", str(tmp_path), "--method", "grpo"]) == 2
    assert "has no config.json: pass a model directory, a config.json or a hub id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["plan", "--model", str(tmp_path), "--method", "reinforce"])
    assert "invalid choice: 'reinforce'" in capsys.readouterr().err


def test_launch_dry_run_on_cpu(capsys, tmp_path):
    recipe = tmp_path / "recipe.py"
    recipe.write_text("print('hello')\n")
    assert cli.main(["launch", "--dry_run", str(recipe), "--preset", "auto", "--max_steps", "2"]) == 0
    err = capsys.readouterr().err
    assert "accelerate.commands.launch --cpu --num_processes 1" in err
    assert err.rstrip().endswith(f"{recipe} --preset auto --max_steps 2")


def test_launch_runs_the_recipe_on_cpu(tmp_path):
    recipe = tmp_path / "recipe.py"
    recipe.write_text("import sys\nprint('recipe args', sys.argv[1:])\n")
    # A subprocess: the CLI entry point as installed, through accelerate launch, on this CPU
    result = subprocess.run(
        [sys.executable, "-m", "trl_ext.cli", "launch", str(recipe), "--flag", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "recipe args ['--flag', '1']" in result.stdout


def test_launch_on_one_gpu_uses_single_gpu_config():
    command = build_launch_command(Path("r.py"), ["--x"], gpu())
    assert command[command.index("--config_file") + 1] == str(CONFIG_DIR / "cuda" / "single_gpu.yaml")
    assert command[command.index("--num_processes") + 1] == "1"
    assert command[command.index("--mixed_precision") + 1] == "bf16"
    assert command[-2:] == ["r.py", "--x"]


def test_launch_on_eight_amd_gpus_uses_ddp_or_the_asked_strategy():
    mi300 = gpu(8, backend="rocm", arch="gfx942")
    command = build_launch_command(Path("r.py"), [], mi300)
    assert command[command.index("--config_file") + 1] == str(CONFIG_DIR / "rocm" / "multi_gpu.yaml")
    assert command[command.index("--num_processes") + 1] == "8"
    command = build_launch_command(Path("r.py"), [], mi300, strategy="zero3")
    assert command[command.index("--config_file") + 1] == str(CONFIG_DIR / "rocm" / "zero3.yaml")


def test_launch_on_pre_ampere_gpus_uses_fp16():
    command = build_launch_command(Path("r.py"), [], gpu(2, arch="sm_75", bf16=False))
    assert command[command.index("--mixed_precision") + 1] == "fp16"


def test_strix_halo_runs_one_process_only():
    strix_halo = gpu(1, backend="rocm", arch="gfx1151", apu=True)
    assert recommended_strategy(strix_halo) == "single_gpu"
    with pytest.raises(ValueError, match="runs one process only: RCCL does not support it"):
        build_launch_command(Path("r.py"), [], strix_halo, strategy="fsdp2")


def test_multinode_launch():
    command = build_launch_command(
        Path("r.py"), [], gpu(8), strategy="fsdp2", num_machines=2, machine_rank=1, main_process_ip="10.1.2.3"
    )
    assert command[command.index("--config_file") + 1] == str(CONFIG_DIR / "cuda" / "multinode_fsdp2.yaml")
    assert command[command.index("--num_processes") + 1] == "16"
    assert command[command.index("--machine_rank") + 1] == "1"
    assert command[command.index("--main_process_ip") + 1] == "10.1.2.3"
    with pytest.raises(ValueError, match="needs --main_ip"):
        build_launch_command(Path("r.py"), [], gpu(8), strategy="zero3", num_machines=2)
    with pytest.raises(ValueError, match="Unknown multi-node strategy 'multi_gpu'"):
        build_launch_command(Path("r.py"), [], gpu(8), strategy="multi_gpu", num_machines=2, main_process_ip="h")


def test_sharded_strategy_needs_two_gpus():
    with pytest.raises(ValueError, match="needs at least 2 GPUs"):
        build_launch_command(Path("r.py"), [], gpu(1), strategy="fsdp2")


def test_rocm_environment():
    inherited = {
        "PYTORCH_HIP_ALLOC_CONF": "expandable_segments:True,max_split_size_mb:512",
        "PYTORCH_ALLOC_CONF": "expandable_segments:True",
    }
    env, notes = launch_environment(gpu(backend="rocm", arch="gfx1100"), inherited)
    assert env["TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL"] == "1"
    assert env["PYTORCH_HIP_ALLOC_CONF"] == "max_split_size_mb:512" and "PYTORCH_ALLOC_CONF" not in env
    assert len(notes) == 3
    env, _ = launch_environment(gpu(backend="rocm", arch="gfx1100"), {"TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL": "0"})
    assert env["TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL"] == "0"  # the user's setting wins
    cuda_env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert launch_environment(gpu(), cuda_env) == (cuda_env, [])


def test_without_expandable_segments():
    assert without_expandable_segments("expandable_segments:True") == ""
    assert without_expandable_segments("max_split_size_mb:128, expandable_segments:True") == "max_split_size_mb:128"


def test_resolve_recipe(tmp_path):
    recipe = tmp_path / "mine.py"
    recipe.write_text("")
    assert resolve_recipe(str(recipe)) == recipe
    with pytest.raises(FileNotFoundError, match="No recipe 'nonexistent_recipe'"):
        resolve_recipe("nonexistent_recipe")


def test_commands_register_once():
    assert {"env", "plan", "launch"} <= set(cli.COMMANDS)
    with pytest.raises(ValueError, match="registered twice"):
        cli.register(cli.COMMANDS["env"])
