"""Every recipe as it runs on a multi-GPU node: here two CPU processes (gloo), launched as users launch them.

For each recipe, on the embedded default: both processes exit 0 after the same number of optimizer steps; the
held-out evaluation and the sampling were shared out between them; the saved model scores the held-out accuracy the
run printed; the files the run writes itself were written by the main process only (an audit hook in every process
records what each one writes under the output directory); W&B holds one run. And a process that fails, or falls out
of step with the others, ends the whole run with an error in bounded time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import DistillationConfig, GRPOConfig, RLOOConfig

from trl_ext import DPORoundsConfig, PPOConfig, RAFTConfig
from trl_ext.run import CODE_TASK, GSM8K_TASK, RecipeArguments, Run, resolve_settings
from trl_ext.run.evaluation import evaluate
from trl_ext.run.preference_data import PreferenceDataArguments
from trl_ext.run.wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PROCESSES = 2
EVAL_PROBLEMS = {"gsm8k": 32, "code": 8}
SHORT = {"online": ["--max_steps", "3"], "rounds": ["--prompts_per_cycle", "32", "--num_cycles", "2"]}
# recipe: (method, TRL config, recipe arguments, task, flags that keep the run short)
RECIPES = {
    "grpo_gsm8k": ("grpo", GRPOConfig, RecipeArguments, GSM8K_TASK, SHORT["online"]),
    "ppo_gsm8k": ("ppo", PPOConfig, RecipeArguments, GSM8K_TASK, SHORT["online"]),
    "rloo_gsm8k": ("rloo", RLOOConfig, RecipeArguments, GSM8K_TASK, SHORT["online"]),
    "raft_gsm8k": ("raft", RAFTConfig, RecipeArguments, GSM8K_TASK, SHORT["rounds"]),
    "dpo_gsm8k": (
        "dpo", DPORoundsConfig, PreferenceDataArguments, GSM8K_TASK, ["--prompts_per_round", "32", "--num_rounds", "2"]
    ),
    "distill_gsm8k": ("distill", DistillationConfig, RecipeArguments, GSM8K_TASK, SHORT["online"]),
    "grpo_code": ("grpo", GRPOConfig, RecipeArguments, CODE_TASK, ["--max_steps", "2"]),
    # compile_reward gives RAFT samples to select, so that its SFT phases run (the tiny model never passes a test)
    "raft_code": ("raft", RAFTConfig, RecipeArguments, CODE_TASK, ["--reward_funcs", "code_reward", "compile_reward"]),
}  # fmt: skip
# What libraries write in each process by design, not the run's own files: transformers' `_save_checkpoint` makes
# the checkpoint folder in every process for its per-process RNG state, and HF datasets keeps locks and cache files
# under a DPO round's dataset cache.
PER_PROCESS_WRITES = re.compile(r"^os\.mkdir .*/checkpoint-\d+$|rng_state_1\.pth$|/dataset_cache(/|$)")

AUDIT_HOOK = """
import os, sys

_root, _log = os.environ.get("AUDIT_ROOT"), os.environ.get("AUDIT_LOG_DIR")
if _root and _log and "RANK" in os.environ:
    _fd = os.open(os.path.join(_log, "rank-" + os.environ["RANK"] + ".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _changes = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"}

    def _record(event, args):
        if event == "open":
            path, mode, flags = args
            if not (any(c in mode for c in "wax+") if mode else (flags or 0) & _writes):
                return
            paths = [path]
        elif event in _changes:
            paths = list(args[:2]) if event == "os.rename" else [args[0]]
        else:
            return
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(path))
                if path.startswith(_root):
                    os.write(_fd, (event + " " + path + "\\n").encode())

    sys.addaudithook(_record)
