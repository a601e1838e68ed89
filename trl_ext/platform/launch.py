"""Accelerate configs for CUDA and ROCm, their validation, and `accelerate launch` with the right config and
environment for the detected platform."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from trl_ext.platform.detect import Platform

CONFIG_DIR = Path(__file__).parent / "accelerate_configs"
STRATEGIES = ("single_gpu", "multi_gpu", "fsdp2", "zero2", "zero3")
MULTINODE_STRATEGIES = ("fsdp2", "zero3")
ROCM_ENV_PROFILE = CONFIG_DIR / "rocm" / "rocm.env"
ALLOC_CONF_VARIABLES = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF")
# Recipes live in the checkout next to the package: `trl-ext launch grpo_gsm8k` finds recipes/grpo_gsm8k.py
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"

# Values accelerate reads from nested config sections without checking them at load time.
OFFLOAD_DEVICES = ("none", "cpu", "nvme")


def config_path(backend: str, strategy: str, multinode: bool = False) -> Path:
    """The shipped accelerate config for `backend` ("cuda" or "rocm") and `strategy`."""
    if backend not in ("cuda", "rocm"):
        raise ValueError(f"Accelerate configs exist for cuda and rocm, not {backend!r}")
    valid = MULTINODE_STRATEGIES if multinode else STRATEGIES
    if strategy not in valid:
        kind = "multi-node" if multinode else "single-machine"
        raise ValueError(f"Unknown {kind} strategy {strategy!r}; choose one of {', '.join(valid)}")
    return CONFIG_DIR / backend / f"{'multinode_' if multinode else ''}{strategy}.yaml"


def shipped_configs() -> list[Path]:
    return sorted(CONFIG_DIR.glob("*/*.yaml"))


def recommended_strategy(platform: Platform) -> str | None:
    """`single_gpu` for one device (and always on APUs/gfx1151), DDP for several; None on a CPU.

    Sharding (fsdp2, zero3) is for full fine-tuning of models that do not fit one device: `trl-ext plan` tells.
    """
    if not platform.is_gpu:
        return None
    return "single_gpu" if platform.device_count <= 1 or platform.single_device_only else "multi_gpu"


def _nested_option_problems(section: str, options: dict, actions: dict) -> list[str]:
    """Problems in a `fsdp_config`/`deepspeed_config` section, which accelerate copies onto launch arguments
    without checking: a misspelled key is silently ignored."""
    from accelerate.utils.constants import (
        DEEPSPEED_MULTINODE_LAUNCHERS,
        FSDP_AUTO_WRAP_POLICY,
        FSDP_BACKWARD_PREFETCH,
        FSDP_SHARDING_STRATEGY,
        FSDP_STATE_DICT_TYPE,
    )

    enums = {
        "fsdp_auto_wrap_policy": FSDP_AUTO_WRAP_POLICY,
        "fsdp_backward_prefetch": FSDP_BACKWARD_PREFETCH,
        "fsdp_sharding_strategy": FSDP_SHARDING_STRATEGY,
        "fsdp_state_dict_type": FSDP_STATE_DICT_TYPE,
        "deepspeed_multinode_launcher": DEEPSPEED_MULTINODE_LAUNCHERS,
        "offload_optimizer_device": OFFLOAD_DEVICES,
        "offload_param_device": OFFLOAD_DEVICES,
        "zero_stage": ("0", "1", "2", "3"),
        # FSDP2 takes a boolean, FSDP1 a sharding strategy
        "fsdp_reshard_after_forward": ("true", "false", *FSDP_SHARDING_STRATEGY),
    }
    booleans = {"zero3_init_flag", "zero3_save_16bit_model"}
    booleans |= {dest for dest, action in actions.items() if action.default in ("true", "false")}
    problems = []
    for key, value in options.items():
        dest = key if section != "fsdp_config" or key.startswith("fsdp") else f"fsdp_{key}"
        action = actions.get(dest)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if action is None:
            problems.append(f"{section}.{key} is not an accelerate launch option")
        elif dest in enums and text.lower() not in {str(v).lower() for v in enums[dest]}:
            problems.append(f"{section}.{key}={value!r}; expected one of {list(enums[dest])}")
        elif dest in booleans and dest not in enums and text.lower() not in ("true", "false"):
            problems.append(f"{section}.{key}={value!r}; expected true or false")
        elif action.choices and text not in action.choices:
            problems.append(f"{section}.{key}={value!r}; expected one of {action.choices}")
        elif action.type in (int, float):
            try:
                action.type(value)
            except (TypeError, ValueError):
                problems.append(f"{section}.{key}={value!r}; expected a number")
    return problems


def validate_accelerate_config(path: str | Path) -> None:
    """Check a config the way `accelerate launch` would read it, and more, without starting any process.

    1. accelerate's loader rejects unknown top-level keys and bad enum values;
    2. keys and values inside `fsdp_config`/`deepspeed_config`, which accelerate does not check, are compared with
       the launch parser's options;
    3. launch's own validation and environment preparation run on the config (`_validate_launch_command`, then the
       launcher's `prepare_*_env`), and FSDP2 configs build accelerate's `FullyShardedDataParallelPlugin`.
    Raises ValueError listing what is wrong.
    """
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    path = Path(path)
    try:
        config = load_config_from_file(str(path))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from error
    parser = launch_command_parser()
    actions = {action.dest: action for action in parser._actions}
    problems = _nested_option_problems("fsdp_config", config.fsdp_config, actions)
    problems += _nested_option_problems("deepspeed_config", config.deepspeed_config, actions)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))

    args = parser.parse_args(["--config_file", str(path), "train.py"])
    try:
        args, defaults, mixed_precision_from_config = _validate_launch_command(args)
        args.main_process_port = 0  # a free port: validation must not depend on what this machine runs
        if args.use_deepspeed:
            fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
            args.deepspeed_fields_from_accelerate_config = ",".join(fields)
            prepare_deepspeed_cmd_env(args)
        elif args.use_fsdp:
            env = prepare_multi_gpu_env(args)
            if str(args.fsdp_version) == "2":  # FSDP1's plugin looks for a device as it builds
                _build_fsdp_plugin(env)
        elif args.multi_gpu:
            prepare_multi_gpu_env(args)
        else:
            prepare_simple_launcher_cmd_env(args)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: accelerate launch rejects it: {error!r}") from error


def _build_fsdp_plugin(env: dict[str, str]) -> None:
    """Build accelerate's FSDP plugin from the environment `accelerate launch` would give the run, in a child
    process: the plugin reads its settings from `os.environ`, which this process keeps as it is."""
    build = "from accelerate.utils import FullyShardedDataParallelPlugin; FullyShardedDataParallelPlugin()"
    result = subprocess.run([sys.executable, "-c", build], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "FSDP plugin failed")


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines; blank lines and `#` comments are skipped."""
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        env[key.strip()] = value.strip()
    return env


