"""`trl-ext compare`: several methods on the same model, prompts, reward and budget, over several seeds.

Each (method, seed) is one `accelerate launch recipes/<method>_gsm8k.py` run, exactly as a user runs it, with a
training budget (wall-clock seconds or generated tokens, `trl_ext.run.progress`) and the method's loop left open-ended
so that the budget is what stops it. Each run scores held-out problems before, during (every `--eval_every` seconds of
training) and after training, and records the tokens its policy generated and the memory it held. The comparison then
writes to its output directory:

    results.md                the table (mean +- standard deviation over seeds) and the command that made it
    results.json              every run's record
    accuracy_vs_time.png      held-out accuracy against training wall-clock (mean over seeds, min-max band)
    accuracy_vs_tokens.png    the same against generated completion tokens
    memory.png                tensors held (weights, gradients, optimizer state) and the process's peak
    runs/<method>-s<seed>/    each run's model, progress.json, eval_results.json and log

and logs the table and plots to W&B. Runs already complete in the output directory are reused, so an interrupted
comparison continues where it stopped; an incomplete run's directory is kept, renamed, and the run starts again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# The methods compared, each with a loop length far beyond any budget, so that the budget (not the method's own
# schedule) ends each run. Every one is a method the planner knows (`trl_ext.platform.memory.METHODS`).
OPEN_ENDED = {
    "raft": ["--num_cycles", "100000"],
    "grpo": ["--max_steps", "1000000"],
    "ppo": ["--max_steps", "1000000"],
    "dpo": ["--num_rounds", "100000"],
    "rloo": ["--max_steps", "1000000"],
}
METHODS = tuple(OPEN_ENDED)
MIB = 2**20
# Progress evaluations per time budget: dense enough to see how fast each method climbs (their time is not counted).
EVALS_PER_BUDGET = 30
DEFAULT_EVAL_EVERY = 60.0  # seconds, with a token budget only


@dataclass
class RunRecord:
    method: str
    seed: int
    returncode: int
    wall_seconds: float
    before: float | None = None  # held-out accuracy (all eval problems) before and after training
    after: float | None = None
    points: list[dict] = field(default_factory=list)  # progress: seconds, tokens, step, accuracy (eval subset)
    train_seconds: float | None = None
    generated_tokens: int | None = None
    held_bytes: dict = field(default_factory=dict)
    peak_bytes: int | None = None
    device: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.after is not None

    @property
    def steps(self) -> int | None:
        return self.points[-1]["step"] if self.points else None


@dataclass
class Comparison:
    methods: list[str]
    seeds: list[int]
    output_dir: Path
    budget_seconds: float | None = 90.0
    budget_tokens: int | None = None
    eval_every: float = 3.0
    eval_problems: int = 200
    parallel: int = 1
    threads: int | None = None
    configs: bool = False
    report_to: str = "wandb"
    recipe_args: list[str] = field(default_factory=list)

    def run_dir(self, method: str, seed: int) -> Path:
        return self.output_dir / "runs" / f"{method}-s{seed}"

    def settings_path(self, method: str, seed: int) -> Path:
        """Where a run's recipe arguments are kept, to reuse it only under the same settings."""
        return self.output_dir / "runs" / f"{method}-s{seed}.args.json"

    def run_args(self, method: str, seed: int) -> list[str]:
        """The recipe's arguments for one run: seed, output, budget, progress evaluation, open-ended loop, yours."""
        from trl_ext.platform.launch import resolve_recipe

        args = ["--seed", str(seed), "--output_dir", str(self.run_dir(method, seed)), "--report_to", self.report_to]
        if self.configs:
            args += ["--config", str(resolve_recipe(f"{method}_gsm8k").parent / "configs" / f"{method}_gsm8k.yaml")]
        if self.budget_seconds is not None:
            args += ["--budget_seconds", str(self.budget_seconds)]
        if self.budget_tokens is not None:
            args += ["--budget_tokens", str(self.budget_tokens)]
        args += ["--progress_eval_seconds", str(self.eval_every), "--progress_eval_problems", str(self.eval_problems)]
        return [*args, *OPEN_ENDED[method], *self.recipe_args]

    def recipe_command(self, method: str, seed: int) -> list[str]:
        from trl_ext.platform.detect import detect_platform
        from trl_ext.platform.launch import build_launch_command, resolve_recipe

        return build_launch_command(resolve_recipe(f"{method}_gsm8k"), self.run_args(method, seed), detect_platform())