"""


def launch(recipe: str, args: list[str], tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 recipes/<recipe>.py`, one thread per process, every write audited."""
    hook_dir, audit_dir = tmp_path / "hook", tmp_path / "audit"
    hook_dir.mkdir(exist_ok=True)
    audit_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env |= {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "WANDB_DIR": str(tmp_path), "HOME": str(tmp_path)}
    env |= {"AUDIT_ROOT": str(tmp_path / "run"), "AUDIT_LOG_DIR": str(audit_dir)}
    env["PYTHONPATH"] = os.pathsep.join([str(hook_dir), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(PROCESSES)]
    command += [str(REPO / "recipes" / f"{recipe}.py"), *args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    launcher = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True, **pipes)
    try:
        stdout, stderr = launcher.communicate(timeout=timeout)
    finally:  # the launcher and every process it started (they get sessions of their own), also after a timeout
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in [*psutil.Process(launcher.pid).children(recursive=True), psutil.Process(launcher.pid)]:
                process.kill()
    return subprocess.CompletedProcess(command, launcher.returncode, stdout, stderr)


def rescore(recipe: str, argv: list[str], model_dir: Path, tmp_path: Path) -> float:
    """Held-out accuracy of the saved model on the run's own held-out problems, shared out as the run shared them
    (each process's contiguous half, in batches of the same size) on one thread, as each process ran."""
    method, config_class, script_class, task, _ = RECIPES[recipe]
    argv = [*argv, "--output_dir", str(tmp_path / "rescore"), "--report_to", "none"]
    run = Run.start(resolve_settings(method, config_class, script_class, task, argv=argv))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    script = run.settings.script
    max_new_tokens = script.eval_max_new_tokens or run.settings.training.max_completion_length
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shards = [run.data.eval.shard(PROCESSES, index, contiguous=True) for index in range(PROCESSES)]
        results = [
            evaluate(model, run.model.tokenizer, shard, run.reward_funcs[0], max_new_tokens, script.eval_batch_size)
            for shard in shards
        ]
    finally:
        torch.set_num_threads(threads)
    return sum(r.accuracy * r.num_problems for r in results) / sum(r.num_problems for r in results)


def expected_steps(flags: list[str], output_dir: Path) -> int:
    """`--max_steps` for the online methods; for the rounds methods, what their phases ran by the state file (each
    round's own count, summed, and at least one step: every phase of these short runs has data)."""
    if "--max_steps" in flags:
        return int(flags[flags.index("--max_steps") + 1])
    (state_path,) = [
        output_dir / name for name in ("raft_state.json", "dpo_rounds_state.json") if (output_dir / name).exists()
    ]
    state = json.loads(state_path.read_text())
    unit, phase, prefix = (
        ("cycle", "sft", "raft") if state_path.name.startswith("raft") else ("round", "dpo", "dpo_rounds")
    )
    per_round = [int(metrics[f"{prefix}/{phase}_steps"]) for metrics in state[f"{unit}s"]]
    assert len(per_round) == state[f"num_{unit}s"] and min(per_round) > 0, per_round
    assert state[f"{phase}_steps"] == sum(per_round)
    return sum(per_round)


def writes_by(audit_dir: Path, rank: int) -> list[str]:
    log = audit_dir / f"rank-{rank}.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_runs_on_two_processes(recipe, embedded_model_dir, tmp_path):
    task, flags = RECIPES[recipe][3], RECIPES[recipe][4]
    problems = EVAL_PROBLEMS[task.name]
    argv = [*flags, "--eval_num_problems", str(problems)]
    result = launch(recipe, [*argv, "--output_dir", str(tmp_path / "run")], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    record = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    processes = record["processes"]
    steps = processes["optimizer_steps"]
    assert steps == [expected_steps(flags, tmp_path / "run")] * PROCESSES, steps
    for label, shares in processes["eval_problems"].items():  # each process scored its own half
        assert shares == [problems // PROCESSES] * PROCESSES, (label, shares)
    completions = processes["completions"]
    assert min(completions) > 0 and max(completions) <= 1.5 * min(completions), completions  # sampling shared out

    after = record["eval/after/accuracy"]
    assert f"held-out accuracy after: {100 * after:.1f}%" in result.stdout
    assert rescore(recipe, argv, tmp_path / "run", tmp_path) == pytest.approx(after, abs=1e-9)

    main_writes, other_writes = writes_by(tmp_path / "audit", 0), writes_by(tmp_path / "audit", 1)
    assert any("eval_results.json" in line for line in main_writes)
    stray = [line for line in other_writes if not PER_PROCESS_WRITES.search(line)]
    assert not stray, stray  # rounds state, samples, pairs, progress.json, models: the main process's alone
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    assert read_offline_run(runs[0]).summary["eval/after/accuracy"] == pytest.approx(after)


def test_a_progress_budget_stops_every_process_at_the_same_step(embedded_model_dir, tmp_path):
    """The budget is spent on figures every process shares (slowest clock, everyone's tokens): no process stops
    while another waits for it in the next step."""
    args = ["--num_cycles", "50", "--prompts_per_cycle", "32", "--budget_seconds", "6", "--eval_num_problems", "16"]
    result = launch("raft_gsm8k", [*args, "--report_to", "none", "--output_dir", str(tmp_path / "run")], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    record = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["budget_exhausted"] and len(set(record["processes"]["optimizer_steps"])) == 1
    assert progress["generated_tokens"] == sum(record["processes"]["tokens"])  # every process's tokens count


@pytest.mark.parametrize(
    ("reward", "expected"),
    [
        ("reward_helpers.fail_on_rank_one", "verifier crashed on rank 1"),
        ("reward_helpers.stray_collective_on_rank_one", ""),
    ],
    ids=["a process fails", "a process falls out of step"],
)
def test_a_failing_or_diverging_process_ends_the_run_in_bounded_time(embedded_model_dir, tmp_path, reward, expected):
    args = ["--reward_funcs", reward, "--max_steps", "3", "--eval_before", "false", "--eval_num_problems", "8"]
    args += ["--ddp_timeout", "30", "--report_to", "none", "--output_dir", str(tmp_path / "run")]
    started = time.monotonic()
    result = launch("grpo_gsm8k", args, tmp_path, timeout=400)
    assert result.returncode != 0
    assert time.monotonic() - started < 300  # minutes at most, never the 30-minute default or a silent hang
    assert expected in result.stderr
