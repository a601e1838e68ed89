"""DPO on verifier-labelled pairs, in rounds: the policy samples, a verifier labels, DPO learns, and again.

Each round samples K completions for M prompts from the model being trained (`trl_ext.sampling`, as RAFT does),
scores them with reward functions (TRL's signature), pairs a better sample with a worse one of the same prompt
(`trl_ext.preference_pairs`), and runs TRL's DPO on those pairs' exact token ids; the next round samples from the
updated model. With `precompute_ref_log_probs` (the default) each round's reference is the policy as the round
starts, scored once before training, so only one model is in memory (iterative DPO, as in Xiong et al. 2024 and
Pang et al. 2024).

`DPORoundsTrainer` is TRL's `DPOTrainer` whose `train()` runs the rounds: each DPO phase is one `Trainer.train()` call
on that round's pairs, so DPO options, PEFT, quantization, callbacks and W&B logging work as they do for DPO.

What a run leaves under `output_dir`, every file written to a temporary name and renamed into place (the layout of
RAFT's cycles):

    checkpoint-<r>/samples.parquet  every sample of round r: prompt and completion token ids, text, rewards
    checkpoint-<r>/pairs.parquet    round r's preference pairs (TRL's prompt/chosen/rejected, plus the sampled ids)
    checkpoint-<r>/model/           the model (or PEFT adapter) after round r
    checkpoint-<r>/metrics.json     round r's metrics
    dpo_rounds_state.json           completed rounds and their metrics: a round counts once it is recorded here

`train(resume_from_checkpoint=True)` continues after the last recorded round and reuses the next round's samples and
pairs when they are on disk, so a SIGKILL loses at most the phase in flight.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import set_seed
from transformers.trainer_utils import SaveStrategy, TrainOutput
from trl import DPOTrainer
from trl.models import unwrap_model_for_generation

from trl_ext.dpo_rounds_config import DPORoundsConfig
from trl_ext.preference_pairs import build_pairs, preference_dataset, save_dataset
from trl_ext.sampling import SampleSet, sample, score
from trl_ext.selection import eligibility

STATE_FILE = "dpo_rounds_state.json"
STATE_FORMAT = 1
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")
# Settings that decide which prompts each round sees: a resumed run must keep them.
SCHEDULE_KEYS = ("seed", "prompts_per_round")
PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def round_metrics(samples: SampleSet, eligible: np.ndarray, pairs: Dataset, weights=None) -> dict[str, float]:
    """What a round sampled and paired. A sample is correct (pass@k) when the first reward function gives it >= 1."""
    rewards = samples.rewards(weights)
    correct = np.nan_to_num(samples.rewards_per_func[..., 0], nan=0.0) >= 1.0
    lengths = samples.lengths
    metrics = {
        "dpo_rounds/pairs": float(len(pairs)),
        "dpo_rounds/prompts_with_pair": float(len(set(pairs["prompt_row"])) / samples.num_prompts),
        "dpo_rounds/eligible_frac": float(eligible.mean()),
        "dpo_rounds/truncated_frac": float(samples.truncated.mean()),
        "dpo_rounds/reward_mean": float(np.nanmean(rewards)) if (~np.isnan(rewards)).any() else math.nan,
        "dpo_rounds/pass@1": float(correct.mean()),
        f"dpo_rounds/pass@{samples.num_samples}": float(correct.any(axis=1).mean()),
        "dpo_rounds/completion_mean_length": float(lengths.mean()),
    }
    if len(pairs):
        metrics |= {
            "dpo_rounds/chosen_reward_mean": float(np.mean(pairs["chosen_reward"])),
            "dpo_rounds/rejected_reward_mean": float(np.mean(pairs["rejected_reward"])),
            "dpo_rounds/chosen_mean_length": float(np.mean([len(ids) for ids in pairs["chosen_ids"]])),
            "dpo_rounds/rejected_mean_length": float(np.mean([len(ids) for ids in pairs["rejected_ids"]])),
        }
    return metrics


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def _json_safe(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


class DPORoundsTrainer(DPOTrainer):
    """Verifier-labelled DPO: sample, score, pair a passing with a failing sample, DPO on the pairs; repeat.

    Args:
        model: a model id or path (loaded with `args.model_init_kwargs` and `quantization_config`), or a model.
        reward_funcs: one or more callables with TRL's reward signature, `f(completions, **kwargs) -> list[float |
            None]`; they get the prompt dataset's columns as keyword arguments, as in `GRPOTrainer`.
        args: a `DPORoundsConfig`.
        train_dataset: the prompts, a `datasets.Dataset` with a `prompt` column (text or chat messages).
        eval_dataset: optional preference data (TRL's format) for DPO's own evaluation, per `args.eval_strategy`.
        processing_class: the tokenizer (loaded from the model when None).
        callbacks, peft_config, quantization_config: as for `DPOTrainer`.
    """

    _tag_names = ["trl", "dpo", "trl-ext", "dpo-rounds"]

    def __init__(
        self,
        model,
        reward_funcs: Callable | list[Callable],
        args: DPORoundsConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class=None,
        callbacks=None,
        peft_config=None,
        quantization_config=None,
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = DPORoundsConfig(f"{str(name).rstrip('/').split('/')[-1]}-DPO-rounds")
        elif not isinstance(args, DPORoundsConfig):
            raise TypeError(f"DPORoundsTrainer needs a DPORoundsConfig, got {type(args).__name__}.")
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, list | tuple) else [reward_funcs]
        _check_inputs(reward_funcs, args, train_dataset)
        super().__init__(
            model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            peft_config=peft_config,
            quantization_config=quantization_config,
        )
        self.prompt_dataset = train_dataset
        self.reward_funcs = reward_funcs
        self.reward_weights = list(args.reward_weights or [1.0] * len(reward_funcs))
        self.round = 0  # rounds completed
        self.history: list[dict] = []  # metrics of each completed round
        self._dpo_steps = 0  # optimizer steps of the completed rounds
        self._in_dpo_phase = False

    # -- the round loop ----------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None):
        """Run the rounds left: all of them, or those after the last completed one when resuming.

        `resume_from_checkpoint` is True (the run in `args.output_dir`) or one of its `checkpoint-<r>` directories;
        either way the run continues after its last completed round.
        """
        if trial is not None:
            raise ValueError("DPORoundsTrainer does not support hyperparameter search (trial).")
        started = time.time()
        self._start_or_resume(resume_from_checkpoint)
        for round_index in range(self.round + 1, self.args.num_rounds + 1):
            self._run_round(round_index, ignore_keys_for_eval)
        losses = [m["dpo_rounds/dpo_loss"] for m in self.history if m.get("dpo_rounds/dpo_loss") is not None]
        return TrainOutput(
            global_step=self._dpo_steps,
            training_loss=float(np.mean(losses)) if losses else math.nan,
            metrics={"train_runtime": time.time() - started, "dpo_rounds/rounds": float(self.round)},
        )

    def _run_round(self, round_index: int, ignore_keys_for_eval=None) -> None:
        args = self.args
        label = f"round {round_index}/{args.num_rounds}"
        round_dir = Path(args.output_dir) / f"checkpoint-{round_index}"
        samples_path, pairs_path = round_dir / "samples.parquet", round_dir / "pairs.parquet"
        self._on_main(lambda: (round_dir.mkdir(parents=True, exist_ok=True), _remove_partial_files(round_dir)))
        times: dict[str, float] = {}
        reused: list[str] = []
        reward_logs: dict[str, float] = {}

        rows = self._round_prompt_rows(round_index)
        prompts = self.prompt_dataset.select(rows)
        if samples_path.exists():
            samples = SampleSet.load(samples_path)
            reused.append("samples")
        else:
            started = time.time()
            samples, reward_logs = self._sample_and_score(prompts, rows, round_index, label)
            times["sample"] = time.time() - started
            self._on_main(lambda: samples.save(samples_path, self.reward_weights))

        rewards = samples.rewards(self.reward_weights)
        eligible = eligibility(
            samples.per_prompt(samples.completions),
            samples.per_prompt(samples.completion_ids),
            samples.truncated,
            rewards,
            args.drop_truncated,
            args.drop_duplicates,
        ).mask
        if pairs_path.exists():
            pairs = Dataset.from_parquet(str(pairs_path))
            reused.append("pairs")
        else:
            indices = build_pairs(
                rewards,
                eligible,
                np.random.default_rng([args.seed, round_index]),
                strategy=args.pair_strategy,
                max_pairs_per_prompt=args.max_pairs_per_prompt,
                min_reward_gap=args.min_reward_gap,
                tie_break=args.tie_break,
                lengths=samples.lengths,
            )
            pairs = preference_dataset(samples, prompts, indices, self.reward_weights)
            self._on_main(lambda: save_dataset(pairs, pairs_path))

        started = time.time()
        dpo = self._optimize(pairs, round_index, ignore_keys_for_eval)
        times["dpo"] = time.time() - started
        self._save_round_model(round_dir)

        metrics = round_metrics(samples, eligible, pairs, self.reward_weights) | dpo | reward_logs
        metrics |= {f"dpo_rounds/time/{phase}": seconds for phase, seconds in times.items()}
        metrics["dpo_rounds/round"] = float(round_index)
        self.round = round_index
        self.history.append(_json_safe(metrics))
        self._dpo_steps += int(dpo.get("dpo_rounds/dpo_steps", 0))
        self._on_main(
            lambda: (
                _write_atomic(round_dir / "metrics.json", json.dumps(_json_safe(metrics), indent=2)),
                self._write_state(),
                self._prune_models(),
            )
        )
        self.log(metrics)
        self._print_summary(label, metrics, reused)

    def _round_prompt_rows(self, round_index: int) -> list[int]:
        """Rows for a round: consecutive slices of seeded shuffles of the prompt dataset, reshuffled when used up."""
        size, per_round = len(self.prompt_dataset), self.args.prompts_per_round
        position = (round_index - 1) * per_round
        rows: list[int] = []
        while len(rows) < per_round:
            epoch, offset = divmod(position + len(rows), size)
            order = np.random.default_rng([self.args.seed, epoch]).permutation(size)
            rows.extend(order[offset : offset + per_round - len(rows)].tolist())
        return rows

    # -- phases ------------------------------------------------------------------------------------------------------

    def _sample_and_score(
        self, prompts: Dataset, rows: list[int], round_index: int, label: str
    ) -> tuple[SampleSet, dict[str, float]]:
        """Each process samples and scores its share of the prompts with the model being trained; all get all back."""
        args = self.args
        per_process = -(-len(prompts) // self.accelerator.num_processes)
        start = min(len(prompts), self.accelerator.process_index * per_process)
        stop = min(len(prompts), start + per_process)
        shard = prompts.select(range(start, stop))
        progress = self.accelerator.is_main_process and not args.disable_tqdm
        set_seed(args.seed + 1_000_003 * round_index + self.accelerator.process_index)  # reproducible on resume
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            local = sample(
                model,
                self._tokenizer,
                shard,
                num_samples=args.num_generations,
                max_new_tokens=args.max_completion_length,
                batch_size=args.generation_batch_size,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                prompt_rows=rows[start:stop],
                progress=f"{label} generate" if progress else None,
            )
        local, logged = score(
            local,
            shard,
            self.reward_funcs,
            batch_size=args.generation_batch_size,
            reward_kwargs={"trainer_state": self.state},
            progress=f"{label} score" if progress else None,
        )
        parts = gather_object([(local, logged)])
        names = {name for _, part_logged in parts for name in part_logged}
        logs = {f"dpo_rounds/{n}": float(np.mean([p[n] for _, p in parts if n in p])) for n in sorted(names)}
        return SampleSet.concat([part for part, _ in parts]), logs

    def _optimize(self, pairs: Dataset, round_index: int, ignore_keys_for_eval=None) -> dict[str, float]:
        """One DPO phase on the round's pairs, as sampled: prompt, chosen and rejected token ids, no re-tokenizing."""
        dataset = pairs.select_columns(list(PAIR_COLUMNS))
        if self.args.max_length is not None and self.args.truncation_mode == "keep_start":
            # As DPOTrainer does: a prompt filling max_length would leave no completion token to learn from.
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < self.args.max_length)
        if len(dataset) == 0:
            return {"dpo_rounds/dpo_steps": 0.0}
        if self.args.precompute_ref_log_probs:
            # The policy changed since the last round: its log-probabilities are this round's reference.
            self._precompute_model_hash = f"round-{round_index}-{time.time_ns()}"
            dataset = super()._precompute_ref_logps(
                dataset, "train", self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
            )
        self.train_dataset = dataset
        self.optimizer = None  # a fresh optimizer each round: the weights alone make a round's checkpoint exact
        self._in_dpo_phase = True
        try:
            output = super().train(ignore_keys_for_eval=ignore_keys_for_eval)
        finally:
            self._in_dpo_phase = False
        metrics = {
            "dpo_rounds/dpo_loss": float(output.training_loss),
            "dpo_rounds/dpo_steps": float(output.global_step),
            "dpo_rounds/dpo_pairs": float(len(dataset)),
        }
        for key in ("rewards/accuracies", "rewards/margins"):
            values = [entry[key] for entry in self.state.log_history if key in entry]
            if values:
                metrics[f"dpo_rounds/dpo_{key.split('/')[-1]}"] = float(values[-1])
        return metrics

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Leave the prompts as they are: each round's pairs come tokenized, as sampled."""
        if dataset_name == "train":
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        """Nothing to score in the prompt dataset; each round's pairs are scored in `_optimize`."""
        if name == "train" and "chosen_ids" not in dataset.column_names:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)

    # -- checkpoints and resume --------------------------------------------------------------------------------------

    def _save_round_model(self, round_dir: Path) -> None:
        """Save into a temporary directory, then rename it to `model/` (the PEFT adapter only, under PEFT)."""
        partial, final = round_dir / ".model.partial", round_dir / "model"
        self._on_main(lambda: shutil.rmtree(partial, ignore_errors=True))
        self.save_model(str(partial), _internal_call=True)  # collective under DeepSpeed and FSDP
        self._on_main(lambda: (shutil.rmtree(final, ignore_errors=True), os.replace(partial, final)))

    def _prune_models(self) -> None:
        """With `save_total_limit`, keep only the newest rounds' models; samples, pairs and metrics are kept."""
        limit = self.args.save_total_limit
        if limit:
            for round_index in range(1, self.round - limit + 1):
                shutil.rmtree(Path(self.args.output_dir) / f"checkpoint-{round_index}" / "model", ignore_errors=True)

    def _state(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "completed_rounds": self.round,
            "num_rounds": self.args.num_rounds,
            "dpo_steps": self._dpo_steps,
            "schedule": {key: getattr(self.args, key) for key in SCHEDULE_KEYS}
            | {"prompts": len(self.prompt_dataset)},
            "rounds": self.history,
        }

    def _write_state(self) -> None:
        _write_atomic(Path(self.args.output_dir) / STATE_FILE, json.dumps(self._state(), indent=2))

    def _start_or_resume(self, resume_from_checkpoint: str | bool | None) -> None:
        run_dir = Path(self.args.output_dir)
        state_path = run_dir / STATE_FILE
        state = json.loads(state_path.read_text()) if state_path.exists() else None
        if resume_from_checkpoint in (None, False):
            on_disk = sorted(run_dir.glob("checkpoint-*")) if run_dir.is_dir() else []
            if on_disk or (state and state["completed_rounds"]):
                raise ValueError(
                    f"{run_dir} already holds a run ({on_disk[-1].name if on_disk else STATE_FILE}); pass "
                    "resume_from_checkpoint=True to continue it, or pick another output_dir (nothing was overwritten)."
                )
            self.round, self.history, self._dpo_steps = 0, [], 0
            self._on_main(self._write_state)
            return
        if state is None:
            raise ValueError(f"No DPO rounds to resume in {run_dir}: no {STATE_FILE}.")
        if not isinstance(resume_from_checkpoint, bool):
            path = Path(resume_from_checkpoint)
            match = CHECKPOINT_PATTERN.fullmatch(path.name)
            if match is None or path.resolve().parent != run_dir.resolve():
                raise ValueError(
                    f"resume_from_checkpoint={resume_from_checkpoint} is not a checkpoint-<round> directory of "
                    f"output_dir {run_dir}; pass True to continue the run in output_dir."
                )
            if int(match.group(1)) < state["completed_rounds"]:
                raise ValueError(
                    f"{path} is round {match.group(1)}, but {run_dir} has completed {state['completed_rounds']} "
                    "rounds and a resume continues after the last one. To branch from an earlier round, start a new "
                    f"run (another output_dir) from its model ({path / 'model'})."
                )
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{state_path} has format {state.get('format')}; this version reads {STATE_FORMAT}.")
        expected = self._state()["schedule"]
        changed = {k: (v, expected.get(k)) for k, v in state["schedule"].items() if expected.get(k) != v}
        if changed:
            details = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            raise ValueError(
                f"Cannot resume {run_dir}: {details}. These decide which prompts each round samples; resume with the "
                "run's settings, or start a new run in another output_dir."
            )
        self.round, self.history, self._dpo_steps = state["completed_rounds"], state["rounds"], state["dpo_steps"]
        if self.round:
            self._load_from_checkpoint(str(run_dir / f"checkpoint-{self.round}" / "model"))
        self._on_main(self._write_state)
        self._print(f"[dpo] resuming {run_dir} after round {self.round} of {self.args.num_rounds}")

    # -- logging -----------------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Log with steps counted across rounds: each DPO phase is a `Trainer.train()` call that restarts at 0."""
        step_in_phase = self.state.global_step
        self.state.global_step = self._dpo_steps + (step_in_phase if self._in_dpo_phase else 0)
        try:
            super().log({**logs, "dpo_rounds/round": float(self.round + (1 if self._in_dpo_phase else 0))}, start_time)
        finally:
            self.state.global_step = step_in_phase

    def _print_summary(self, label: str, m: dict, reused: list[str]) -> None:
        k = self.args.num_generations
        dpo = (
            f"DPO loss {m['dpo_rounds/dpo_loss']:.3f} ({m['dpo_rounds/dpo_steps']:.0f} steps, "
            f"pair accuracy {100 * m.get('dpo_rounds/dpo_accuracies', math.nan):.0f}%)"
            if "dpo_rounds/dpo_loss" in m
            else "no DPO (no pair)"
        )
        times = ", ".join(
            f"{phase} {m[f'dpo_rounds/time/{phase}']:.0f}s"
            for phase in ("sample", "dpo")
            if f"dpo_rounds/time/{phase}" in m
        )
        self._print(
            f"[dpo] {label}: {m['dpo_rounds/pairs']:.0f} pairs from {100 * m['dpo_rounds/prompts_with_pair']:.0f}% "
            f"of prompts | reward mean {m['dpo_rounds/reward_mean']:.3f} | pass@1 {100 * m['dpo_rounds/pass@1']:.1f}% "
            f"pass@{k} {100 * m[f'dpo_rounds/pass@{k}']:.1f}% | {dpo} | {times}"
            + (f" | reused {', '.join(reused)}" if reused else "")
        )

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _print(self, message: str) -> None:
        if self.accelerator.is_main_process:
            print(message, flush=True)

    def _on_main(self, action: Callable[[], object]) -> None:
        """Run a file-system action on the main process only; every process waits for it."""
        if self.accelerator.is_main_process:
            action()
        self.accelerator.wait_for_everyone()


def _check_inputs(reward_funcs: list, args: DPORoundsConfig, train_dataset) -> None:
    """Fail on bad inputs before any model loads."""
    if not reward_funcs:
        raise ValueError("DPORoundsTrainer needs at least one reward function to label the pairs.")
    for func in reward_funcs:
        if isinstance(func, torch.nn.Module) or not callable(func):
            raise TypeError(
                "reward_funcs must be callables with TRL's reward signature, f(completions, **kwargs) -> list; "
                f"got {type(func).__name__}."
            )
    if args.reward_weights is not None and len(args.reward_weights) != len(reward_funcs):
        raise ValueError(
            f"reward_weights has {len(args.reward_weights)} values for {len(reward_funcs)} reward functions; "
            "give one weight per function."
        )
    if args.save_strategy != SaveStrategy.NO:
        raise ValueError(
            f"save_strategy must be 'no' (got '{SaveStrategy(args.save_strategy).value}'): DPO rounds save a "
            "checkpoint after every round (output_dir/checkpoint-<round>); a DPO phase restarts whole on resume."
        )
    if not isinstance(train_dataset, Dataset):
        raise TypeError(
            f"train_dataset must be a datasets.Dataset of prompts (with a 'prompt' column), got "
            f"{type(train_dataset).__name__}."
        )
    if "prompt" not in train_dataset.column_names:
        raise ValueError(
            f"train_dataset has columns {train_dataset.column_names}; DPORoundsTrainer needs a 'prompt' column "
            "(text, or a list of chat messages)."
        )
    if len(train_dataset) < args.prompts_per_round:
        raise ValueError(
            f"prompts_per_round ({args.prompts_per_round}) exceeds the {len(train_dataset)} prompts in train_dataset; "
            "lower prompts_per_round."
        )


def _remove_partial_files(round_dir: Path) -> None:
    """Temporary files and directories left by a process killed while writing."""
    for path in round_dir.glob(".*"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