def check(comparison: Comparison) -> None:
    """Fail on bad settings before any run starts."""
    unknown = sorted(set(comparison.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if comparison.budget_seconds is None and comparison.budget_tokens is None:
        raise ValueError("give a budget: --budget_seconds and/or --budget_tokens")
    for name in ("budget_seconds", "budget_tokens", "eval_every", "eval_problems", "parallel", "threads"):
        value = getattr(comparison, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be positive (got {value})")
    if len(set(comparison.seeds)) != len(comparison.seeds):
        raise ValueError(f"--seeds repeats a seed: {comparison.seeds}")
    if "--seed" in comparison.recipe_args or "--output_dir" in comparison.recipe_args:
        raise ValueError("--seed and --output_dir are set per run by the comparison; pass --seeds / --output_dir")
    for method in comparison.methods:
        comparison.recipe_command(method, comparison.seeds[0])  # the recipe script exists
        for seed in comparison.seeds:
            path = comparison.settings_path(method, seed)
            if path.exists() and json.loads(path.read_text()) != comparison.run_args(method, seed):
                raise ValueError(
                    f"{comparison.output_dir} holds a {method} seed {seed} run made with other settings "
                    f"({path}); choose another --output_dir, or repeat that run's settings to reuse it"
                )
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ValueError("the plots need matplotlib: pip install 'trl-ext[compare]'") from error


def read_record(run_dir: Path, method: str, seed: int, returncode: int = 0, wall_seconds: float = 0.0) -> RunRecord:
    """A run's record from the files it left; `error` says what is missing."""
    record = RunRecord(method, seed, returncode, wall_seconds)
    results_path, progress_path = run_dir / "eval_results.json", run_dir / "progress.json"
    if not results_path.exists() or not progress_path.exists():
        record.error = f"no {'eval_results.json' if not results_path.exists() else 'progress.json'} in {run_dir}"
        return record
    results = json.loads(results_path.read_text())
    progress = json.loads(progress_path.read_text())
    record.before = results.get("eval/before/accuracy")
    record.after = results.get("eval/after/accuracy")
    record.wall_seconds = wall_seconds or results.get("runtime_seconds", 0.0)
    record.points = progress["points"]
    record.train_seconds = progress["train_seconds"]
    record.generated_tokens = progress["generated_tokens"]
    record.held_bytes = progress["held_bytes"]
    record.peak_bytes = progress["peak_bytes"]
    record.device = progress["device"]
    return record


def run_one(comparison: Comparison, method: str, seed: int, log=print) -> RunRecord:
    run_dir = comparison.run_dir(method, seed)
    record = read_record(run_dir, method, seed)
    if record.ok:
        log(f"[compare] {method} seed {seed}: reusing the complete run in {run_dir}")
        return record
    if run_dir.exists():  # a run that stopped midway: keep what it left, start again
        kept = run_dir.with_name(f"{run_dir.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(kept)
        log(f"[compare] {method} seed {seed}: the incomplete run was moved to {kept}")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = comparison.recipe_command(method, seed)
    comparison.settings_path(method, seed).write_text(json.dumps(comparison.run_args(method, seed)))
    env = dict(os.environ)
    if comparison.threads is not None:
        env["OMP_NUM_THREADS"] = str(comparison.threads)
    log(f"[compare] {method} seed {seed}: started")
    started = time.time()
    log_path = run_dir.parent / f"{run_dir.name}.log"
    with open(log_path, "w") as log_file:
        returncode = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT).returncode
    record = read_record(run_dir, method, seed, returncode, time.time() - started)
    if returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        record.error = f"exit {returncode}; see {log_path}: " + " | ".join(tail)
    status = f"{100 * record.after:.1f}% after" if record.ok else f"FAILED ({record.error})"
    log(f"[compare] {method} seed {seed}: {status}, {record.wall_seconds:.0f} s")
    return record


def run_all(comparison: Comparison, log=print) -> list[RunRecord]:
    """Every (method, seed), `parallel` at a time, seed by seed so that concurrent runs are different methods."""
    jobs = [(method, seed) for seed in comparison.seeds for method in comparison.methods]
    with ThreadPoolExecutor(max_workers=comparison.parallel) as pool:
        return list(pool.map(lambda job: run_one(comparison, *job, log=log), jobs))


# -- summary -----------------------------------------------------------------------------------------------------


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def first_reaching(points: list[dict], threshold: float, axis: str) -> float | None:
    """The `axis` value ("seconds", "tokens") of the first progress point at or above `threshold`."""
    return next((point[axis] for point in points if point["accuracy"] >= threshold), None)


def summarize(records: list[RunRecord]) -> tuple[list[dict], float]:
    """One row per method, and the accuracy threshold used for "time to reach" (start + half the best mean gain)."""
    ok = [r for r in records if r.ok]
    start = statistics.fmean(r.points[0]["accuracy"] for r in ok) if ok else 0.0
    by_method: dict[str, list[RunRecord]] = {}
    for record in records:
        by_method.setdefault(record.method, []).append(record)
    finals = [[r.points[-1]["accuracy"] for r in runs if r.ok] for runs in by_method.values()]
    best_final = max((statistics.fmean(values) for values in finals if values), default=start)
    threshold = start + (best_final - start) / 2
    rows = []
    for method, runs in by_method.items():
        done = [r for r in runs if r.ok]
        row = {"method": method, "runs": len(runs), "completed": len(done)}
        if done:
            reach_s = [first_reaching(r.points, threshold, "seconds") for r in done]
            reach_t = [first_reaching(r.points, threshold, "tokens") for r in done]
            row |= {
                "after": _mean_sd([r.after for r in done]),
                "gain": _mean_sd([r.after - r.before for r in done if r.before is not None] or [float("nan")]),
                "reached": sum(s is not None for s in reach_s),
                "seconds_to_threshold": statistics.median([s for s in reach_s if s is not None] or [float("nan")]),
                "tokens_to_threshold": statistics.median([t for t in reach_t if t is not None] or [float("nan")]),
                "generated_tokens": statistics.fmean(r.generated_tokens for r in done),
                "steps": statistics.fmean(r.steps for r in done),
                "train_seconds": statistics.fmean(r.train_seconds for r in done),
                "held_mib": statistics.fmean(r.held_bytes["total"] for r in done) / MIB,
                "weights_multiple": statistics.fmean(
                    r.held_bytes["weights"] / r.held_bytes["policy_weights"] for r in done
                ),
                "peak_mib": statistics.fmean(r.peak_bytes for r in done) / MIB,
                "wall_seconds": statistics.fmean(r.wall_seconds for r in done),
                "device": done[0].device,
            }
        rows.append(row)
    return rows, threshold


def markdown_table(rows: list[dict], threshold: float) -> str:
    peak = "peak CUDA MiB" if any(r.get("device") == "cuda" for r in rows) else "peak RSS MiB"
    columns = [
        "method",
        "held-out after (mean ± sd)",
        "gain (points)",
        f"s to {100 * threshold:.0f}%",
        f"tokens to {100 * threshold:.0f}%",
        "tokens generated",
        "steps",
        "tensors held MiB (weights × policy)",
        peak,
        "wall per run (s)",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if not row["completed"]:
            cells = [row["method"], f"failed ({row['runs']} runs)"] + [""] * (len(columns) - 2)
        else:
            (after, after_sd), (gain, gain_sd) = row["after"], row["gain"]
            reached = f" ({row['reached']}/{row['completed']} seeds)" if row["reached"] < row["completed"] else ""
            cells = [
                row["method"],
                f"{100 * after:.1f}% ± {100 * after_sd:.1f}",
                f"{100 * gain:+.1f} ± {100 * gain_sd:.1f}",
                _fmt(row["seconds_to_threshold"], ".0f") + reached,
                _fmt(row["tokens_to_threshold"], ",.0f"),
                f"{row['generated_tokens']:,.0f}",
                f"{row['steps']:.0f}",
                f"{row['held_mib']:.1f} ({row['weights_multiple']:.2f}×)",
                f"{row['peak_mib']:,.0f}",
                f"{row['wall_seconds']:.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float, spec: str) -> str:
    return "—" if value != value else format(value, spec)


# -- plots -------------------------------------------------------------------------------------------------------


def curves(records: list[RunRecord], axis: str, grid_size: int = 60) -> dict[str, tuple[np.ndarray, ...]]:
    """Per method: a grid on `axis` up to the shortest run's end, and the mean, min and max accuracy over seeds."""
    result = {}
    for method in dict.fromkeys(r.method for r in records):
        runs = [r for r in records if r.method == method and r.ok and len(r.points) > 1]
        if not runs:
            continue
        end = min(r.points[-1][axis] for r in runs)
        grid = np.linspace(0, end, grid_size)
        values = np.array(
            [np.interp(grid, [p[axis] for p in r.points], [p["accuracy"] for p in r.points]) for r in runs]
        )
        result[method] = (grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0))
    return result


def plot(records: list[RunRecord], output_dir: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis, label, name in (
        ("seconds", "training wall-clock (s)", "accuracy_vs_time.png"),
        ("tokens", "generated completion tokens", "accuracy_vs_tokens.png"),
    ):
        figure, ax = plt.subplots(figsize=(7, 4.5))
        for method, (grid, mean, low, high) in curves(records, axis).items():
            (line,) = ax.plot(grid, 100 * mean, label=method)
            ax.fill_between(grid, 100 * low, 100 * high, color=line.get_color(), alpha=0.15)
        ax.set(xlabel=label, ylabel="held-out accuracy (%)", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
        figure.tight_layout()
        figure.savefig(output_dir / name, dpi=120)
        plt.close(figure)
        paths.append(output_dir / name)

    methods = list(dict.fromkeys(r.method for r in records if r.ok))
    figure, (held_ax, peak_ax) = plt.subplots(1, 2, figsize=(10, 4))
    bottom = np.zeros(len(methods))
    for part in ("weights", "gradients", "optimizer"):
        values = np.array(
            [statistics.fmean(r.held_bytes[part] for r in records if r.method == m and r.ok) / MIB for m in methods]
        )
        held_ax.bar(methods, values, bottom=bottom, label=part)
        bottom += values
    held_ax.set(ylabel="MiB", title="tensors the trainer holds")
    held_ax.legend()
    peaks = [statistics.fmean(r.peak_bytes for r in records if r.method == m and r.ok) / MIB for m in methods]
    device = next((r.device for r in records if r.ok), "cpu")
    peak_ax.bar(methods, peaks, color="tab:gray")
    peak_ax.set(ylabel="MiB", title="peak CUDA allocated" if device == "cuda" else "peak process RSS")
    figure.tight_layout()
    figure.savefig(output_dir / "memory.png", dpi=120)
    plt.close(figure)
    paths.append(output_dir / "memory.png")
    return paths


# -- report ------------------------------------------------------------------------------------------------------


def write_report(comparison: Comparison, records: list[RunRecord], command: str, log=print) -> str:
    rows, threshold = summarize(records)
    table = markdown_table(rows, threshold)
    budget = " and ".join(
        part
        for part in (
            f"{comparison.budget_seconds:g} s of training" if comparison.budget_seconds is not None else "",
            f"{comparison.budget_tokens:,} generated tokens" if comparison.budget_tokens is not None else "",
        )
        if part
    )
    failed = [r for r in records if not r.ok]
    text = (
        f"# Method comparison\n\n{len(comparison.seeds)} seeds ({', '.join(map(str, comparison.seeds))}) per method, "
        f"a budget of {budget} per run. Held-out accuracy: greedy pass@1 on the held-out problems after training; "
        f"the curves and the time/tokens to reach {100 * threshold:.0f}% (the start plus half the best method's "
        f"gain) score the first {comparison.eval_problems} of them every {comparison.eval_every:g} s of training.\n\n"
        f"{table}\n\n"
        + (
            "Failed runs:\n" + "\n".join(f"- {r.method} seed {r.seed}: {r.error}" for r in failed) + "\n\n"
            if failed
            else ""
        )
        + f"Regenerate: `{command}`\n"
    )
    comparison.output_dir.mkdir(parents=True, exist_ok=True)
    (comparison.output_dir / "results.md").write_text(text)
    (comparison.output_dir / "results.json").write_text(
        json.dumps({"threshold": threshold, "rows": rows, "runs": [asdict(r) for r in records]}, indent=2)
    )
    title = f"{', '.join(comparison.methods)} · {budget} · {len(comparison.seeds)} seeds"
    plots = plot(records, comparison.output_dir, title) if any(r.ok for r in records) else []
    if comparison.report_to == "wandb":
        _log_to_wandb(comparison, rows, threshold, plots, log)
    return text


def _log_to_wandb(comparison: Comparison, rows: list[dict], threshold: float, plots: list[Path], log) -> None:
    import wandb

    from trl_ext.run.tracking import start_wandb_run

    run = start_wandb_run(
        "compare",
        "methods",
        "embedded",
        None,
        name=f"compare-{'-'.join(comparison.methods)}-{len(comparison.seeds)}seeds",
        config={k: v for k, v in asdict(comparison).items() if k != "output_dir"} | {"threshold": threshold},
        tags=list(comparison.methods),
        log=log,
    )
    flat = [{k: (v[0] if isinstance(v, tuple) else v) for k, v in row.items()} for row in rows]
    columns = sorted({key for row in flat for key in row})
    run.log(
        {"comparison": wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in flat])}
        | {path.stem: wandb.Image(str(path)) for path in plots}
    )
    run.finish()


# -- command line ------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"Methods (default: {' '.join(METHODS)}).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2], help="Seeds (default: 42 1 2).")
    parser.add_argument("--budget_seconds", type=float, default=90.0, help="Training seconds per run (default 90).")
    parser.add_argument("--budget_tokens", type=int, help="Generated completion tokens per run (with or instead).")
    parser.add_argument("--no_time_budget", action="store_true", help="Budget in tokens only (needs --budget_tokens).")
    parser.add_argument(
        "--eval_every",
        type=float,
        help=f"Seconds of training between progress evaluations (default: 1/{EVALS_PER_BUDGET} of the time budget, "
        f"else {DEFAULT_EVAL_EVERY:g}).",
    )
    parser.add_argument("--eval_problems", type=int, default=200, help="Held-out problems per progress evaluation.")
    parser.add_argument(
        "--parallel", type=int, help="Runs at a time (default: 1 on GPU; on CPU, one per core with --threads 1)."
    )
    parser.add_argument("--threads", type=int, help="CPU threads per run (default on CPU: 1).")
    parser.add_argument(
        "--configs", action="store_true", help="Use each method's recipes/configs/<method>_gsm8k.yaml (real models)."
    )
    parser.add_argument("--report_to", default="wandb", choices=("wandb", "none"), help="Log to W&B (default).")
    parser.add_argument("--output_dir", default="outputs/compare", help="Where runs, table and plots go.")
    parser.add_argument("--report_only", action="store_true", help="Rebuild the table and plots from finished runs.")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help="After --: flags passed to every recipe.")


def from_arguments(args: argparse.Namespace) -> Comparison:
    from trl_ext.platform.detect import detect_platform

    recipe_args = args.recipe_args[1:] if args.recipe_args[:1] == ["--"] else args.recipe_args
    on_gpu = detect_platform().is_gpu
    threads = args.threads if args.threads is not None else (None if on_gpu else 1)
    parallel = args.parallel or (1 if on_gpu else max(1, (os.cpu_count() or 1) // (threads or 1)))
    budget_seconds = None if args.no_time_budget else args.budget_seconds
    return Comparison(
        methods=args.methods,
        seeds=args.seeds,
        output_dir=Path(args.output_dir),
        budget_seconds=budget_seconds,
        budget_tokens=args.budget_tokens,
        eval_every=args.eval_every or (budget_seconds / EVALS_PER_BUDGET if budget_seconds else DEFAULT_EVAL_EVERY),
        eval_problems=args.eval_problems,
        parallel=parallel,
        threads=threads,
        configs=args.configs,
        report_to=args.report_to,
        recipe_args=recipe_args,
    )


def _build_embedded_model_once(comparison: Comparison) -> None:
    """Build the embedded default here when the runs will use it, rather than in several runs at the same time."""
    args = comparison.recipe_args
    if comparison.configs or "--model_name_or_path" in args:
        return
    from trl_ext.data.embedded import EmbeddedSpec, embedded_model_path

    difficulty = int(args[args.index("--difficulty") + 1]) if "--difficulty" in args[:-1] else EmbeddedSpec.difficulty
    embedded_model_path(EmbeddedSpec(difficulty=difficulty))


def run(args: argparse.Namespace) -> int:
    comparison = from_arguments(args)
    check(comparison)
    command = "trl-ext compare " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["compare"] else sys.argv[1:])
    started = time.time()
    if args.report_only:
        records = [read_record(comparison.run_dir(m, s), m, s) for s in comparison.seeds for m in comparison.methods]
    else:
        _build_embedded_model_once(comparison)
        threads = f", {comparison.threads} thread(s) each" if comparison.threads else ""
        print(
            f"[compare] {len(comparison.methods)} methods x {len(comparison.seeds)} seeds, {comparison.parallel} at a "
            f"time{threads}; in {comparison.output_dir}",
            flush=True,
        )
        records = run_all(comparison)
    print(write_report(comparison, records, command), flush=True)
    print(f"[compare] done in {time.time() - started:.0f} s; table and plots in {comparison.output_dir}", flush=True)
    return 0 if all(r.ok for r in records) else 1