def without_expandable_segments(value: str) -> str:
    """An allocator config without `expandable_segments`, keeping its other options."""
    options = [opt for opt in re.split(r",\s*", value) if opt and not opt.strip().startswith("expandable_segments")]
    return ",".join(options)


def launch_environment(platform: Platform, environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment for `accelerate launch` on `platform`, and notes on what changed.

    On ROCm: the profile in rocm/rocm.env (without overriding variables already set) and no `expandable_segments`.
    """
    env = dict(environ)
    notes: list[str] = []
    if platform.backend != "rocm":
        return env, notes
    for key, value in read_env_file(ROCM_ENV_PROFILE).items():
        if key not in env:
            env[key] = value
            notes.append(f"{key}={value} (rocm.env)")
    for key in ALLOC_CONF_VARIABLES:
        if key in env and "expandable_segments" in env[key]:
            cleaned = without_expandable_segments(env[key])
            if cleaned:
                env[key] = cleaned
            else:
                del env[key]
            notes.append(f"{key}: removed expandable_segments (breaks vLLM sleep mode; unreliable on ROCm)")
    return env, notes


def resolve_recipe(recipe: str) -> Path:
    """A recipe path, or the name of a script in the checkout's recipes/ directory."""
    path = Path(recipe)
    if path.is_file():
        return path
    candidate = RECIPES_DIR / (recipe if recipe.endswith(".py") else f"{recipe}.py")
    if candidate.is_file():
        return candidate
    available = sorted(p.stem for p in RECIPES_DIR.glob("*.py")) if RECIPES_DIR.is_dir() else []
    raise FileNotFoundError(
        f"No recipe {recipe!r}: pass a script path or one of {available or 'the recipes/ scripts'}"
    )


def build_launch_command(
    recipe: Path,
    recipe_args: list[str],
    platform: Platform,
    strategy: str = "auto",
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
) -> list[str]:
    """The `accelerate launch` command line for `recipe` on `platform`."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if not platform.is_gpu:
        if strategy not in ("auto", "single_gpu") or num_machines > 1:
            raise ValueError("No GPU detected: trl-ext launch runs on the CPU in a single process only")
        cpu = ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
        return [*launch, *cpu, "--dynamo_backend", "no", str(recipe), *recipe_args]

    strategy = recommended_strategy(platform) if strategy == "auto" else strategy
    if platform.single_device_only and (strategy != "single_gpu" or num_machines > 1):
        raise ValueError(
            f"{platform.device_name} ({platform.arch}) runs one process only: RCCL does not support it. "
            "Use --strategy single_gpu."
        )
    if num_machines > 1:
        if not main_process_ip:
            raise ValueError("A multi-node launch needs --main_ip, the address of the rank-0 machine")
        config = config_path(platform.backend, strategy, multinode=True)
        num_processes = platform.device_count * num_machines
        machines = ["--num_machines", str(num_machines), "--machine_rank", str(machine_rank)]
        machines += ["--main_process_ip", main_process_ip]
    else:
        config = config_path(platform.backend, strategy)
        num_processes = 1 if strategy == "single_gpu" else platform.device_count
        machines = []
    if strategy != "single_gpu" and num_processes < 2:
        raise ValueError(f"--strategy {strategy} needs at least 2 GPUs; {platform.device_count} visible")
    precision = "bf16" if platform.bf16 else "fp16"
    options = ["--config_file", str(config), "--num_processes", str(num_processes), "--mixed_precision", precision]
    return [*launch, *options, *machines, str(recipe), *recipe_args]
