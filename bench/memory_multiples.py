"""How many copies of the model does each method hold? The design notes say PPO 4x, GRPO 2x, RAFT 1x.

    python bench/memory_multiples.py                                  # embedded default, CPU, about 3 minutes
    python bench/memory_multiples.py -- --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name openai/gsm8k

Runs each recipe for one optimizer step (`--budget_tokens 1`) in the configurations that decide what is held (with
and without a KL reference), and prints what the trainer held after that step
(`trl_ext.run.progress.held_tensor_bytes`): the weights of every model it keeps in units of the policy's own
weights, gradients, optimizer state, and the process peak (CUDA max allocated on GPU, RSS on CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from trl_ext.platform.detect import detect_platform
from trl_ext.platform.launch import build_launch_command, resolve_recipe

MIB = 2**20
VARIANTS = [
    ("raft", "default", []),
    ("dpo", "reference precomputed per round (default)", []),
    ("dpo", "reference model kept", ["--precompute_ref_log_probs", "false"]),
    ("grpo", "beta 0 (TRL default)", []),
    ("grpo", "beta 0.04 (KL to a reference)", ["--beta", "0.04"]),
    ("rloo", "beta 0.05 (TRL default)", []),
    ("rloo", "beta 0", ["--beta", "0"]),
    ("ppo", "kl_coef 0 (embedded default)", ["--kl_coef", "0"]),
    ("ppo", "kl_coef 0.05 (PPOConfig default)", ["--kl_coef", "0.05"]),
]


def measure(method: str, flags: list[str], extra: list[str], workdir: Path) -> dict:
    output_dir = workdir / f"{method}-{len(list(workdir.iterdir()))}"
    args = ["--output_dir", str(output_dir), "--report_to", "none", "--budget_tokens", "1", "--eval_before", "false"]
    args += ["--eval_num_problems", "8", *flags, *extra]
    command = build_launch_command(resolve_recipe(f"{method}_gsm8k"), args, detect_platform())
    subprocess.run(command, check=True, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((output_dir / "progress.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extra", nargs="*", help="flags passed to every recipe (after --)")
    args = parser.parse_args()
    print(
        "| method | configuration | weights held (x policy) | gradients MiB | optimizer MiB | all tensors MiB "
        "| peak MiB |\n|---|---|---|---|---|---|---|",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as workdir:
        for method, label, flags in VARIANTS:
            progress = measure(method, flags, args.extra, Path(workdir))
            held = progress["held_bytes"]
            print(
                f"| {method} | {label} | {held['weights'] / held['policy_weights']:.2f} "
                f"| {held['gradients'] / MIB:.1f} | {held['optimizer'] / MIB:.1f} | {held['total'] / MIB:.1f} "
                f"| {progress['peak_bytes'] / MIB:,.0f} ({progress['device']}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
