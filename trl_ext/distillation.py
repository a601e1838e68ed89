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

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from trl_ext.embedded import EmbeddedSpec, cache_root, warm_start_rows


@dataclass(frozen=True)
class StudentSpec:
    """Everything that determines the embedded student besides its teacher; its hash names the cache directory.

    The defaults give 0.35M parameters against the teacher's 0.85M, warm-started on 2,000 rows against its 16,000.
    """

    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    sft_rows: int = 2000
    sft_learning_rate: float = 3e-3
    sft_batch_size: int = 32
    seed: int = 4321


def embedded_student_path(teacher_dir: str | os.PathLike, spec: StudentSpec | None = None, log=print) -> Path:
    """The directory of a student for the embedded teacher in `teacher_dir`, building it first if missing."""
    spec = spec or StudentSpec()
    teacher_dir = Path(teacher_dir)
    teacher_build = json.loads((teacher_dir / "build.json").read_text())
    key = json.dumps({"teacher": teacher_build["spec"], "student": asdict(spec)}, sort_keys=True)
    target = cache_root() / f"student-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (target / "build.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log(f"Building the embedded student in {target} (one time, under a minute on 2 CPU cores)...")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as staging:
        staging_path = Path(staging) / "model"
        _build_student(EmbeddedSpec(**teacher_build["spec"]), teacher_dir, spec, staging_path)
        (staging_path / "build.json").write_text(json.dumps({"spec": asdict(spec), "teacher": str(teacher_dir)}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging_path, target)  # atomic: a crash never leaves a half-built cache behind
    log(f"Embedded student built in {time.time() - started:.0f} s.")
    return target


def _build_student(teacher_spec: EmbeddedSpec, teacher_dir: Path, spec: StudentSpec, output_dir: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    config = Qwen2Config(
        vocab_size=teacher_config.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=teacher_config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # The teacher's warm-start recipe (reasoned and terse answers, same system prompt) on far fewer, different rows.
    rows = warm_start_rows(replace(teacher_spec, sft_rows=spec.sft_rows, seed=spec.seed))
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            num_train_epochs=1,
            per_device_train_batch_size=spec.sft_batch_size,
            learning_rate=spec.sft_learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=10,
            weight_decay=0.0,
            save_strategy="no",
            report_to="none",
            seed=spec.seed,
            bf16=False,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer).train()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


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


def resolve_teacher(run) -> str:
    """The checked teacher of a distillation `RecipeRun`; on the embedded default, the run's model becomes the student.

    Without `--model_name_or_path`, the embedded tiny model is the teacher (unless `--teacher_model_name_or_path`
    names another) and the student is the smaller embedded one built with its tokenizer. With a model, the teacher
    must be given. Fails with a `RecipeError` before any weights load.
    """
    from accelerate import PartialState

    from trl_ext.recipe import RecipeError, check_model_source

    args = run.training_args
    if run.is_embedded:
        teacher = args.teacher_model_name_or_path or run.model_name_or_path
        with PartialState().main_process_first():  # one rank builds, the others then find it cached
            run.model_name_or_path = str(embedded_student_path(run.model_name_or_path, log=run.print))
    elif args.teacher_model_name_or_path is None:
        raise RecipeError(
            "distillation needs a teacher: set --teacher_model_name_or_path (a stronger model with the student's "
            "tokenizer, e.g. Qwen/Qwen2.5-1.5B-Instruct for Qwen/Qwen2.5-0.5B-Instruct)"
        )
    else:
        teacher = args.teacher_model_name_or_path
    if teacher != run.model_name_or_path:
        check_model_source(teacher)
    try:
        check_shared_vocabulary(run.model_name_or_path, teacher)
    except ValueError as error:
        raise RecipeError(str(error)) from error
    args.teacher_model_name_or_path = teacher
    run.print(f"[{run.method}] teacher: {teacher}; student: {run.model_name_or_path}")
    return teacher


def gap_closed(teacher_accuracy: float, before: float, after: float) -> float:
    """Share of the teacher-student accuracy gap the student closed (NaN when the student was not behind)."""
    gap = teacher_accuracy - before
    return (after - before) / gap if gap > 0 else float("nan")
