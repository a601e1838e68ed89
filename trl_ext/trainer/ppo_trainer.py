"""PPO with verifiable reward functions, on TRL 1.16's `GRPOTrainer`.

TRL removed its `PPOTrainer` in v1.13, and that one took only a reward model. This subclass keeps everything
`GRPOTrainer` does (generation with transformers or vLLM, reward-function calls, the clipped policy loss, logging)
and overrides the few methods that PPO changes:

- `_generate_and_score_completions`: after GRPO's rollout and rewards, one no-grad forward gives the rollout-time
  log-probs and values; the reference forward gives the KL penalty; the score goes on each completion's last valid
  token; masked GAE gives per-token advantages (whitened over the global batch) and the critic's returns.
- `_compute_loss`: GRPO's clipped policy loss on those `(B, T)` advantages, plus `vf_coef` times the clipped value
  loss, computed from hidden states captured during the same forward.
- `create_optimizer`, `_clip_grad_norm`, `save_model`, `_load_from_checkpoint`: the value head's parameter group,
  its own gradient clipping, and its weights in every checkpoint.

The critic is a `ValueHead` on the policy's last hidden states (one forward and one backward serve both). It lives
outside `self.model`, so vLLM weight syncing and `save_pretrained` never see it.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
from accelerate.utils import is_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback
from trl import GRPOTrainer

from trl_ext.trainer import compat
from trl_ext.trainer.gae import (
    explained_variance,
    kl_estimate,
    masked_gae,
    masked_mean_var,
    masked_whiten,
    token_rewards,
)
from trl_ext.trainer.ppo_config import PPOConfig
from trl_ext.trainer.value_head import HiddenStateCapture, ValueHead, clipped_value_loss

VALUE_HEAD_NAME = "value_head.safetensors"


def completion_scores(
    rewards_per_func: torch.Tensor,
    reward_weights: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    eos_token_ids: list[int],
    missing_eos_penalty: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each completion's score (the weighted sum of its rewards, minus `missing_eos_penalty` when it has no EOS
    token) and whether it is scorable (some reward function did not return None for it)."""
    scorable = ~torch.isnan(rewards_per_func).all(dim=1)
    scores = (rewards_per_func * reward_weights.to(rewards_per_func.device)).nansum(dim=1)
    if missing_eos_penalty is not None:
        eos = torch.tensor(eos_token_ids, device=completion_ids.device)
        has_eos = (torch.isin(completion_ids, eos) & completion_mask.bool()).any(dim=1)
        scores = scores - missing_eos_penalty * (~has_eos).to(scores.dtype)
    return scores, scorable


class _ZeroValueHeadGradients(TrainerCallback):
    """`Trainer` zeroes the model's gradients after each optimizer step; the value head is not part of the model."""

    def __init__(self, value_head: ValueHead):
        self.value_head = value_head

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.value_head.zero_grad(set_to_none=True)


class ScheduleAfterCriticWarmup:
    """An LR scheduler that starts once the critic warm-up is over.

    `Trainer` steps its scheduler after every optimizer step, warm-up steps included, which would spend part of the
    policy's schedule (its LR warm-up, say) before the policy's first update. This one holds the schedule during the
    `warmup_steps` critic-only steps, runs the value head's group at `critic_lr` meanwhile, and hands it back to the
    schedule when the policy starts. Everything else is the wrapped scheduler's.
    """

    def __init__(self, scheduler, critic_group: dict, critic_lr: float, warmup_steps: int, state):
        self.scheduler, self.critic_group, self.warmup_steps, self.state = scheduler, critic_group, warmup_steps, state
        self._scheduled_critic_lr = critic_group["lr"]
        critic_group["lr"] = critic_lr

    def step(self, *args, **kwargs) -> None:
        completed = self.state.global_step + 1  # `Trainer` counts the optimizer step just taken after this call
        if completed == self.warmup_steps:  # the next step is the policy's first: the schedule starts there
            self.critic_group["lr"] = self._scheduled_critic_lr
        elif completed > self.warmup_steps:
            self.scheduler.step(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.scheduler, name)


