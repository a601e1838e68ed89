"""The run layer: recipe arguments, settings, evaluation, budgets and progress, tracking; what recipes are made of.

A recipe: `settings = resolve_settings(method, Config)`, `run = Run.start(settings)`, a trainer built from
`run.trainer_kwargs()`, `run.train(trainer)`, all inside `run_recipe(main)` (see `trl_ext.run.run`).
"""

from trl_ext.run.arguments import RecipeArguments, RecipeError
from trl_ext.run.run import Run, run_recipe
from trl_ext.run.settings import Settings, resolve_settings
from trl_ext.run.tasks import CODE_TASK, GSM8K_TASK, Task

__all__ = [
    "CODE_TASK",
    "GSM8K_TASK",
    "RecipeArguments",
    "RecipeError",
    "Run",
    "Settings",
    "Task",
    "resolve_settings",
    "run_recipe",
]
