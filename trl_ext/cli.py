"""The `trl-ext` command line: `trl-ext env`, `trl-ext plan`, `trl-ext launch`, ...

Each subcommand is a `Command` in `COMMANDS`; add one with `register(Command(name, help, add_arguments, run))`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from trl_ext.platform.detect import MEMORY_BUDGET_ENV, Platform, detect_platform
from trl_ext.platform.memory import GIB, METHODS, SHARDING, fits, load_model_shape


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # returns the exit status


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    if command.name in COMMANDS:
        raise ValueError(f"trl-ext subcommand {command.name!r} is registered twice")
    COMMANDS[command.name] = command
    return command


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / GIB:.1f} GiB"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# env


def _env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Model (hub id, local directory or config.json) to recommend a preset for.")
    parser.add_argument("--method", default="grpo", choices=METHODS, help="Training method (default: grpo).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")


def _run_env(args: argparse.Namespace) -> int:
    from trl_ext.platform.launch import config_path, recommended_strategy
    from trl_ext.platform.presets import resolve_preset

    platform = detect_platform()
    strategy = recommended_strategy(platform)
    config = str(config_path(platform.backend, strategy)) if strategy else None
    preset = resolve_preset("auto", args.model, args.method, platform)
    if args.json:
        print(json.dumps({"platform": platform.to_dict(), "accelerate_config": config, "preset": preset.to_dict()}))
        return 0
    backend = {"cuda": "CUDA", "rocm": "ROCm", "cpu": "CPU"}[platform.backend]
    runtime = f"{backend} {platform.runtime_version}" if platform.runtime_version else backend
    lines = [
        f"backend:            {runtime} (torch {platform.torch_version})",
        f"device:             {platform.device_name}" + (f" x {platform.device_count}" if platform.is_gpu else ""),
        f"architecture:       {platform.arch or '-'}" + (" (APU, unified memory)" if platform.is_apu else ""),
        f"memory (reported):  {_gib(platform.total_memory)}",
        f"memory budget:      {_gib(platform.memory_budget)}"
        + (f" (set by {MEMORY_BUDGET_ENV})" if os.environ.get(MEMORY_BUDGET_ENV) else ""),
        f"bf16:               {_yes(platform.bf16)}",
        f"bitsandbytes:       {_yes(platform.has_bitsandbytes)}",
        f"vllm:               {_yes(platform.has_vllm)}",
        f"flash-attn:         {_yes(platform.has_flash_attn)}",
        f"deepspeed:          {_yes(platform.has_deepspeed)}",
        f"accelerate config:  {config or 'none (CPU: one process, trl-ext launch passes --cpu)'}",
    ]
    if platform.single_device_only and platform.is_gpu:
        lines.append("multi-GPU:          unavailable (an APU is one device; RCCL does not support gfx1151)")
    if platform.backend == "rocm":
        lines.append(f"environment:        {config_path('rocm', 'single_gpu').parent / 'rocm.env'}")
    target = f"{args.model}, {args.method}" if args.model else f"embedded default model, {args.method}"
    estimate = f", estimated peak {preset.estimate.peak_gib:.1f} GiB" if preset.estimate else ""
    lines.append(f"preset (auto):      {preset.name} ({target}{estimate})")
    print("\n".join(lines))
    return 0


register(Command("env", "Show the platform and the accelerate config and preset it gets.", _env_arguments, _run_env))


# plan


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hub id, local model directory, or config.json.")
    parser.add_argument("--method", default="grpo", choices=METHODS, help="Training method (default: grpo).")
    parser.add_argument(
        "--device_gib",
        type=float,
        help="Plan for a hypothetical NVIDIA bf16 GPU of this many GiB with bitsandbytes and vLLM installed, "
        "instead of the detected device.",
    )
    parser.add_argument("--sharding", default="none", choices=SHARDING, help="How training is spread over GPUs.")
    parser.add_argument("--num_gpus", type=int, default=1, help="Processes sharing the model (with --sharding).")


def _hypothetical_gpu(gib: float) -> Platform:
    memory = int(gib * GIB)
    return Platform(  # one discrete GPU of `gib`, with every optional package installed
        backend="cuda", device_name=f"hypothetical {gib:g} GiB GPU", arch="sm_80", device_count=1, is_apu=False,
        total_memory=memory, memory_budget=memory, bf16=True,
        has_bitsandbytes=True, has_vllm=True, has_flash_attn=False, has_deepspeed=True,
        torch_version="-", runtime_version=None,
    )  # fmt: skip


def _run_plan(args: argparse.Namespace) -> int:
    from trl_ext.platform.presets import AUTO_MARGIN, PRESETS, plan_preset, resolve_preset

    platform = _hypothetical_gpu(args.device_gib) if args.device_gib else detect_platform()
    shape = load_model_shape(args.model)
    count = f"{shape.num_params / 1e9:.2f}B" if shape.num_params >= 1e8 else f"{shape.num_params / 1e6:.2f}M"
    size = f"{count} parameters, {shape.num_layers} layers, hidden {shape.hidden_size}"
    print(f"{args.model}: {size}")
    print(
        f"{args.method} on {platform.device_name} ({platform.backend}), budget {_gib(platform.memory_budget)}; "
        f"fits = estimate <= {1 - AUTO_MARGIN:.0%} of the budget"
    )
    try:
        chosen = resolve_preset("auto", args.model, args.method, platform).name
    except ValueError:
        chosen = None
    header = ("preset", "mode", "batch x accum", "gens", "prompt+compl.", "generation", "peak GiB", "phase", "fits")
    rows = []
    for preset in PRESETS.values():
        if platform.is_gpu and preset.name == "cpu":
            continue
        planned = plan_preset(preset, shape, args.method, platform, args.sharding, args.num_gpus)
        generation = f"vllm {planned.vllm_gpu_memory_utilization}" if planned.use_vllm else "transformers"
        rows.append(
            (
                planned.name + (" *" if planned.name == chosen else ""),
                planned.mode + (f" r{planned.lora_r}" if planned.lora_r else ""),
                f"{planned.micro_batch} x {planned.gradient_accumulation}",
                str(planned.num_generations),
                f"{planned.prompt_length}+{planned.completion_length}",
                generation,
                f"{planned.estimate.peak_gib:.1f}",
                planned.estimate.phase,
                _yes(fits(planned.estimate, platform.memory_budget, AUTO_MARGIN)),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if chosen:
        print(f"* --preset auto picks {chosen}")
    else:
        print("No preset fits: shard across GPUs (--sharding fsdp2/zero3 --num_gpus N) or pick a smaller model.")
    if not platform.is_gpu:
        print("No GPU detected: these are fp32 estimates on the CPU. Pass --device_gib N to plan for a GPU.")
    return 0


register(
    Command("plan", "Estimate the peak memory of every preset for a model and method.", _plan_arguments, _run_plan)
)


# launch


def _launch_arguments(parser: argparse.ArgumentParser) -> None:
    from trl_ext.platform.launch import STRATEGIES

    parser.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", *STRATEGIES),
        help="auto: single_gpu on one GPU, multi_gpu (DDP) on several; fsdp2/zero3 shard a full fine-tune.",
    )
    parser.add_argument("--nodes", type=int, default=1, help="Machines in a multi-node run (fsdp2 or zero3).")
    parser.add_argument("--node_rank", type=int, default=0, help="This machine's rank in a multi-node run.")
    parser.add_argument("--main_ip", help="Address of the rank-0 machine in a multi-node run.")
    parser.add_argument(
        "--dry_run", action="store_true", help="Print the command and the environment changes; run nothing."
    )
    parser.add_argument("recipe", help="Recipe script, or a name in recipes/ (e.g. grpo_gsm8k).")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help="Arguments passed on to the recipe.")


def _run_launch(args: argparse.Namespace) -> int:
    from trl_ext.platform.launch import build_launch_command, launch_environment, resolve_recipe

    platform = detect_platform()
    command = build_launch_command(
        resolve_recipe(args.recipe),
        args.recipe_args,
        platform,
        strategy=args.strategy,
        num_machines=args.nodes,
        machine_rank=args.node_rank,
        main_process_ip=args.main_ip,
    )
    env, notes = launch_environment(platform, dict(os.environ))
    for note in notes:
        print(f"trl-ext launch: {note}", file=sys.stderr)
    print("trl-ext launch: " + " ".join(command), file=sys.stderr)
    if args.dry_run:
        return 0
    return subprocess.run(command, env=env).returncode


register(
    Command(
        "launch",
        "Run a recipe with accelerate launch, using the config and environment for this platform.",
        _launch_arguments,
        _run_launch,
    )
)


# compare


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    from trl_ext.compare import add_arguments

    add_arguments(parser)


def _run_compare(args: argparse.Namespace) -> int:
    from trl_ext.compare import run

    return run(args)


register(
    Command(
        "compare",
        "Run several methods on the same model, prompts, reward and budget over seeds; write a table and plots.",
        _compare_arguments,
        _run_compare,
    )
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-ext", description="RL fine-tuning with verifiable rewards on TRL.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for command in COMMANDS.values():
        subparser = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(subparser)
        subparser.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"trl-ext {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
