"""Training budgets and progress tracking: token counting, held-memory accounting, and budgets that really stop
single-phase trainers (GRPO) and multi-phase ones (RAFT) end to end."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fake_vllm import FakeVLLM
from recipe_runs import launch_recipe
from transformers import TrainerControl

from trl_ext.run.arguments import RecipeArguments, RecipeError
from trl_ext.run.progress import Budget, ProgressCallback, held_tensor_bytes
from trl_ext.trainer.generation import GenerationCount


def test_a_token_budget_ends_a_run_whose_generator_is_not_model_generate(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from trl_ext.data.loading import add_prompts, generate_gsm8k_like
    from trl_ext.run.progress import ProgressCallback

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    completion = tokenizer("#### 7", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_completion_length=16,
        max_steps=50, report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, save_strategy="no",
        vllm_importance_sampling_correction=False,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=lambda completions, **kwargs: [float(i % 2) for i in range(len(completions))],
        args=args,
        train_dataset=add_prompts(generate_gsm8k_like(64), "Solve."),
        processing_class=tokenizer,
    )
    trainer.use_vllm, trainer.vllm_generation = True, FakeVLLM(completion)  # TRL's vLLM path, without vLLM
    trainer._last_loaded_step = -1
    calls = []
    trainer.model.generate = lambda *a, **k: calls.append(1)  # would count, and fail, if anything called it
    per_step = 8 * len(completion)  # one generation batch of 8 completions per step
    progress = ProgressCallback(trainer=trainer, score=lambda: 0.0, budget=Budget(tokens=3 * per_step))
    trainer.add_callback(progress)
    progress.start()
    output = trainer.train()
    summary = progress.finish()
    assert trainer.vllm_generation.calls == 3 and not calls
    assert output.global_step == 3 and summary["budget_exhausted"]
    assert summary["generated_tokens"] == 3 * per_step == trainer.generation_count.tokens


class FakeClock:
    """Training time that moves only when the test says so: budgets and intervals are then exact, whatever the load."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _callback_on_a_fake_trainer(tmp_path: Path, clock: FakeClock, **settings) -> ProgressCallback:
    """A ProgressCallback on a stand-in trainer; each held-out evaluation takes 100 s of (paused) clock time."""
    trainer = SimpleNamespace(
        model=torch.nn.Linear(2, 2),
        generation_count=GenerationCount(),
        accelerator=SimpleNamespace(num_processes=1, device="cpu", is_main_process=True),
        args=SimpleNamespace(output_dir=str(tmp_path)),
    )
    evaluations = iter([0.1, 0.2, 0.3, 0.4, 0.5])

    def score() -> float:
        clock.now += 100.0
        return next(evaluations)

    return ProgressCallback(trainer=trainer, score=score, clock=clock, **settings)


def _train_steps(progress: ProgressCallback, clock: FakeClock, seconds: float, tokens: int, limit: int) -> int:
    """Runs steps of `seconds` each, generating `tokens` each, until the callback stops training; returns the count."""
    for step in range(1, limit + 1):
        clock.now += seconds
        progress.trainer.generation_count.add([[0] * tokens])
        control = progress.on_step_end(None, None, TrainerControl())
        if control.should_training_stop:
            return step
    return limit


def test_a_time_budget_stops_at_the_first_step_past_it_and_evaluations_do_not_count(tmp_path):
    clock = FakeClock()
    progress = _callback_on_a_fake_trainer(tmp_path, clock, budget=Budget(seconds=10), eval_every_seconds=4)
    progress.start()
    assert _train_steps(progress, clock, seconds=1.5, tokens=3, limit=100) == 7  # 7 * 1.5 = 10.5 >= 10
    summary = progress.finish()
    # evaluations at the start, at the first step 4 s past the previous one (4.5 s, 9 s), and at the stop (10.5 s)
    assert [(p["seconds"], p["tokens"], p["step"], p["accuracy"]) for p in summary["points"]] == [
        (0.0, 0, 0, 0.1), (4.5, 9, 3, 0.2), (9.0, 18, 6, 0.3), (10.5, 21, 7, 0.4),
    ]  # fmt: skip
    assert summary["budget_exhausted"] and progress.training_exhausted
    assert (summary["train_seconds"], summary["generated_tokens"]) == (10.5, 21)
    assert json.loads((tmp_path / "progress.json").read_text())["points"] == summary["points"]


def test_a_token_budget_stops_at_the_step_that_spends_it(tmp_path):
    clock = FakeClock()
    progress = _callback_on_a_fake_trainer(tmp_path, clock, budget=Budget(tokens=10))
    progress.start()
    assert _train_steps(progress, clock, seconds=2.0, tokens=4, limit=100) == 3  # 12 tokens >= 10
    summary = progress.finish()  # the stop is already the last point: finish adds none
    assert [(p["seconds"], p["tokens"], p["step"]) for p in summary["points"]] == [(0.0, 0, 0), (6.0, 12, 3)]
    assert summary["budget_exhausted"]


