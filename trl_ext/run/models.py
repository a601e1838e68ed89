"""The run's model: the one named, or the embedded default built (once, cached); its tokenizer; a distillation
teacher."""

from __future__ import annotations

from dataclasses import dataclass

from trl_ext.run.arguments import RecipeError


@dataclass(frozen=True)
class ModelChoice:
    path: str  # what the trainer loads: a hub id or a local directory
    tokenizer: object
    teacher: str | None = None  # distillation only


def resolve_model(settings) -> ModelChoice:
    """The model to train and its tokenizer; for distillation, the teacher too (checked against the student's
    vocabulary before any weights load).

    Without `--model_name_or_path` the embedded tiny model is built (or found in the cache); distillation on the
    embedded default trains an even smaller student built with its tokenizer and makes the tiny model the teacher.
    """
    from transformers import AutoTokenizer

    from trl_ext.data.embedded import EmbeddedSpec, embedded_model_path

    path = settings.model.model_name_or_path
    if path is None:
        path = str(embedded_model_path(EmbeddedSpec(difficulty=settings.script.difficulty)))
    teacher = None
    if settings.method == "distill":
        from trl_ext.run.distillation import resolve_teacher

        path, teacher = resolve_teacher(path, settings.training.teacher_model_name_or_path, settings.is_embedded)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=settings.model.model_revision)
    except (OSError, ValueError) as error:
        raise RecipeError(f"cannot load the tokenizer of {path} ({error}); check --model_name_or_path") from error
    return ModelChoice(path=path, tokenizer=tokenizer, teacher=teacher)
