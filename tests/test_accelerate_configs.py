"""The shipped accelerate configs load with accelerate's own loader and pass launch validation; broken ones fail."""

import os
from pathlib import Path

import pytest
import trl
import yaml

from trl_ext.platform.launch import (
    CONFIG_DIR,
    MULTINODE_STRATEGIES,
    ROCM_ENV_PROFILE,
    STRATEGIES,
    config_path,
    read_env_file,
    shipped_configs,
    validate_accelerate_config,
)

SINGLE_MACHINE = [config_path(backend, s) for backend in ("cuda", "rocm") for s in STRATEGIES]
MULTI_NODE = [config_path(backend, s, multinode=True) for backend in ("cuda", "rocm") for s in MULTINODE_STRATEGIES]


def test_ten_single_machine_configs_and_four_multinode_ones_ship():
    assert len(SINGLE_MACHINE) == 10 and all(path.is_file() for path in SINGLE_MACHINE)
    assert sorted(shipped_configs()) == sorted(SINGLE_MACHINE + MULTI_NODE)


@pytest.mark.parametrize("path", SINGLE_MACHINE + MULTI_NODE, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_config_validates(path):
    validate_accelerate_config(path)


@pytest.mark.parametrize("path", sorted(Path(trl.__file__).parent.joinpath("accelerate_configs").glob("*.yaml")))
def test_trl_configs_validate(path):
    # The validator accepts the configs TRL itself ships
    validate_accelerate_config(path)


@pytest.mark.parametrize("name", [p.name for p in (CONFIG_DIR / "cuda").glob("*.yaml")])
def test_rocm_configs_match_cuda_ones(name):
    # Same schema; ROCm differs by its environment profile, not by accelerate settings
    cuda = yaml.safe_load((CONFIG_DIR / "cuda" / name).read_text())
    rocm = yaml.safe_load((CONFIG_DIR / "rocm" / name).read_text())
    assert cuda == rocm


def test_multinode_configs_span_machines():
    for path in MULTI_NODE:
        config = yaml.safe_load(path.read_text())
        assert config["num_machines"] == 2 and config["num_processes"] == 16 and config["main_process_ip"]
        assert config.get("deepspeed_config", {}).get("deepspeed_multinode_launcher", "standard") == "standard"


def _broken(tmp_path, source: str, edit) -> Path:
    config = yaml.safe_load(config_path("cuda", source).read_text())
    edit(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "source, edit, message",
    [
        # a misspelled nested key: accelerate itself would ignore it silently
        ("fsdp2", lambda c: c["fsdp_config"].update(fsdp_reshard_after_foward=True), "fsdp_reshard_after_foward"),
        ("zero3", lambda c: c["deepspeed_config"].update(zero3_init=True), "zero3_init is not an accelerate"),
        ("fsdp2", lambda c: c["fsdp_config"].update(fsdp_state_dict_type="FULL"), "fsdp_state_dict_type='FULL'"),
        ("fsdp2", lambda c: c["fsdp_config"].update(fsdp_version=3), "fsdp_version=3"),
        ("fsdp2", lambda c: c["fsdp_config"].update(fsdp_offload_params="maybe"), "expected true or false"),
        ("zero2", lambda c: c["deepspeed_config"].update(zero_stage=4), "zero_stage=4"),
        ("zero2", lambda c: c["deepspeed_config"].update(offload_optimizer_device="gpu"), "offload_optimizer_device"),
        ("zero2", lambda c: c["deepspeed_config"].update(deepspeed_multinode_launcher="ssh"), "launcher='ssh'"),
        # accelerate's own loader: unknown top-level keys and enums
        ("multi_gpu", lambda c: c.update(num_gpus=2), "unknown keys"),
        ("multi_gpu", lambda c: c.update(distributed_type="MULTI_CPUS"), "MULTI_CPUS"),
        # launch's own checks
        ("multi_gpu", lambda c: c.update(mixed_precision="bf32"), "Unknown mixed_precision"),
        (
            "fsdp2",
            lambda c: c["fsdp_config"].update(fsdp_sync_module_states=False),
            "fsdp_cpu_ram_efficient_loading",
        ),
    ],
)
def test_broken_config_fails(tmp_path, source, edit, message):
    with pytest.raises(ValueError, match=message):
        validate_accelerate_config(_broken(tmp_path, source, edit))


def test_rocm_env_profile_enables_aotriton_and_leaves_the_allocator_alone():
    env = read_env_file(ROCM_ENV_PROFILE)
    assert env["TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL"] == "1"
    assert not any("ALLOC_CONF" in key for key in env)
    assert "HSA_OVERRIDE_GFX_VERSION" not in env


def test_env_file_rejects_malformed_lines(tmp_path):
    path = tmp_path / "bad.env"
    path.write_text("# comment\nGOOD=1\nexport BAD\n")
    with pytest.raises(ValueError, match="bad.env:3: expected KEY=VALUE"):
        read_env_file(path)


def test_configs_are_package_data():
    # pyproject.toml ships accelerate_configs/**/*.yaml and **/*.env
    assert all(path.suffix == ".yaml" for path in shipped_configs())
    assert ROCM_ENV_PROFILE.suffix == ".env" and os.path.commonpath([ROCM_ENV_PROFILE, CONFIG_DIR]) == str(CONFIG_DIR)
