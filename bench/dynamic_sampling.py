"""Dynamic sampling (DAPO) against plain GRPO and RLOO on the embedded default, at equal token and time budgets.

    python bench/dynamic_sampling.py --probe                        # uniform-group fraction at the start, per level
    python bench/dynamic_sampling.py --difficulty 3 --seeds 0 1 2   # the comparison; rerun to resume it
    python bench/dynamic_sampling.py --report_only                  # table and plots from the finished runs

Each run is the recipe's own pipeline (`resolve_settings` -> `Run.start` -> `run.train`) with `--budget_tokens` and
`--budget_seconds` (whichever is spent first ends it; every generated token counts, kept or dropped), a progress
evaluation every `--progress_eval_seconds` of training, and the held-out evaluation after. Variants: GRPO without
dynamic sampling and with each `--group_filter` (zero_std, all_wrong, all_right), RLOO without and with zero_std.
Each finished run writes `<output_dir>/runs/<variant>-s<seed>.json` at once; a rerun skips those, so a cut-off loses
only the run in progress. Prints a Markdown table and writes `accuracy_vs_tokens.png`, `accuracy_vs_seconds.png`
and `uniform_groups.png` (share of generated groups whose rewards do not vary, per step) to `--plot_dir`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {  # name -> (method, recipe flags)
    "grpo-off": ("grpo", []),
    "grpo-zero_std": ("grpo", ["--dynamic_sampling", "--group_filter", "zero_std"]),
    "grpo-all_wrong": ("grpo", ["--dynamic_sampling", "--group_filter", "all_wrong"]),
    "grpo-all_right": ("grpo", ["--dynamic_sampling", "--group_filter", "all_right"]),
    "rloo-off": ("rloo", []),
    "rloo-zero_std": ("rloo", ["--dynamic_sampling", "--group_filter", "zero_std"]),
}


def classes(method: str):
    from trl_ext.trainer.dynamic_sampling import (
        DynamicSamplingGRPOConfig,
        DynamicSamplingGRPOTrainer,
        DynamicSamplingRLOOConfig,
        DynamicSamplingRLOOTrainer,
    )

    if method == "grpo":
        return DynamicSamplingGRPOConfig, DynamicSamplingGRPOTrainer
    return DynamicSamplingRLOOConfig, DynamicSamplingRLOOTrainer


def start_run(method: str, argv: list[str]):
    from trl_ext.run import Run, resolve_settings

    config_class, trainer_class = classes(method)
    run = Run.start(resolve_settings(method, config_class, argv=argv))
    return run, trainer_class(reward_funcs=run.reward_funcs, **run.trainer_kwargs())


def probe(difficulties: list[int], prompts: int, workdir: Path) -> None:
    """Share of groups (8 samples of one prompt, the embedded defaults' sampling) that are uniform at the start."""
    from trl_ext.trainer import compat
    from trl_ext.trainer.compat import GeneratedBatch
    from trl_ext.trainer.dynamic_sampling import group_rules, summed_rewards

    print("| difficulty | groups | uniform (zero std) | all wrong | all right | sample accuracy |")
    print("|---|---|---|---|---|---|")
    for difficulty in difficulties:
        argv = ["--output_dir", str(workdir / f"probe-{difficulty}"), "--report_to", "none", "--difficulty"]
        run, trainer = start_run("grpo", [*argv, str(difficulty), "--eval_num_problems", "8"])
        trainer.model.train()
        group = trainer.args.num_generations
        rows = [dict(row) for row in trainer.train_dataset.select(range(prompts)) for _ in range(group)]
        generated = GeneratedBatch.generate(trainer, [row["prompt"] for row in rows])
        rewards_per_func = compat.calculate_rewards(trainer, rows, generated)
        rewards = summed_rewards(rewards_per_func, compat.reward_weights(trainer)).view(-1, group)
        rules = {name: float(rule.float().mean()) for name, rule in group_rules(rewards, 1.0).items()}
        print(
            f"| {difficulty} | {prompts} | {100 * rules['zero_std']:.0f}% | {100 * rules['all_wrong']:.0f}% | "
            f"{100 * rules['all_right']:.0f}% | {100 * float(rewards.mean()):.0f}% |",
            flush=True,
        )


def one_run(variant: str, seed: int, args: argparse.Namespace, runs_dir: Path) -> dict:
    method, flags = VARIANTS[variant]
    output_dir = runs_dir / f"{variant}-s{seed}"
    argv = ["--seed", str(seed), "--output_dir", str(output_dir), "--report_to", "none", "--disable_tqdm", "true"]
    argv += ["--difficulty", str(args.difficulty), "--eval_before", "false", "--save_strategy", "no"]
    argv += ["--eval_num_problems", str(args.eval_num_problems), "--progress_eval_problems", str(args.eval_problems)]
    argv += ["--progress_eval_seconds", str(args.progress_eval_seconds), "--budget_tokens", str(args.budget_tokens)]
    argv += ["--budget_seconds", str(args.budget_seconds), "--max_steps", "100000", "--logging_steps", "1", *flags]
    started = time.time()
    run, trainer = start_run(method, argv)
    run.train(trainer)
    progress = json.loads((output_dir / "progress.json").read_text())
    uniform_key = "dynamic_sampling/frac_zero_std" if flags else "frac_reward_zero_std"
    uniform = [(entry["step"], entry[uniform_key]) for entry in trainer.state.log_history if uniform_key in entry]
    return {
        "variant": variant,
        "seed": seed,
        "difficulty": args.difficulty,
        "points": progress["points"],
        "uniform_per_step": uniform,
        "sampling_steps": progress.get("sampling_steps", []),
        "final_accuracy": run.results["after"].accuracy,
        "steps": trainer.state.global_step,
        "train_seconds": progress["train_seconds"],
        "generated_tokens": progress["generated_tokens"],
        "wall_seconds": time.time() - started,
    }


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f}% ± {100 * sd:.1f}"


