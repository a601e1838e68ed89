"""What the thin layer costs: the same GRPO job through `recipes/grpo_gsm8k.py` and through a plain TRL script.

    python bench/overhead.py                     # embedded default, 20 steps, 3 runs each, about 5 minutes on a CPU
    python bench/overhead.py --steps 40 --runs 5

Both jobs train the embedded model on the same generated problems, with the same reward (`math_answer_reward`) and
the very same GRPOConfig values (those the recipe resolves; the plain script rebuilds `GRPOConfig` from them and
calls `GRPOTrainer` itself, with nothing of trl_ext). Training time is what `Trainer.train()` reports
(`train_runtime`: evaluations, model loading and start-up excluded). Runs alternate between the two; the script
prints each run and the ratio of the medians (recipe / plain).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A plain TRL script: load the job's config values and data, train, print the runtime. Nothing of trl_ext.
PLAIN_SCRIPT = """
import json, sys
from datasets import load_dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer
from rewards import math_answer_reward

job = json.load(open(sys.argv[1]))
dataset = load_dataset("json", data_files=job["data"], split="train")
args = GRPOConfig(**job["config"])
trainer = GRPOTrainer(
    model=job["model"], reward_funcs=[math_answer_reward], args=args, train_dataset=dataset,
    processing_class=AutoTokenizer.from_pretrained(job["model"]),
)
print("train_runtime", trainer.train().metrics["train_runtime"], flush=True)
"""
RUNTIME = re.compile(r"'train_runtime': '?([0-9.]+)'?|^train_runtime ([0-9.]+)$", re.M)


def job_settings(steps: int, workdir: Path) -> tuple[list[str], dict]:
    """The recipe's flags for the job, and the plain script's job file: the same resolved config and data."""
    from trl import GRPOConfig

    from trl_ext.run import Run, resolve_settings

    flags = ["--max_steps", str(steps), "--eval_before", "false", "--eval_num_problems", "8", "--report_to", "none"]
    flags += ["--save_strategy", "no", "--logging_steps", str(steps), "--disable_tqdm", "true"]
    settings = resolve_settings("grpo", GRPOConfig, argv=[*flags, "--output_dir", str(workdir / "resolved")])
    run = Run.start(settings)
    data = workdir / "train.jsonl"
    run.data.train.to_json(str(data))
    config = {name: value for name, value, _ in settings.changed() if hasattr(settings.training, name)}
    config |= {"output_dir": str(workdir / "plain"), "report_to": "none"}
    return flags, {"model": run.model.path, "data": str(data), "config": config}


def timed(command: list[str], cwd: Path) -> float:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-3000:]}")
    match = RUNTIME.findall(result.stdout + result.stderr)
    if not match:
        sys.exit(f"no train_runtime in the output of {' '.join(command[:4])} ...")
    return float(next(value for value in match[-1] if value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        flags, job = job_settings(args.steps, workdir)
        (workdir / "job.json").write_text(json.dumps(job, default=str))
        (workdir / "plain.py").write_text(PLAIN_SCRIPT)
        recipe_times, plain_times = [], []
        for index in range(args.runs):
            output = ["--output_dir", str(workdir / f"recipe-{index}")]
            recipe = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
            recipe_times.append(timed([*recipe, str(REPO / "recipes" / "grpo_gsm8k.py"), *flags, *output], workdir))
            plain = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
            plain_times.append(timed([*plain, str(workdir / "plain.py"), str(workdir / "job.json")], workdir))
            print(f"run {index + 1}: recipe {recipe_times[-1]:.1f} s, plain TRL {plain_times[-1]:.1f} s", flush=True)
    recipe, plain = statistics.median(recipe_times), statistics.median(plain_times)
    print(f"median training time, {args.runs} runs of {args.steps} steps: recipe {recipe:.1f} s, plain {plain:.1f} s")
    print(f"ratio recipe / plain: {recipe / plain:.3f}")


if __name__ == "__main__":
    main()
