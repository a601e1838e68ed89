"""On-policy distillation: a smaller student with the teacher's own tokenizer, vocabulary checks before any weights
load, the planner's teacher, and the recipe end to end on tiny models."""

import json
import os
from pathlib import Path

import pytest
from recipe_runs import launch_recipe
from trl import DistillationConfig

from trl_ext.data.embedded import EmbeddedSpec, embedded_model_path, embedded_student_path
from trl_ext.platform.memory import TrainingSetup, estimate_peak, load_model_shape
from trl_ext.run import RecipeError, resolve_settings
from trl_ext.run.distillation import check_shared_vocabulary, resolve_teacher
from trl_ext.run.run import gap_closed

TINY_STUDENT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "sft_rows": 64}


def _in_cache(cache: Path, build):
    previous = os.environ.get("TRL_EXT_CACHE")
    os.environ["TRL_EXT_CACHE"] = str(cache)
    try:
        return build()
    finally:
        if previous is not None:
            os.environ["TRL_EXT_CACHE"] = previous


@pytest.fixture(scope="module")
def student_dir(tiny_model_dir, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("student-cache")
    return _in_cache(cache, lambda: embedded_student_path(tiny_model_dir, **TINY_STUDENT))


@pytest.fixture(scope="module")
def other_tiny_dir(tmp_path_factory) -> Path:
    """Like `tiny_model_dir` but warm-started on other rows: its tokenizer has as many tokens, not the same ones."""
    spec = EmbeddedSpec(sft_rows=96, num_layers=2, hidden_size=64, intermediate_size=128, seed=7)
    return _in_cache(tmp_path_factory.mktemp("other-cache"), lambda: embedded_model_path(spec))


def test_student_is_smaller_with_the_teachers_exact_vocabulary(tiny_model_dir, student_dir):
    from transformers import AutoConfig, AutoTokenizer

    check_shared_vocabulary(str(student_dir), str(tiny_model_dir))  # no error: token for token the same
    assert (
        AutoTokenizer.from_pretrained(student_dir).get_vocab()
        == AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()
    )
    student, teacher = load_model_shape(str(student_dir)), load_model_shape(str(tiny_model_dir))
    assert student.num_params < teacher.num_params
    assert AutoConfig.from_pretrained(student_dir).vocab_size == AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    built = json.loads((student_dir / "build.json").read_text())
    assert built["spec"]["sft_rows"] == 64 and built["teacher"] == str(tiny_model_dir)


def test_tokenizers_of_equal_size_but_other_tokens_are_refused(tiny_model_dir, other_tiny_dir):
    from transformers import AutoTokenizer

    # Both tokenizers were trained on generated text of the same kind: same size, different ids.
    assert len(AutoTokenizer.from_pretrained(tiny_model_dir)) == len(AutoTokenizer.from_pretrained(other_tiny_dir))
    with pytest.raises(ValueError, match="different tokenizers .* token-id assignments differ"):
        check_shared_vocabulary(str(tiny_model_dir), str(other_tiny_dir))


def teacher_of(argv, tmp_path):
    argv = argv + ["--output_dir", str(tmp_path / "out"), "--report_to", "none", "--eval_num_problems", "16"]
    settings = resolve_settings("distill", DistillationConfig, argv=argv)
    return resolve_teacher(settings.model.model_name_or_path, settings.training.teacher_model_name_or_path, False)


def test_a_student_without_teacher_or_with_a_foreign_one_fails_early(tiny_model_dir, other_tiny_dir, tmp_path):
    with pytest.raises(RecipeError, match="distillation needs a teacher: set --teacher_model_name_or_path"):
        teacher_of(["--model_name_or_path", str(tiny_model_dir)], tmp_path)
    with pytest.raises(RecipeError, match="different tokenizers"):
        teacher_of(
            ["--model_name_or_path", str(tiny_model_dir), "--teacher_model_name_or_path", str(other_tiny_dir)],
            tmp_path,
        )
    with pytest.raises(RecipeError, match="not a model directory"):
        teacher_of(
            ["--model_name_or_path", str(tiny_model_dir), "--teacher_model_name_or_path", str(tmp_path / "nothing")],
            tmp_path,
        )


def test_gap_closed_and_planner_counts_the_teacher(tiny_model_dir):
    assert gap_closed(0.40, 0.10, 0.25) == pytest.approx(0.5)
    assert gap_closed(0.40, 0.10, 0.05) == pytest.approx(-1 / 6)
    assert gap_closed(0.10, 0.20, 0.30) != gap_closed(0.10, 0.20, 0.30)  # NaN: the student was not behind
    shape = load_model_shape(str(tiny_model_dir))
    setup = {"mode": "full", "mixed_precision": False, "gradient_checkpointing": False}
    distill = estimate_peak(shape, TrainingSetup(method="distill", **setup))
    grpo = estimate_peak(shape, TrainingSetup(method="grpo", reference_model=False, **setup))
    assert distill.breakdown["teacher_model"] == distill.breakdown["weights"]  # planned at the student's size
    assert distill.allocated_bytes == grpo.allocated_bytes + distill.breakdown["weights"]
    assert TrainingSetup(method="distill").generates


@pytest.mark.slow
def test_recipe_end_to_end_on_tiny_models(tiny_model_dir, student_dir, tmp_path):
    output_dir = tmp_path / "run"
    args = ["--model_name_or_path", str(student_dir), "--teacher_model_name_or_path", str(tiny_model_dir)]
    args += ["--max_steps", "2", "--per_device_train_batch_size", "8", "--max_completion_length", "16"]
    args += ["--learning_rate", "1e-3", "--eval_num_problems", "16", "--output_dir", str(output_dir)]
    result = launch_recipe("distill_gsm8k.py", [*args, "--report_to", "none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "held-out accuracy teacher:" in result.stdout and "of its accuracy gap to the teacher" in result.stdout
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["method"] == "distill"
    assert {"eval/teacher/accuracy", "eval/before/accuracy", "eval/after/accuracy"} <= set(results)
    assert (output_dir / "model.safetensors").exists()


@pytest.mark.slow
def test_recipe_honours_the_common_budget_progress_and_evaluation_flags(tiny_model_dir, student_dir, tmp_path):
    output_dir = tmp_path / "run"
    args = ["--model_name_or_path", str(student_dir), "--teacher_model_name_or_path", str(tiny_model_dir)]
    args += ["--max_steps", "50", "--per_device_train_batch_size", "8", "--max_completion_length", "16"]
    args += ["--budget_tokens", "1", "--progress_eval_seconds", "1000", "--progress_eval_problems", "8"]
    args += ["--eval_before", "false", "--eval_num_problems", "16", "--output_dir", str(output_dir)]
    result = launch_recipe("distill_gsm8k.py", [*args, "--report_to", "none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    progress = json.loads((output_dir / "progress.json").read_text())
    assert progress["budget_exhausted"] and progress["points"][-1]["step"] == 1  # the first step's tokens spent it
    # one step's generations: at most a batch of 8 completions of at most 16 tokens each, and some of them
    assert 0 < progress["generated_tokens"] <= 8 * 16, progress["generated_tokens"]
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert "eval/before/accuracy" not in results and "eval/after/accuracy" in results  # --eval_before false
    assert results["processes"]["optimizer_steps"] == [1]