def report(results: list[dict], plot_dir: Path) -> None:
    by_variant: dict[str, list[dict]] = {}
    for result in results:
        by_variant.setdefault(result["variant"], []).append(result)
    print("\n| variant | seeds | held-out after (mean ± sd) | best progress eval | steps | tokens generated | "
          "tokens trained | groups dropped | rounds per batch | bound reached | training s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for variant in VARIANTS:
        runs = by_variant.get(variant, [])
        if not runs:
            continue
        finals = [r["final_accuracy"] for r in runs]
        best = [max(p["accuracy"] for p in r["points"]) for r in runs]
        totals = [r["sampling_steps"][-1] for r in runs if r["sampling_steps"]]
        trained = f"{statistics.mean(t['tokens_trained'] for t in totals):,.0f}" if totals else "all"
        dropped = (
            f"{100 * sum(t['groups_dropped'] for t in totals) / sum(t['groups_generated'] for t in totals):.0f}%"
            if totals
            else "0%"
        )
        rounds = (
            f"{sum(t['rounds'] for t in totals) / sum(t['generation_batches'] for t in totals):.2f}" if totals else "1"
        )
        bound = f"{sum(t['bound_reached'] for t in totals)}/{sum(t['generation_batches'] for t in totals)}"
        print(
            f"| {variant} | {len(runs)} | {mean_sd(finals)} | {mean_sd(best)} | "
            f"{statistics.mean(r['steps'] for r in runs):.0f} | "
            f"{statistics.mean(r['generated_tokens'] for r in runs):,.0f} | "
            f"{trained} | {dropped} | {rounds} | {bound if totals else '-'} | "
            f"{statistics.mean(r['train_seconds'] for r in runs):.0f} |"
        )
    plot(by_variant, plot_dir)


def plot(by_variant: dict[str, list[dict]], plot_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    colours = dict(zip(VARIANTS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for x_key, label, name in (("tokens", "generated tokens (kept or dropped)", "accuracy_vs_tokens.png"),
                               ("seconds", "training seconds", "accuracy_vs_seconds.png")):  # fmt: skip
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for variant, runs in by_variant.items():
            for index, run in enumerate(runs):
                xs = [p[x_key] for p in run["points"]]
                ys = [100 * p["accuracy"] for p in run["points"]]
                axis.plot(xs, ys, color=colours[variant], alpha=0.7, label=variant if index == 0 else None)
        axis.set_xlabel(label)
        axis.set_ylabel("held-out accuracy, progress evaluations (%)")
        axis.legend()
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(plot_dir / name, dpi=110)
        plt.close(figure)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for variant, runs in by_variant.items():
        for index, run in enumerate(runs):
            steps = [step for step, _ in run["uniform_per_step"]]
            axis.plot(steps, [100 * f for _, f in run["uniform_per_step"]], color=colours[variant], alpha=0.6,
                      label=variant if index == 0 else None)  # fmt: skip
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("uniform groups among those generated (%)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(plot_dir / "uniform_groups.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=REPO / "outputs" / "bench-dynamic-sampling")
    parser.add_argument("--plot_dir", type=Path, default=REPO / "docs" / "dynamic-sampling")
    parser.add_argument("--probe", action="store_true", help="uniform groups at the start, per level")
    parser.add_argument("--probe_difficulties", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--probe_prompts", type=int, default=96)
    parser.add_argument("--difficulty", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget_tokens", type=int, default=40_000)
    parser.add_argument("--budget_seconds", type=float, default=60.0)
    parser.add_argument("--progress_eval_seconds", type=float, default=10.0)
    parser.add_argument("--eval_problems", type=int, default=100, help="held-out problems per progress evaluation")
    parser.add_argument("--eval_num_problems", type=int, default=200, help="held-out problems scored after training")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--report_only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        probe(args.probe_difficulties, args.probe_prompts, args.output_dir)
        return

    runs_dir = args.output_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for seed in args.seeds:  # seed-major: a cut-off leaves every variant with as many seeds as possible
            for variant in args.variants:
                path = runs_dir / f"{variant}-s{seed}.json"
                if path.exists():
                    continue
                result = one_run(variant, seed, args, runs_dir)
                path.write_text(json.dumps(result, indent=1))
                print(
                    f"{variant} seed {seed}: {100 * result['final_accuracy']:.1f}% after {result['steps']} steps, "
                    f"{result['generated_tokens']:,} tokens, {result['train_seconds']:.0f} s training, "
                    f"{result['wall_seconds']:.0f} s wall",
                    flush=True,
                )
    results = [json.loads(path.read_text()) for path in sorted(runs_dir.glob("*.json"))]
    results = [r for r in results if r["difficulty"] == args.difficulty and r["seed"] in args.seeds]
    print(f"\ndifficulty {args.difficulty}; budget {args.budget_tokens:,} tokens or {args.budget_seconds:.0f} s "
          f"of training; torch threads {torch.get_num_threads()}")  # fmt: skip
    report(results, args.plot_dir)


if __name__ == "__main__":
    main()