def test_a_run_that_ends_within_its_budget_gets_its_last_point_from_finish(tmp_path):
    clock = FakeClock()
    progress = _callback_on_a_fake_trainer(tmp_path, clock, budget=Budget(seconds=60, tokens=1000))
    progress.start()
    assert _train_steps(progress, clock, seconds=2.0, tokens=4, limit=5) == 5  # max_steps came first
    summary = progress.finish()
    assert [(p["seconds"], p["tokens"], p["step"]) for p in summary["points"]] == [(0.0, 0, 0), (10.0, 20, 5)]
    assert not summary["budget_exhausted"] and not progress.training_exhausted


def test_held_bytes_count_shared_weights_once_and_a_reference_copy_twice():
    policy = torch.nn.Linear(10, 10)  # 110 float32 parameters
    reference = torch.nn.Linear(10, 10)  # requires grad, as TRL's reference models may, but no optimizer updates it
    optimizer = torch.optim.AdamW(policy.parameters())
    policy(torch.ones(1, 10)).sum().backward()
    optimizer.step()
    trainer = SimpleNamespace(
        model=policy, model_wrapped=policy, ref_model=reference, reward_funcs=[len], optim=optimizer
    )
    held = held_tensor_bytes(trainer)
    assert held["policy_weights"] == 110 * 4
    assert held["weights"] == 2 * 110 * 4  # the wrapped alias is the same storage; the reference copy is not
    assert held["gradients"] == 110 * 4  # the reference never gets one
    assert held["optimizer"] == 2 * 110 * 4 + 2 * 4  # AdamW: two moments per parameter, plus a step per tensor
    assert held["total"] == held["weights"] + held["gradients"] + held["optimizer"]


def test_budget_is_spent_by_either_limit():
    assert not Budget().spent(1e9, 10**12)
    assert Budget(seconds=10).spent(10, 0) and not Budget(seconds=10).spent(9.9, 10**9)
    assert Budget(tokens=100).spent(0, 100) and not Budget(tokens=100).spent(10**6, 99)


@pytest.mark.parametrize(
    "flag", ["budget_seconds", "budget_tokens", "progress_eval_seconds", "progress_eval_problems"]
)
def test_non_positive_budget_flags_are_refused(flag):
    with pytest.raises(RecipeError, match=f"--{flag} must be positive"):
        RecipeArguments(**{flag: 0})


def _launch(recipe: str, output_dir: Path, *flags: str) -> dict:
    args = ["--output_dir", str(output_dir), "--report_to", "none", "--eval_num_problems", "40", *flags]
    result = launch_recipe(recipe, args, cwd=output_dir.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads((output_dir / "progress.json").read_text())


@pytest.mark.slow
def test_a_time_budget_stops_grpo_and_progress_is_recorded(embedded_model_dir, tmp_path):
    run = tmp_path / "grpo"
    progress = _launch(
        "grpo_gsm8k.py", run, "--max_steps", "100000", "--budget_seconds", "12",
        "--progress_eval_seconds", "4", "--progress_eval_problems", "20", "--eval_before", "false",
    )  # fmt: skip
    points = progress["points"]
    # The exact stop step and evaluation times are asserted on a fake clock above; here the recipe's wiring. The
    # upper bound only catches a budget that never stops: a step of the embedded model takes about a second even on
    # a loaded machine, so 12 s of budget plus one step stays far below 120 s.
    assert progress["budget_exhausted"] and 12 <= progress["train_seconds"] < 120
    assert points[0]["seconds"] < 1 and points[0]["tokens"] == 0 and points[0]["step"] == 0
    for earlier, later in zip(points[:-2], points[1:-1], strict=True):  # the evaluations on the way: 4 s apart
        assert later["seconds"] >= earlier["seconds"] + 4 and later["tokens"] >= earlier["tokens"]
    assert points[-1]["seconds"] >= 12 and points[-1]["tokens"] >= points[-2]["tokens"]
    assert points[-1]["tokens"] == progress["generated_tokens"] > 0 and points[-1]["step"] < 100000
    held = progress["held_bytes"]
    assert held["weights"] == held["policy_weights"] and held["optimizer"] >= 2 * held["gradients"]  # no reference
    results = json.loads((run / "eval_results.json").read_text())
    assert "eval/after/accuracy" in results and "eval/before/accuracy" not in results  # --eval_before false


@pytest.mark.slow
def test_a_token_budget_ends_raft_cycles_early(embedded_model_dir, tmp_path):
    run = tmp_path / "raft"
    progress = _launch(
        "raft_gsm8k.py", run, "--num_cycles", "50", "--prompts_per_cycle", "32", "--budget_tokens", "1",
    )  # fmt: skip
    state = json.loads((run / "raft_state.json").read_text())
    assert progress["budget_exhausted"] and progress["points"][-1]["step"] == 1
    assert state["completed_cycles"] == 1  # the first SFT step spent it; no second cycle was sampled
    assert progress["generated_tokens"] == state["cycles"][0]["raft/generated_tokens"]
