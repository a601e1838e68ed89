"""PPO's cost per sample against GRPO's on the same job: the embedded default, each method with its recipe settings.

Both train the same model on the same problems with the same generation batch (64 completions per step: 8 prompts x 8
for GRPO, 64 prompts x 1 for PPO), completion length and learning rate. Each step's wall time is split into
generation, reward functions, no-grad scoring forwards (PPO: old log-probs with values, and the reference) and the
training forward+backward+optimizer step (the rest). The first step of each run warms up and is not counted; runs
alternate between the methods so that background load affects both alike.

    TRL_EXT_CACHE=/tmp/tecache python bench/ppo_vs_grpo.py                 # 2 rounds x 6 timed steps each
    TRL_EXT_CACHE=/tmp/tecache python bench/ppo_vs_grpo.py --rounds 1 --steps 3 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict

import torch
from transformers import AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.data.embedded import EmbeddedSpec, embedded_model_path
from trl_ext.data.loading import add_prompts, load_gsm8k
from trl_ext.run.reward_funcs import resolve_reward_funcs
from trl_ext.run.tasks import EMBEDDED_TRAINING_DEFAULTS

PARTS = ("generation", "rewards", "scoring_forwards", "training")


class StepClock(TrainerCallback):
    """Wall time of each optimizer step, with the instrumented parts accumulated since the step began."""

    def __init__(self, parts: dict):
        self.parts, self.steps, self._start = parts, [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.parts.clear()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        total = time.perf_counter() - self._start
        step = {part: self.parts.get(part, 0.0) for part in PARTS[:-1]}
        step["training"] = total - sum(step.values())
        step["total"] = total
        self.steps.append(step)


def timed(method, parts: dict, name_for):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            name = name_for()
            if name is not None:
                parts[name] += time.perf_counter() - start

    return wrapper


def run(method: str, steps: int, seed: int, model_path: str, train_dataset, reward_funcs, workdir: str) -> dict:
    config_class, trainer_class = (PPOConfig, PPOTrainer) if method == "ppo" else (GRPOConfig, GRPOTrainer)
    settings = {key: value for key, value in EMBEDDED_TRAINING_DEFAULTS[method].items() if key != "save_steps"}
    args = config_class(
        **(settings | {"max_steps": steps + 1, "logging_steps": steps + 1}),
        output_dir=os.path.join(workdir, method),
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        disable_tqdm=True,
    )
    trainer = trainer_class(
        model=model_path,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )
    parts = defaultdict(float)
    trainer._generate = timed(trainer._generate, parts, lambda: "generation")
    trainer._calculate_rewards = timed(trainer._calculate_rewards, parts, lambda: "rewards")
    # Forwards without gradients score the rollout; those with gradients are part of training
    trainer._get_per_token_logps_and_entropies = timed(
        trainer._get_per_token_logps_and_entropies,
        parts,
        lambda: None if torch.is_grad_enabled() else "scoring_forwards",
    )
    clock = StepClock(parts)
    trainer.add_callback(clock)
    trainer.train()
    timed_steps = clock.steps[1:]
    samples = args.generation_batch_size
    logged = next(entry for entry in trainer.state.log_history if "completions/mean_length" in entry)
    return {
        "method": method,
        "samples_per_step": samples,
        "steps": len(timed_steps),
        "completion_tokens_per_sample": logged["completions/mean_length"],
        "ms_per_sample": {
            key: 1000 * statistics.fmean(step[key] for step in timed_steps) / samples for key in (*PARTS, "total")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per run (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per method, alternating GRPO and PPO")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args()

    spec = EmbeddedSpec()
    model_path = str(embedded_model_path(spec))
    train_dataset = add_prompts(load_gsm8k(None, difficulty=spec.difficulty)["train"], spec.system_prompt)
    reward_funcs = resolve_reward_funcs(["math_answer_reward"])
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(options.rounds):
            for method in ("grpo", "ppo"):
                result = run(method, options.steps, options.seed, model_path, train_dataset, reward_funcs, workdir)
                results.append(result | {"round": round_index})
                print(json.dumps(results[-1]), flush=True)

    load = os.getloadavg()[0]
    print(f"\nms per sample, mean of {options.rounds} round(s) x {options.steps} steps (load average now {load:.1f})")
    print(f"{'method':<6}" + "".join(f"{key:>18}" for key in (*PARTS, "total")))
    summary = {}
    for method in ("grpo", "ppo"):
        rows = [r["ms_per_sample"] for r in results if r["method"] == method]
        summary[method] = {key: statistics.fmean(row[key] for row in rows) for key in (*PARTS, "total")}
        print(f"{method:<6}" + "".join(f"{summary[method][key]:>18.2f}" for key in (*PARTS, "total")))
    ratio = summary["ppo"]["total"] / summary["grpo"]["total"]
    print(f"PPO / GRPO cost per sample: {ratio:.2f}x")
    if options.json:
        with open(options.json, "w") as handle:
            json.dump({"runs": results, "summary": summary, "ppo_over_grpo": ratio}, handle, indent=2)


if __name__ == "__main__":
    main()
