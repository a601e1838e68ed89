"""RAFT vs GRPO on the embedded task: training wall-clock to reach the same held-out accuracy.

    python bench/raft_vs_grpo.py                         # seed 42, both recipes' embedded defaults
    python bench/raft_vs_grpo.py --seeds 42 1 2 --threads 1

Both methods start from the same embedded model, draw prompts from the same generated train split, are rewarded by
`math_answer_reward`, and are scored on the same held-out problems (greedy pass@1) by the recipes' own evaluation,
with the recipes' tuned embedded defaults (`EMBEDDED_TRAINING_DEFAULTS`). Held-out accuracy is measured during
training (GRPO every `--grpo_eval_steps` steps, RAFT after every cycle) with the clock stopped while evaluating. The
table gives, for each target accuracy, each method's training time to first reach it (mean over seeds) and the ratio
GRPO / RAFT. The design notes this project started from claim RAFT is ~10x faster.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from trl_ext import RAFTConfig, RAFTTrainer
from trl_ext.run import Run, resolve_settings


def prepare(method: str, seed: int, output_dir: Path, num_problems: int, extra: str):
    config_class = GRPOConfig if method == "grpo" else RAFTConfig
    argv = ["--seed", str(seed), "--output_dir", str(output_dir), "--report_to", "none", "--disable_tqdm", "true"]
    argv += ["--eval_num_problems", str(num_problems), *shlex.split(extra)]
    return Run.start(resolve_settings(method, config_class, argv=argv))


class EvaluateEvery(TrainerCallback):
    """Held-out accuracy every `steps` GRPO steps; the training clock excludes the evaluation."""

    def __init__(self, run, steps: int):
        self.run, self.steps, self.trainer = run, steps, None
        self.curve: list[tuple[float, float]] = []
        self.training_seconds, self.resumed = 0.0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.resumed = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.steps == 0 or state.global_step == state.max_steps:
            self.training_seconds += time.perf_counter() - self.resumed
            result = self.run.evaluate(self.trainer, f"step {state.global_step}")
            self.curve.append((self.training_seconds, result.accuracy))
            self.resumed = time.perf_counter()


def grpo_curve(seed: int, workdir: Path, eval_steps: int, num_problems: int, extra: str) -> list[tuple[float, float]]:
    run = prepare("grpo", seed, workdir / f"grpo-s{seed}", num_problems, extra)
    trainer = GRPOTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    evaluator = EvaluateEvery(run, eval_steps)
    evaluator.trainer = trainer
    trainer.add_callback(evaluator)
    before = run.evaluate(trainer, "before").accuracy
    trainer.train()
    return [(0.0, before), *evaluator.curve]


def raft_curve(seed: int, workdir: Path, num_problems: int, extra: str) -> list[tuple[float, float]]:
    run = prepare("raft", seed, workdir / f"raft-s{seed}", num_problems, extra)
    trainer = RAFTTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    curve = [(0.0, run.evaluate(trainer, "before").accuracy)]
    num_cycles, training_seconds = trainer.args.num_cycles, 0.0
    for cycle in range(1, num_cycles + 1):  # one cycle per train() call, resuming, so that each can be evaluated
        trainer.args.num_cycles = cycle
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=cycle > 1 or None)
        training_seconds += time.perf_counter() - started
        curve.append((training_seconds, run.evaluate(trainer, f"cycle {cycle}").accuracy))
    return curve


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, accuracy in curve if accuracy >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--grpo_eval_steps", type=int, default=5)
    parser.add_argument("--eval_num_problems", type=int, default=300)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.45, 0.5, 0.55], help="accuracies to reach")
    parser.add_argument("--grpo_args", default="", help="extra recipe flags for GRPO, e.g. '--max_steps 80'")
    parser.add_argument("--raft_args", default="", help="extra recipe flags for RAFT, e.g. '--num_cycles 3'")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    curves: dict[str, list[list[tuple[float, float]]]] = {"grpo": [], "raft": []}
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            curves["grpo"].append(
                grpo_curve(seed, Path(workdir), args.grpo_eval_steps, args.eval_num_problems, args.grpo_args)
            )
            curves["raft"].append(raft_curve(seed, Path(workdir), args.eval_num_problems, args.raft_args))
            for name in curves:
                points = ", ".join(f"{s:.0f}s {100 * a:.1f}%" for s, a in curves[name][-1])
                print(f"seed {seed} {name} (training seconds, held-out accuracy): {points}", flush=True)

    print(f"\ntorch threads: {torch.get_num_threads()}; seeds: {args.seeds}; times are means over seeds")
    print("| target accuracy | GRPO time | RAFT time | GRPO / RAFT |\n|---|---|---|---|")
    for target in args.targets:
        times = {name: [time_to(curve, target) for curve in runs] for name, runs in curves.items()}
        reached = {name: None if None in values else sum(values) / len(values) for name, values in times.items()}
        ratio = f"{reached['grpo'] / reached['raft']:.2f}x" if reached["grpo"] and reached["raft"] else "n/a"
        print(f"| {100 * target:.0f}% | {_seconds(reached['grpo'])} | {_seconds(reached['raft'])} | {ratio} |")
    for name, runs in curves.items():
        finals = ", ".join(f"{100 * curve[-1][1]:.1f}% after {curve[-1][0]:.0f}s" for curve in runs)
        print(f"{name} final: {finals}")


def _seconds(value: float | None) -> str:
    return "not reached (some seed)" if value is None else f"{value:.0f}s"


if __name__ == "__main__":
    main()
