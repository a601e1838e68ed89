"""The run's data: its task's training prompts and held-out problems, checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset

from trl_ext.data.loading import add_prompts, split_train_test
from trl_ext.run.arguments import RecipeError


@dataclass(frozen=True)
class TaskData:
    train: Dataset  # prompts (a conversational `prompt` column) and every column the rewards read
    eval: Dataset  # the held-out problems scored before and after training
    system_prompt: str


def load_task_data(settings) -> TaskData:
    """Load, split and check the task's data; the held-out set is the first `--eval_num_problems` test rows."""
    script, task = settings.script, settings.task
    try:
        train, test = split_train_test(
            task.load(script), script.eval_num_problems, script.dataset_train_split, script.dataset_test_split
        )
        if task.check_rows is not None:
            task.check_rows(train)
            task.check_rows(test)
    except (FileNotFoundError, ValueError) as error:
        raise RecipeError(str(error)) from error
    default_prompt = task.system_prompt
    if settings.is_embedded and task.embedded_system_prompt:  # what the embedded model was warm-started with
        default_prompt = task.embedded_system_prompt
    system_prompt = default_prompt if script.system_prompt is None else script.system_prompt
    held_out = test.select(range(min(len(test), script.eval_num_problems)))
    return TaskData(add_prompts(train, system_prompt), add_prompts(held_out, system_prompt), system_prompt)
