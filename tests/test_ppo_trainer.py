"""PPOTrainer on a tiny random Qwen2 model: rollout tensors, gradients of the value path, reference, checkpoints."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.data.embedded import build_tokenizer
from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.trainer.gae import last_token_index
from trl_ext.trainer.ppo_trainer import VALUE_HEAD_NAME, completion_scores


def odd_length_reward(completions, **kwargs):
    """A reward the random model earns about half the time, so that scores vary within a batch."""
    return [float(len(completion[0]["content"]) % 2) for completion in completions]


@pytest.fixture(scope="module")
def dataset():
    return add_prompts(generate_gsm8k_like(64, seed=0), "Solve.")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, dataset):
    tokenizer = build_tokenizer([row["question"] + "\n" + row["answer"] for row in dataset], vocab_size=300)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    path = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_trainer(model, dataset, tmp_path, peft_config=None, **overrides) -> PPOTrainer:
    values = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_completion_length=12, learning_rate=1e-3,
        critic_learning_rate=1e-2, report_to="none", use_cpu=True, bf16=False, gradient_checkpointing=False,
        logging_steps=1, save_strategy="no", seed=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = PPOTrainer(
        model=model if isinstance(model, torch.nn.Module) else str(model),
        reward_funcs=odd_length_reward,
        args=PPOConfig(**(values | overrides)),
        train_dataset=dataset,
        peft_config=peft_config,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def rollout(trainer: PPOTrainer, dataset) -> dict:
    return trainer._generate_and_score_completions([dict(row) for row in dataset.select(range(8))])


def count_forwards(trainer: PPOTrainer) -> list:
    """The models `_get_per_token_logps_and_entropies` runs, in order."""
    forwards, original = [], trainer._get_per_token_logps_and_entropies

    def counted(model, *args, **kwargs):
        forwards.append(model)
        return original(model, *args, **kwargs)

    trainer._get_per_token_logps_and_entropies = counted
    return forwards


def test_rollout_gives_whitened_token_advantages_returns_and_values(model_dir, dataset, tmp_path):
    trainer = make_trainer(model_dir, dataset, tmp_path, kl_coef=0.1, num_iterations=2)
    forwards = count_forwards(trainer)
    batch = rollout(trainer, dataset)

    # One policy forward gives the old log-probs and the values even with num_iterations > 1, one the reference's
    assert forwards == [trainer.model, trainer.ref_model]
    mask = batch["completion_mask"].bool()
    assert batch["advantages"].shape == batch["returns"].shape == batch["old_values"].shape == mask.shape
    assert batch["old_per_token_logps"].shape == mask.shape
    valid = batch["advantages"][mask]
    assert abs(valid.mean().item()) < 1e-5 and abs(valid.std().item() - 1) < 1e-3
    assert (batch["advantages"][~mask] == 0).all() and (batch["returns"][~mask] == 0).all()
    assert torch.equal(batch["old_values"], torch.zeros_like(mask, dtype=torch.float))  # zero-initialised head
    # The reference is the initial model, so no KL yet, and the head still says 0: the return of the token that
    # ends each completion is its score
    metrics = trainer._metrics["train"]
    assert metrics["ppo/kl"] == [pytest.approx(0.0, abs=1e-5)]
    scores = odd_length_reward(list(trainer._logs["completion"]))
    last_returns = batch["returns"][torch.arange(len(mask)), last_token_index(mask)]
    assert last_returns.tolist() == pytest.approx(scores, abs=1e-5)
    assert "frac_reward_zero_std" not in metrics
    for name in ("critic/explained_variance", "critic/values/mean", "critic/returns/mean", "critic/advantages/std"):
        assert len(metrics[name]) == 1


def test_reference_is_a_frozen_in_memory_copy_of_the_initial_policy(model_dir, dataset, tmp_path):
    policy = Qwen2ForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():  # an in-memory change the model's path does not have
        policy.model.norm.weight.mul_(2.0)
    trainer = make_trainer(policy, dataset, tmp_path, kl_coef=0.1)
    reference = trainer.ref_model
    assert reference is not trainer.model and not any(p.requires_grad for p in reference.parameters())
    torch.testing.assert_close(reference.model.norm.weight, policy.model.norm.weight)
    with torch.no_grad():
        policy.model.norm.weight.add_(1.0)
    assert not torch.equal(reference.model.norm.weight, policy.model.norm.weight)


def test_kl_coef_zero_needs_no_reference_forward(model_dir, dataset, tmp_path):
    trainer = make_trainer(model_dir, dataset, tmp_path, kl_coef=0.0)
    forwards = count_forwards(trainer)
    rollout(trainer, dataset)
    assert trainer.ref_model is None and forwards == [trainer.model]


def policy_and_critic_grads(trainer: PPOTrainer, batch: dict) -> tuple[dict, list]:
    trainer.model.zero_grad(set_to_none=True)
    trainer.value_head.zero_grad(set_to_none=True)
    trainer._compute_loss(trainer.model, batch).backward()
    policy = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return policy, [p.grad.clone() for p in trainer.value_head.parameters()]


def test_value_path_trains_the_critic_and_leaves_policy_gradients_alone(model_dir, dataset, tmp_path):
    trainer = make_trainer(model_dir, dataset, tmp_path, kl_coef=0.0, vf_coef=1.0)
    batch = rollout(trainer, dataset)
    with torch.no_grad():  # a head past its zero init, else no gradient could flow through it to the model
        trainer.value_head.summary.weight.normal_()
    policy, critic = policy_and_critic_grads(trainer, batch)
    assert all(g.abs().sum() > 0 for g in critic)
    assert sum(g.abs().sum() for g in policy.values()) > 0

    trainer.args.vf_coef = 0.0
    policy_without_value_loss, _ = policy_and_critic_grads(trainer, batch)
    assert policy.keys() == policy_without_value_loss.keys()
    for name, grad in policy.items():
        torch.testing.assert_close(grad, policy_without_value_loss[name], rtol=0, atol=0, msg=name)

    # Opting in, the value loss reaches the shared weights
    trainer.args.vf_coef, trainer.args.value_loss_trains_policy = 1.0, True
    shared, _ = policy_and_critic_grads(trainer, batch)
    assert any(not torch.equal(shared[n], policy[n]) for n in policy)


def test_critic_warmup_trains_only_the_critic(model_dir, dataset, tmp_path):
    trainer = make_trainer(
        model_dir, dataset, tmp_path, kl_coef=0.0, critic_warmup_steps=1, value_loss_trains_policy=True
    )
    batch = rollout(trainer, dataset)
    policy, critic = policy_and_critic_grads(trainer, batch)
    assert policy == {}  # no gradient at all, not zeros: the optimizer skips the policy's weights and their state
    assert all(g.abs().sum() > 0 for g in critic)
    trainer.state.global_step = 1
    policy, _ = policy_and_critic_grads(trainer, batch)
    assert sum(g.abs().sum() for g in policy.values()) > 0


def test_peft_reference_is_the_adapter_disabled_model(model_dir, dataset, tmp_path):
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = make_trainer(model_dir, dataset, tmp_path, peft_config=peft_config, kl_coef=0.1)
    assert trainer.ref_model is None and trainer.beta == 0.0
    with torch.no_grad():  # move the adapter off its zero init, so that policy and reference differ
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    batch = rollout(trainer, dataset)
    assert trainer._metrics["train"]["ppo/kl"][0] != pytest.approx(0.0, abs=1e-4)
    policy, critic = policy_and_critic_grads(trainer, batch)
    assert policy and all("lora_" in name for name in policy)
    assert all(g.abs().sum() > 0 for g in critic)


def test_training_saves_the_value_head_and_resumes_from_it(model_dir, dataset, tmp_path):
    args = dict(max_steps=2, save_strategy="steps", save_steps=1, kl_coef=0.05, num_iterations=2)
    trainer = make_trainer(model_dir, dataset, tmp_path, **args)
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-1"
    saved = load_file(checkpoint / VALUE_HEAD_NAME)
    assert saved["summary.weight"].abs().sum() > 0  # the critic learned in step 1
    optimizer_groups = torch.load(checkpoint / "optimizer.pt", weights_only=False)["param_groups"]
    assert optimizer_groups[-1]["initial_lr"] == pytest.approx(1e-2)  # the critic's own learning rate
    logged = trainer.state.log_history[0]
    for key in ("critic/vf_loss", "critic/vf_clipfrac", "critic/explained_variance", "critic/grad_norm", "entropy"):
        assert key in logged

    resumed = make_trainer(model_dir, dataset, tmp_path, **args)
    resumed._load_from_checkpoint(str(checkpoint))
    torch.testing.assert_close(resumed.value_head.state_dict(), saved)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 2

    (checkpoint / VALUE_HEAD_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="not written by PPOTrainer"):
        make_trainer(model_dir, dataset, tmp_path, **args)._load_from_checkpoint(str(checkpoint))


def test_completion_scores_weight_rewards_and_penalise_missing_eos():
    eos, pad = 2, 0
    completion_ids = torch.tensor([[5, 6, eos, pad], [5, 6, 7, 8], [5, pad, pad, pad]])
    completion_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    rewards = torch.tensor([[1.0, 0.5], [1.0, float("nan")], [float("nan"), float("nan")]])
    scores, scorable = completion_scores(
        rewards, torch.tensor([1.0, 2.0]), completion_ids, completion_mask, [eos], 0.7
    )
    torch.testing.assert_close(scores, torch.tensor([2.0, 1.0 - 0.7, -0.7]))
    assert scorable.tolist() == [True, True, False]
    scores, _ = completion_scores(rewards, torch.tensor([1.0, 2.0]), completion_ids, completion_mask, [eos], None)
    torch.testing.assert_close(scores, torch.tensor([2.0, 1.0, 0.0]))


@pytest.mark.parametrize("kl_coef", [0.0, 0.05])
def test_planner_estimate_matches_the_tensors_ppo_holds(model_dir, dataset, tmp_path, kl_coef):
    """The planner plans what PPOTrainer builds: the policy, a value head, and a reference copy only at kl_coef > 0."""
    from trl import ModelConfig

    from trl_ext.platform.detect import detect_platform
    from trl_ext.platform.presets import estimate_run
    from trl_ext.run.progress import held_tensor_bytes

    trainer = make_trainer(model_dir, dataset, tmp_path, kl_coef=kl_coef, max_steps=1)
    trainer.train()
    held = held_tensor_bytes(trainer)
    estimate = estimate_run(str(model_dir), "ppo", trainer.args, ModelConfig(), detect_platform())
    assert estimate.phase == "train"
    model_states = ("weights", "gradients", "optimizer", "reference_model", "value_head")
    planned = sum(estimate.breakdown.get(name, 0) for name in model_states)
    assert ("reference_model" in estimate.breakdown) == (kl_coef > 0) == (trainer.ref_model is not None)
    assert abs(planned - held["total"]) / held["total"] < 0.15, (planned, held)


def test_critic_warmup_leaves_the_policy_schedule_and_optimizer_state_alone(model_dir, dataset, tmp_path):
    """Two critic-only steps, then the policy's first update at the schedule's first learning rate, with Adam's
    state for the policy's weights starting at that update."""
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        def __init__(self):
            self.rates, self.policy_steps, self.weights = [], [], []

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            policy_group, critic_group = trainer.optimizer.param_groups[0], trainer.optimizer.param_groups[-1]
            self.rates.append((policy_group["lr"], critic_group["lr"]))
            self.weights.append(next(trainer.model.parameters()).detach().clone())

        def on_optimizer_step(self, args, state, control, **kwargs):
            first = next(trainer.model.parameters())
            self.policy_steps.append(int(trainer.optimizer.state.get(first, {}).get("step", 0)))

    trainer = make_trainer(
        model_dir, dataset, tmp_path, kl_coef=0.0, critic_warmup_steps=2, max_steps=4, lr_scheduler_type="linear"
    )
    watch = Watch()
    trainer.add_callback(watch)
    head_before = trainer.value_head.summary.weight.detach().clone()
    trainer.train()
    lr, critic_lr = trainer.args.learning_rate, trainer.args.critic_learning_rate
    assert watch.rates[0][1] == watch.rates[1][1] == critic_lr  # the critic warms up at its own rate
    assert watch.rates[2] == (lr, critic_lr)  # the policy's first update at the schedule's start, not halfway down it
    assert watch.rates[3][0] == pytest.approx(lr / 2)  # then the linear decay over the two policy steps
    assert watch.policy_steps == [0, 0, 1, 2]  # Adam's step count for the policy starts at its first update
    assert torch.equal(watch.weights[0], watch.weights[2])  # untouched by the warm-up
    assert not torch.equal(trainer.value_head.summary.weight, head_before)
