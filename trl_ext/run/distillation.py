"""Teacher and student for on-policy distillation: the embedded default's small student, and the vocabulary check.

TRL's `DistillationTrainer` matches the student's next-token distribution to the teacher's over the whole vocabulary,
so both must use the same tokenizer. On the embedded default the warm-started tiny model is the teacher and the
student is an even smaller Qwen2 model built here with the teacher's own tokenizer (not a retrained one, which could
order its vocabulary differently) and a much shorter warm-start on the same kind of data: a weaker model with the same
vocabulary, so the accuracy gap the distillation closes is measurable within minutes on a CPU.

The embedded default distills with forward KL (`beta=0`). The teacher is torn between its two answer styles (it puts
0.52 +- 0.05 of its first-token probability on a terse `####`), and reverse KL, mode-seeking, collapses the student
onto the terse style, whose answers are guesses; forward KL keeps both, and the student learns the teacher's
arithmetic on its own reasoned answers.
"""

from __future__ import annotations

from trl_ext.data.embedded import embedded_student_path


def check_shared_vocabulary(student: str, teacher: str) -> None:
    """Fail before any weights load when the student's and the teacher's tokenizers differ.

    Equal vocabulary sizes are not enough: two tokenizers of the same size can map ids to different tokens, and the
    loss would then compare unrelated probabilities without any error.
    """
    from transformers import AutoConfig, AutoTokenizer

    student_vocab = AutoTokenizer.from_pretrained(student).get_vocab()
    teacher_vocab = AutoTokenizer.from_pretrained(teacher).get_vocab()
    if student_vocab != teacher_vocab:
        differing = len(set(student_vocab.items()) ^ set(teacher_vocab.items()))
        raise ValueError(
            f"The student ({student}) and the teacher ({teacher}) have different tokenizers ({len(student_vocab)} "
            f"and {len(teacher_vocab)} tokens, {differing} token-id assignments differ); on-policy distillation "
            "compares next-token distributions, so they must share one. Pick a teacher from the student's family."
        )
    student_size = AutoConfig.from_pretrained(student).get_text_config().vocab_size
    teacher_size = AutoConfig.from_pretrained(teacher).get_text_config().vocab_size
    if student_size != teacher_size:
        raise ValueError(
            f"The student ({student}) has an output layer of {student_size} tokens and the teacher ({teacher}) one of "
            f"{teacher_size}; on-policy distillation needs the same size (the same tokenizer is not enough)."
        )


def resolve_teacher(model_path: str, teacher_path: str | None, is_embedded: bool) -> tuple[str, str]:
    """The (student, teacher) of a distillation run, checked before any weights load.

    On the embedded default, `model_path` (the embedded tiny model) is the teacher (unless `teacher_path` names
    another) and the student is the smaller embedded one built with its tokenizer. With a model, the teacher must be
    given. Fails with a `RecipeError`.
    """
    from trl_ext.run.arguments import RecipeError
    from trl_ext.run.settings import check_model_source
    from trl_ext.run.text import print_on_main

    if is_embedded:
        teacher = teacher_path or model_path
        student = str(embedded_student_path(model_path, log=print_on_main))
    elif teacher_path is None:
        raise RecipeError(
            "distillation needs a teacher: set --teacher_model_name_or_path (a stronger model with the student's "
            "tokenizer, e.g. Qwen/Qwen2.5-1.5B-Instruct for Qwen/Qwen2.5-0.5B-Instruct)"
        )
    else:
        student, teacher = model_path, teacher_path
    if teacher != student:
        check_model_source(teacher)
    try:
        check_shared_vocabulary(student, teacher)
    except ValueError as error:
        raise RecipeError(str(error)) from error
    print_on_main(f"[distill] teacher: {teacher}; student: {student}")
    return student, teacher