class PPOTrainer(GRPOTrainer):
    """PPO (clipped policy and value losses, GAE, KL penalty in the reward) driven by reward functions.

    Takes the arguments of `trl.GRPOTrainer` with a [`PPOConfig`]. Text-only models, on one device or under DDP.

    Logs GRPO's metrics (rewards, completion lengths, `entropy`, the policy's `clip_ratio/*`) and PPO's:
    `ppo/score/mean` (weighted reward minus the missing-EOS penalty), `ppo/kl` (the reward's KL estimate summed over a
    completion), `critic/values/mean` and `critic/returns/mean` (over valid tokens), `critic/advantages/{mean,std,min,
    max}` (GAE before whitening), `critic/explained_variance` (of the returns by the rollout-time values),
    `critic/vf_loss`, `critic/vf_clipfrac` (share of tokens where the clipped value loss is the larger) and
    `critic/grad_norm` (before clipping).
    """

    _tag_names = ["trl", "ppo", "trl-ext"]
    _name = "PPO"
    _paper = {
        "title": "Proximal Policy Optimization Algorithms",
        "id": "1707.06347",
        "citation": "@article{schulman2017proximal, title={{Proximal Policy Optimization Algorithms}}, "
        "author={John Schulman and Filip Wolski and Prafulla Dhariwal and Alec Radford and Oleg Klimov}, "
        "year=2017, eprint={arXiv:1707.06347}}",
    }

    def __init__(self, model, reward_funcs=None, args: PPOConfig | None = None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config.name_or_path
            args = PPOConfig(f"{name.split('/')[-1]}-PPO")
        if not isinstance(args, PPOConfig):
            raise TypeError(f"PPOTrainer takes a trl_ext.PPOConfig, got {type(args).__name__}")
        super().__init__(model, reward_funcs, args, **kwargs)

        if compat.is_vision_language(self):
            raise ValueError("PPOTrainer supports text-only models; pass a tokenizer as processing_class")
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "PPOTrainer runs on one device or under DDP: its value head sits outside the model, which DeepSpeed "
                "and FSDP would not shard. Use a single-GPU or multi_gpu accelerate config"
            )
        unwrapped = self.accelerator.unwrap_model(self.model)
        if args.kl_coef > 0 and self.ref_model is None and not is_peft_model(unwrapped):
            self.ref_model = self._frozen_copy(unwrapped)
        causal_lm = unwrapped.get_base_model() if is_peft_model(unwrapped) else unwrapped
        # The backbone the fused LM head calls: its output holds the hidden states the logits would come from
        self._hidden_states = HiddenStateCapture(causal_lm.base_model)
        self.value_head = ValueHead(causal_lm.config.get_text_config().hidden_size).to(self.accelerator.device)
        self._value_head_for_loss = (
            self.accelerator.prepare_model(self.value_head) if self.accelerator.num_processes > 1 else self.value_head
        )
        self.add_callback(_ZeroValueHeadGradients(self.value_head))
        self._rewards_per_func: torch.Tensor | None = None

    def _frozen_copy(self, policy: nn.Module) -> nn.Module:
        """The reference for the KL penalty: the initial policy, copied in memory.

        GRPOTrainer builds a reference only for its loss term (beta != 0), by reloading the model's path, which an
        in-memory model may not have or may differ from. Under PEFT the reference is the adapter-disabled model.
        """
        reference = compat.fused_lm_head_copy(policy, self.temperature, self.args.cast_lm_head_to_fp32)
        reference.requires_grad_(False).eval()
        return self.accelerator.prepare_model(reference, evaluation_mode=True)

    # -- optimizer -------------------------------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        """The policy's optimizer with the value head as its own parameter group (`critic_learning_rate`)."""
        optimizer = super().create_optimizer(model)
        head = list(self.value_head.parameters())
        if not any(p is q for group in optimizer.param_groups for p in group["params"] for q in head):
            optimizer.add_param_group({"params": head, "lr": self.args.critic_learning_rate, "weight_decay": 0.0})
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The LR schedule over the steps after the critic warm-up, which it does not advance."""
        warmup = self.args.critic_warmup_steps
        if self.lr_scheduler is not None or warmup == 0:
            return super().create_scheduler(num_training_steps, optimizer)
        scheduler = super().create_scheduler(max(num_training_steps - warmup, 1), optimizer)
        head = list(self.value_head.parameters())
        groups = (optimizer or self.optimizer).param_groups
        critic_group = next(g for g in groups if any(p is q for p in g["params"] for q in head))
        self.lr_scheduler = ScheduleAfterCriticWarmup(
            scheduler, critic_group, self.args.critic_learning_rate, warmup, self.state
        )
        return self.lr_scheduler

    def _clip_grad_norm(self, model):
        """Clip the policy's and the critic's gradients separately, so that value errors never shrink policy steps."""
        grad_norm = super()._clip_grad_norm(model)
        critic_norm = torch.nn.utils.clip_grad_norm_(self.value_head.parameters(), self.args.max_grad_norm)
        compat.grpo_metrics(self, "train")["critic/grad_norm"].append(critic_norm.item())
        return grad_norm

    # -- rollout ---------------------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    def _sum_across_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, reduction="sum")

    @staticmethod
    def _values(head, hidden_states: torch.Tensor, completion_length: int) -> torch.Tensor:
        """V(s_t) for each completion token t: the head on the hidden state of the position before it."""
        return head(hidden_states[:, -completion_length - 1 : -1])

    def _reference_logps(self, input_ids, attention_mask, completion_length, batch_size) -> torch.Tensor:
        """Log-probs under the frozen copy of the initial policy or, under PEFT, the model with adapters disabled."""
        forward = (input_ids, attention_mask, completion_length, batch_size)
        if self.ref_model is not None:
            return compat.per_token_logps(self, self.ref_model, *forward)
        with compat.adapters_disabled(self.accelerator.unwrap_model(self.model)):
            return compat.per_token_logps(self, self.model, *forward)

    def _generate_and_score_completions(self, inputs):
        # GRPO runs its own old-log-prob forward when `num_iterations > 1`; PPO gets those log-probs from its value
        # forward on every batch, so GRPO scores as if one iteration followed.
        with compat.single_grpo_iteration(self):
            output = super()._generate_and_score_completions(inputs)
        args = self.args
        mode = "train" if self.model.training else "eval"
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        mask = completion_mask * output["tool_mask"] if "tool_mask" in output else completion_mask
        input_ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], completion_mask], dim=1)
        length = completion_ids.size(1)
        batch_size = args.per_device_train_batch_size if mode == "train" else args.per_device_eval_batch_size

        process = self.accelerator.process_index
        local = slice(process * len(completion_ids), (process + 1) * len(completion_ids))
        scores, scorable = completion_scores(
            self._rewards_per_func[local], self.reward_weights, completion_ids, completion_mask, self.eos_token_ids,
            args.missing_eos_penalty,
        )  # fmt: skip

        with torch.no_grad(), compat.gradient_checkpointing_disabled(self.model, args.gradient_checkpointing_kwargs):
            with self._hidden_states.capture() as hidden_states:
                old_logps = compat.per_token_logps(self, self.model, input_ids, attention_mask, length, batch_size)
            values = torch.cat([self._values(self.value_head, states, length) for states in hidden_states])
            if args.kl_coef > 0:
                ref_logps = output.get("ref_per_token_logps")
                if ref_logps is None:
                    ref_logps = self._reference_logps(input_ids, attention_mask, length, batch_size)
                kl = kl_estimate(old_logps, ref_logps, args.kl_estimator) * mask
            else:
                kl = torch.zeros_like(old_logps)

        valid = mask * scorable.unsqueeze(1)
        rewards = token_rewards(torch.where(scorable, scores, 0.0), kl, valid, args.kl_coef)
        advantages, returns = masked_gae(rewards, values, valid, args.gamma, args.lam)
        self._log_rollout(mode, scores, scorable, kl, values, returns, advantages, valid)
        advantages = masked_whiten(advantages, valid, self._sum_across_processes)

        output.update(
            advantages=advantages, returns=returns, old_values=values, old_per_token_logps=old_logps, value_mask=valid
        )
        # GRPO logged its (all-zero, groupless) advantages and group statistics: log PPO's instead
        sequence_advantages = self.accelerator.gather((advantages * valid).sum(1) / valid.sum(1).clamp(min=1))
        logged = compat.grpo_logged_advantages(self)
        for _ in range(min(len(sequence_advantages), len(logged))):
            logged.pop()
        logged.extend(sequence_advantages.tolist())
        if self.num_generations == 1:
            compat.grpo_metrics(self, mode).pop("frac_reward_zero_std", None)
        return output

    def _log_rollout(self, mode, scores, scorable, kl, values, returns, advantages, valid) -> None:
        metrics = compat.grpo_metrics(self, mode)
        gathered_scores = self.accelerator.gather(torch.where(scorable, scores, torch.nan))
        metrics["ppo/score/mean"].append(gathered_scores.nanmean().item())
        metrics["ppo/kl"].append(self.accelerator.gather((kl * valid).sum(1)).mean().item())
        for name, tensor in (("values", values), ("returns", returns)):
            metrics[f"critic/{name}/mean"].append(masked_mean_var(tensor, valid, self._sum_across_processes)[0].item())
        mean, var = masked_mean_var(advantages, valid, self._sum_across_processes)
        metrics["critic/advantages/mean"].append(mean.item())
        metrics["critic/advantages/std"].append(var.sqrt().item())
        # Each process pads completions to its own longest: reduce to one value per process before gathering
        invalid = valid == 0
        local = torch.stack(
            [advantages.masked_fill(invalid, torch.inf).min(), -advantages.masked_fill(invalid, -torch.inf).max()]
        )
        lowest, negated_highest = self.accelerator.gather(local[None]).min(dim=0).values.tolist()
        metrics["critic/advantages/min"].append(lowest)
        metrics["critic/advantages/max"].append(-negated_highest)
        metrics["critic/explained_variance"].append(
            explained_variance(values, returns, valid, self._sum_across_processes)
        )

    # -- loss ------------------------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        """GRPO's clipped policy loss on PPO's advantages, plus `vf_coef` times the clipped value loss.

        During the critic warm-up the policy's forward builds no graph: its weights get no gradient, so the optimizer
        leaves them and their state (Adam's step count and moments) alone, and only the value loss is returned.
        """
        mode = "train" if self.model.training else "eval"
        warming_up = mode == "train" and self.state.global_step < self.args.critic_warmup_steps
        with self._hidden_states.capture() as hidden_states, torch.no_grad() if warming_up else nullcontext():
            policy_loss = super()._compute_loss(model, inputs)
        if len(hidden_states) != 1:
            raise RuntimeError(
                f"GRPOTrainer._compute_loss ran the backbone {len(hidden_states)} times for one micro-batch; "
                "PPOTrainer reads the critic's hidden states from its single forward (has TRL changed?)"
            )
        states = hidden_states[0]
        if warming_up or not self.args.value_loss_trains_policy:
            states = states.detach()
        values = self._values(self._value_head_for_loss, states, inputs["completion_ids"].size(1))
        per_token_loss, clipped = clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], self.args.cliprange_value
        )
        mask = inputs["value_mask"]
        # Normalised like GRPO's default `dapo` loss: a token mean over the generation batch, split into micro-steps
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        value_loss = (per_token_loss * mask).sum() / normalizer

        tokens = self._sum_across_processes(mask.sum())
        totals = self._sum_across_processes(torch.stack([(per_token_loss * mask).sum(), (clipped * mask).sum()]))
        metrics = compat.grpo_metrics(self, mode)
        metrics["critic/vf_loss"].append((totals[0] / tokens.clamp(min=1)).item())
        metrics["critic/vf_clipfrac"].append((totals[1] / tokens.clamp(min=1)).item())
        if warming_up:
            return self.args.vf_coef * value_loss
        return policy_loss + self.args.vf_coef * value_loss

    # -- checkpoints -----------------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The model as `Trainer` saves it, plus `value_head.safetensors` beside it."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            path = os.path.join(output_dir or self.args.output_dir, VALUE_HEAD_NAME)
            save_file({k: v.detach().contiguous() for k, v in self.value_head.state_dict().items()}, path)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, VALUE_HEAD_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{resume_from_checkpoint} has no {VALUE_HEAD_NAME}, so it was not written by PPOTrainer: resume "
                "from a PPO checkpoint, or start a new run in another output_dir"
            )
        self.value_head.load_state_dict(load_file(path, device=str(self.accelerator.device)))
