"""On-policy distillation on GSM8K-style math: the student answers, the teacher grades every token of the answer.

    accelerate launch recipes/distill_gsm8k.py          # embedded default: the tiny model teaches an even smaller one
    accelerate launch recipes/distill_gsm8k.py --config recipes/configs/distill_gsm8k.yaml   # Qwen2.5 1.5B -> 0.5B

TRL's `DistillationTrainer`: the student samples completions and is trained to match the teacher's next-token
distribution on them (generalized JSD; --beta 1 is reverse KL, 0 forward KL, which the embedded default uses: see
`trl_ext.run.distillation`). Teacher and student must share a tokenizer (checked before any weights load). Held-out
accuracy is measured for the teacher and for the student before and after, with the share of the gap the student
closed. Every DistillationConfig and ModelConfig flag works (--teacher_model_name_or_path; LoRA: --use_peft).
"""

from trl import DistillationConfig, DistillationTrainer

from trl_ext.run import Run, resolve_settings, run_recipe


def main() -> None:
    settings = resolve_settings("distill", DistillationConfig)  # defaults, preset, YAML, flags: every setting, once
    run = Run.start(settings)  # data; on the embedded default the tiny model teaches an even smaller student
    trainer = DistillationTrainer(teacher_model=run.model.teacher, **run.trainer_kwargs())
    run.evaluate(trainer, "teacher", model=trainer.teacher_model)
    run.train(trainer)  # the student before, training, after (with the share of the gap closed), save, W&B summary


if __name__ == "__main__":
    run_recipe(main)
