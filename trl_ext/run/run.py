"""One recipe run, top to bottom: settings -> rewards -> data -> model -> tracking -> trainer -> evaluate, train,
evaluate -> save and summary; and `run_recipe`, a recipe's entry point.

    settings = resolve_settings("grpo", GRPOConfig)     # trl_ext.run.settings: every setting, once
    run = Run.start(settings)                           # rewards, data, model and tokenizer, W&B, in that order
    trainer = GRPOTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    run.train(trainer)                                  # evaluate, train, evaluate, save, summary

Every check that can fail on bad input runs before any model weights load.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trl_ext.run.arguments import RecipeError
from trl_ext.run.models import ModelChoice, resolve_model
from trl_ext.run.reward_funcs import resolve_reward_funcs
from trl_ext.run.settings import ConfigShown, Settings
from trl_ext.run.task_data import TaskData, load_task_data
from trl_ext.run.text import print_on_main
from trl_ext.trainer.compat import count_generations
from trl_ext.trainer.files import write_atomic

WANDB_SERVICE_VARIABLE = "WANDB_SERVICE"  # set in os.environ by W&B while its service process runs

RESULTS_FILE = "eval_results.json"


@dataclass
class Run:
    """A recipe run: its settings, reward functions, data and model, the W&B run, and the evaluations so far."""

    settings: Settings
    reward_funcs: list[Callable]
    data: TaskData
    model: ModelChoice
    wandb_run: object = None
    owns_wandb_service: bool = False  # W&B's service process was started for this run (none ran in the process)
    results: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @classmethod
    def start(cls, settings: Settings) -> Run:
        """Resolve the rewards, load and check the data, build or find the model and its tokenizer, start W&B."""
        method, task, script = settings.method, settings.task, settings.script
        reward_funcs = resolve_reward_funcs(script.reward_funcs or list(task.reward_funcs))
        data = load_task_data(settings)
        if task.start_verifier is not None:
            task.start_verifier()
        model = resolve_model(settings)
        if settings.is_embedded:
            print_on_main(
                f"[{method}] Running the embedded default: a tiny model built locally, on {task.embedded_dataset}. "
                f"For a real run: accelerate launch recipes/{method}_{task.name}.py --config "
                f"recipes/configs/{method}_{task.name}.yaml (or set --model_name_or_path and --dataset_name)."
                + task.embedded_note
            )
        for note in settings.notes:
            print_on_main(f"[{method}] {note}")
        print_on_main(f"[{method}] preset: {settings.preset.name}; output: {settings.training.output_dir}")
        run = cls(settings=settings, reward_funcs=reward_funcs, data=data, model=model)
        if "wandb" in (settings.training.report_to or []):
            run.owns_wandb_service = WANDB_SERVICE_VARIABLE not in os.environ
            run.wandb_run = start_tracking(settings, model.path)
        return run

    def trainer_kwargs(self) -> dict:
        """Arguments every TRL trainer takes: the model path, config, training data, tokenizer, PEFT and 4/8-bit."""
        from trl import get_peft_config, get_quantization_config

        model_args = self.settings.model
        return {
            "model": self.model.path,
            "args": self.settings.training,
            "train_dataset": self.data.train,
            "processing_class": self.model.tokenizer,
            "peft_config": get_peft_config(model_args),
            "quantization_config": get_quantization_config(model_args),
        }

    # -- evaluate, train, evaluate -------------------------------------------------------------------------------

    def train(self, trainer) -> None:
        """Evaluate, train (resuming when asked), evaluate again, save and log: the body of every recipe."""
        script = self.settings.script
        generated = count_generations(trainer)
        if script.eval_before:
            self.evaluate(trainer, "before")
        progress = self._progress_callback(trainer) if script.tracks_progress else None
        if progress is not None:
            trainer.add_callback(progress)
            progress.start()
        output = trainer.train(resume_from_checkpoint=self.settings.resume_from_checkpoint)
        if progress is not None:
            self._log_progress(progress.finish())
        self.evaluate(trainer, "after")
        self.finish(trainer, {"optimizer_steps": output.global_step} | asdict(generated))

    def evaluate(self, trainer, label: str, model=None):
        """Greedy pass@1 on the held-out problems, printed and logged as `eval/<label>/...`."""
        result = self._score(trainer, self.data.eval, model)
        self.results[label] = result
        print_on_main(
            f"[{self.settings.method}] held-out accuracy {label}: {100 * result.accuracy:.1f}% "
            f"({result.num_problems} problems, greedy pass@1)"
        )
        if self.wandb_run is not None:
            metrics = result.as_metrics(f"eval/{label}")
            self.wandb_run.log(metrics)
            self.wandb_run.summary.update(metrics)
        return result

    def _score(self, trainer, dataset, model=None):
        from trl.models import unwrap_model_for_generation

        from trl_ext.run.evaluation import evaluate

        script = self.settings.script
        max_new_tokens = script.eval_max_new_tokens or getattr(self.settings.training, "max_completion_length", 256)
        with unwrap_model_for_generation(model or trainer.model_wrapped, trainer.accelerator) as unwrapped:
            was_training = unwrapped.training
            unwrapped.eval()  # no dropout while scoring, also in the middle of training
            try:
                return evaluate(
                    unwrapped,
                    self.model.tokenizer,
                    dataset,
                    reward_func=self.reward_funcs[0],
                    max_new_tokens=max_new_tokens,
                    batch_size=script.eval_batch_size,
                    accelerator=trainer.accelerator,
                    reward_kwargs={"trainer_state": trainer.state},
                )
            finally:
                unwrapped.train(was_training)

    def _progress_callback(self, trainer):
        from trl_ext.run.progress import Budget, ProgressCallback

        script, held_out = self.settings.script, self.data.eval
        subset = held_out.select(range(min(script.progress_eval_problems, len(held_out))))
        return ProgressCallback(
            trainer=trainer,
            score=lambda: self._score(trainer, subset).accuracy,
            budget=Budget(seconds=script.budget_seconds, tokens=script.budget_tokens),
            eval_every_seconds=script.progress_eval_seconds,
        )

    def _log_progress(self, summary: dict) -> None:
        points = summary["points"]
        print_on_main(
            f"[{self.settings.method}] trained {summary['train_seconds']:.0f} s, generated "
            f"{summary['generated_tokens']} tokens; held-out accuracy over time: "
            + ", ".join(f"{p['seconds']:.0f}s {100 * p['accuracy']:.0f}%" for p in points)
        )
        if self.wandb_run is not None:
            import wandb

            columns = list(points[0])
            self.wandb_run.log(
                {"progress": wandb.Table(columns=columns, data=[[p[c] for c in columns] for p in points])}
            )
            self.wandb_run.summary.update(
                {
                    "progress/train_seconds": summary["train_seconds"],
                    "progress/generated_tokens": summary["generated_tokens"],
                    "progress/held_bytes": summary["held_bytes"]["total"],
                }
            )

    # -- save and summary ----------------------------------------------------------------------------------------

    def finish(self, trainer, process_record: dict | None = None) -> None:
        """Save the final model, log the before/after summary and the memory peak, close the trackers.

        `process_record` holds this process's own figures (optimizer steps, generated completions and tokens); the
        run's record (`eval_results.json`) lists them for every process, with each evaluation's share of problems.
        """
        from accelerate.utils import gather_object

        from trl_ext.platform.memory import measured_peak_bytes

        method, output_dir = self.settings.method, self.settings.training.output_dir
        trainer.save_model(output_dir)
        summary = {
            "runtime_seconds": time.time() - self.started,
            "memory/measured_peak_gib": measured_peak_bytes() / 2**30,
        }
        if "before" in self.results and "after" in self.results:
            gain = self.results["after"].accuracy - self.results["before"].accuracy
            summary["eval/accuracy_gain"] = gain
            print_on_main(
                f"[{method}] accuracy {100 * self.results['before'].accuracy:.1f}% -> "
                f"{100 * self.results['after'].accuracy:.1f}% ({100 * gain:+.1f} points); model saved to {output_dir}"
            )
        if {"teacher", "before", "after"} <= set(self.results):
            closed = gap_closed(*(self.results[label].accuracy for label in ("teacher", "before", "after")))
            summary["eval/gap_closed"] = closed
            print_on_main(f"[{method}] the student closed {100 * closed:.0f}% of its accuracy gap to the teacher")
        for label, result in self.results.items():
            summary |= result.as_metrics(f"eval/{label}")
        records = gather_object([process_record or {}])
        processes = {key: [record.get(key) for record in records] for key in records[0]}
        processes["eval_problems"] = {label: list(r.problems_per_process) for label, r in self.results.items()}
        if trainer.accelerator.is_main_process:  # the run's record, beside the model, for scripts and comparisons
            record = {"method": method, "run_name": self.settings.training.run_name, **summary, "processes": processes}
            write_atomic(Path(output_dir) / RESULTS_FILE, json.dumps(record, indent=2))
        if self.wandb_run is not None:
            self.wandb_run.summary.update(summary)
            # Not `trainer.end()`: it destroys the process group while DDP still holds it, and the process that frees
            # DDP last can then deadlock in gloo's destructor (pytorch/pytorch#56297); `run_recipe` ends them.
            self.wandb_run.finish()
            if self.owns_wandb_service:  # a service another W&B user in this process started is theirs to end
                import wandb

                wandb.teardown()  # stops the service process, which also takes its variable out of os.environ


def gap_closed(teacher_accuracy: float, before: float, after: float) -> float:
    """Share of the teacher-student accuracy gap the student closed (NaN when the student was not behind)."""
    gap = teacher_accuracy - before
    return (after - before) / gap if gap > 0 else float("nan")


def start_tracking(settings: Settings, model_path: str):
    """The W&B run, on the main process: named and tagged, with the settings (value and source), platform, preset
    and the memory estimate in its config."""
    from accelerate import PartialState

    from trl_ext.platform.presets import estimate_run
    from trl_ext.run.tracking import start_wandb_run

    if not PartialState().is_main_process:
        return None
    training, platform = settings.training, settings.platform
    estimate = estimate_run(model_path, settings.method, training, settings.model, platform)
    return start_wandb_run(
        settings.method,
        settings.model_label,
        settings.dataset_label,
        training.seed,
        name=training.run_name,
        config={
            "platform": platform.to_dict(),
            "preset": settings.preset.to_dict(),
            "memory/estimated_peak_gib": estimate.peak_gib,
            "settings": settings.record(),
        },
        tags=[platform.backend, settings.preset.name] + (["embedded"] if settings.is_embedded else []),
        project=settings.script.wandb_project,
        log=print_on_main,
    )


def run_recipe(main: Callable[[], None]) -> None:
    """A recipe's entry point: `main()`; bad input (`RecipeError`) as one line and exit status 2; and, under several
    processes, every process leaving together.

    Once all processes reach the end they exit without tearing the interpreter down: freeing a DDP wrapper at
    teardown can deadlock in gloo's process-group destructor, which joins a thread that waits for the GIL
    (pytorch/pytorch#56297). Exit handlers still run first.
    """
    import atexit

    import torch.distributed as dist

    try:
        main()
    except ConfigShown:
        pass
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
