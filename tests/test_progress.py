"""Training budgets and progress tracking: token counting, held-memory accounting, and budgets that really stop
single-phase trainers (GRPO) and multi-phase ones (RAFT) end to end."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from recipe_runs import launch_recipe

from trl_ext.progress import Budget, GenerationCounter, held_tensor_bytes
from trl_ext.recipe import RecipeArguments, RecipeError

EOS = 7


def test_counter_counts_up_to_and_including_the_first_eos():
    counter = GenerationCounter([EOS, 9])
    completions = torch.tensor(
        [
            [1, 2, EOS, 0, 0],  # 3 tokens
            [1, 2, 3, 4, 5],  # no EOS: all 5
            [9, EOS, EOS, 0, 0],  # the second EOS id ends it at once: 1
        ]
    )
    assert counter.count(completions) == 3 + 5 + 1


def test_counter_wraps_generate_and_skips_the_prompt():
    class Model(torch.nn.Module):
        def generate(self, input_ids, **kwargs):
            completion = torch.tensor([[4, EOS, 0], [4, 4, 4]])
            return torch.cat([input_ids, completion], dim=1)

    model, counter = Model(), GenerationCounter([EOS])
    counter.install(model)
    output = model.generate(input_ids=torch.ones(2, 6, dtype=torch.long))
    assert output.shape == (2, 9) and counter.tokens == 2 + 3
    model.generate(torch.ones(2, 4, dtype=torch.long))  # positional prompt
    assert counter.tokens == 10


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
    assert progress["budget_exhausted"] and 12 <= progress["train_seconds"] < 40
    assert points[0]["seconds"] < 1 and points[0]["tokens"] == 0 and points[0]["step"] == 0
    assert len(points) >= 3  # the start, at least one on the way, the stop
    for earlier, later in zip(points, points[1:], strict=False):
        assert later["seconds"] >= earlier["seconds"] and later["tokens"] >= earlier["tokens"]
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
