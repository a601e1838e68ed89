"""Dynamic sampling and the solved-prompt sampler on GRPO and RLOO: which groups are kept, the refill and its bound,
gradient accumulation with several micro-batches per generation, PEFT, the vLLM path, token budgets, resume, the
recipes' flags, and TRL's trainers step for step with the options off."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict

import pytest
import torch
from fake_vllm import FakeVLLM
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.trainer.compat import count_generations
from trl_ext.trainer.dynamic_sampling import (
    STATE_FILE,
    DynamicSamplingGRPOTrainer,
    DynamicSamplingRLOOTrainer,
    balanced_group_count,
    group_rules,
)
from trl_ext.trainer.dynamic_sampling_config import DynamicSamplingGRPOConfig, DynamicSamplingRLOOConfig
from trl_ext.trainer.prompt_sampler import PromptSampler

TRAINERS = {
    "grpo": (DynamicSamplingGRPOTrainer, DynamicSamplingGRPOConfig, GRPOTrainer, GRPOConfig),
    "rloo": (DynamicSamplingRLOOTrainer, DynamicSamplingRLOOConfig, RLOOTrainer, RLOOConfig),
}
GROUP = 4  # num_generations in these tests
KEPT_CLASSES = {"zero_std": {2}, "all_wrong": {1, 2}, "all_right": {0, 2}}


def prompt_class(answer: str) -> int:
    return int(answer.rsplit("#### ", 1)[1]) % 3


def class_reward(completions, answer, **kwargs):
    """By the gold answer mod 3: 0 for every sample (all wrong), 1 for every sample (all right), or 0/1 alternating
    within the group (never uniform: a group's samples are contiguous and GROUP is even)."""
    return [[0.0, 1.0, float(i % 2)][prompt_class(gold)] for i, gold in enumerate(answer)]


def zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def odd_length_reward(completions, **kwargs):
    """Varies with what the model writes, so that TRL and our trainer must agree on every sample to match."""
    return [float(len(completion[0]["content"]) % 2) for completion in completions]


@pytest.fixture(scope="module")
def dataset():
    return add_prompts(generate_gsm8k_like(30, seed=0), "Solve.")


def make_trainer(kind, model_dir, output_dir, dataset, reward=class_reward, trl=False, **overrides):
    trainer_class, config_class, trl_class, trl_config = TRAINERS[kind]
    values = dict(
        output_dir=str(output_dir), per_device_train_batch_size=4, num_generations=GROUP, max_completion_length=8,
        learning_rate=1e-3, max_steps=3, report_to="none", use_cpu=True, bf16=False, gradient_checkpointing=False,
        logging_steps=1, save_strategy="no", seed=0, disable_tqdm=True,
    ) | overrides  # fmt: skip
    trainer_class, config_class = (trl_class, trl_config) if trl else (trainer_class, config_class)
    return trainer_class(model=str(model_dir), reward_funcs=reward, args=config_class(**values), train_dataset=dataset)


def first_kept(dataset, keep, target: int, per_round: int, max_rounds: int, seed: int = 0) -> tuple[list[int], int]:
    """The spec, on one process: draw `per_round` prompts per round from the seeded shuffle until `target` prompts
    pass `keep` or `max_rounds` rounds ran; returns the first `target` kept prompts and the rounds used."""
    sampler, kept, rounds = PromptSampler(len(dataset), seed), [], 0
    while rounds < max_rounds and len(kept) < target:
        kept += [index for index in sampler.draw(per_round) if keep(index)]
        rounds += 1
    return kept[:target], rounds


def trained_prompts(trainer, output: dict, dataset) -> list[int]:
    """Dataset indices of the groups in a training batch, read back from its prompt token ids."""
    texts = trainer.processing_class.batch_decode(output["prompt_ids"], skip_special_tokens=True)
    questions = {row["question"]: index for index, row in enumerate(dataset)}
    found = [next(i for q, i in questions.items() if q in text) for text in texts]
    assert all(found[g * GROUP : (g + 1) * GROUP] == [found[g * GROUP]] * GROUP for g in range(len(found) // GROUP))
    return found[::GROUP]


def generation_batch(trainer, dataset) -> dict:
    """One call of TRL's generation entry point in training mode, with a dataloader-sized batch."""
    trainer.model.train()
    size = trainer.args.per_device_train_batch_size * trainer.args.steps_per_generation
    rows = [dict(dataset[0]) for _ in range(size)]
    return trainer._generate_and_score_completions(rows)


def test_group_rules_name_exactly_the_uniform_and_the_one_sided_groups():
    nan = float("nan")
    rewards = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # all wrong
            [1.0, 1.0, 1.0, 1.0],  # all right
            [0.0, 1.0, 0.0, 1.0],  # mixed: teaches
            [0.5, 0.5, 0.5, 0.5],  # uniform partial credit: no sample right
            [0.0, 0.2, 0.4, 0.6],  # partial credit that varies: all wrong, yet not uniform
            [nan, 1.0, 1.0, 1.0],  # the scorable samples agree; the unscorable one is not right
            [nan, 0.0, nan, nan],  # one scorable sample: no advantage either
            [nan, 0.0, 1.0, nan],
        ]
    )
    rules = group_rules(rewards, correct_reward=1.0)
    assert rules["zero_std"].tolist() == [True, True, False, True, False, True, True, False]
    assert rules["all_wrong"].tolist() == [True, False, False, True, True, False, True, False]
    assert rules["all_right"].tolist() == [False, True, False, False, False, False, False, False]


@given(st.lists(st.lists(st.sampled_from([0.0, 1.0, None]), min_size=2, max_size=6), min_size=1, max_size=8))
def test_zero_std_is_what_the_scorable_samples_say_and_both_ends_for_a_verifier(groups):
    width = max(len(group) for group in groups)
    padded = [group + [None] * (width - len(group)) for group in groups]
    rewards = torch.tensor([[float("nan") if r is None else r for r in group] for group in padded])
    rules = group_rules(rewards, correct_reward=1.0)
    for index, group in enumerate(padded):
        scorable = [r for r in group if r is not None]
        assert bool(rules["zero_std"][index]) == (len(set(scorable)) <= 1 or len(scorable) < 2)
        if None not in group:  # 0/1 rewards: DAPO's zero-std filter is Reinforce-Rej's "drop both ends"
            assert bool(rules["zero_std"][index]) == bool(rules["all_wrong"][index] | rules["all_right"][index])


@pytest.mark.parametrize(
    ("kept", "target", "quantum", "expected"),
    [([3, 5], 4, 1, 3), ([5, 9], 4, 1, 4), ([7, 9], 8, 2, 6), ([0, 5], 4, 2, 2), ([9, 9], 8, 4, 8)],
)
def test_every_process_trains_on_as_many_groups_as_the_poorest_in_whole_micro_batches(kept, target, quantum, expected):
    assert balanced_group_count(kept, target, quantum) == expected


def test_prompt_sampler_walks_epochs_skips_solved_prompts_and_resumes_where_it_was():
    sampler = PromptSampler(6, seed=3)
    first, second = sampler.draw(6), sampler.draw(6)
    assert sorted(first) == sorted(second) == list(range(6)) and first != second  # each epoch reshuffled
    assert PromptSampler(6, seed=3, shuffle=False).draw(8) == [0, 1, 2, 3, 4, 5, 0, 1]

    skipping = PromptSampler(6, seed=3, skip_solved=True, solved_streak=2)
    skipping.record([0, 1], [1.0, 1.0])
    assert not skipping.solved  # once is not a streak
    skipping.record([0, 1, 1], [1.0, 0.75, 1.0])
    assert skipping.solved == {0}  # prompt 1's last two: 0.75, 1.0
    saved = skipping.state_dict()
    draws = skipping.draw(12)
    assert 0 not in draws and skipping.skipped >= 2 and skipping.drawn == 12  # 12 draws: at least 2 epochs

    restored = PromptSampler(6, seed=3, skip_solved=True, solved_streak=2)
    restored.load_state_dict(json.loads(json.dumps(saved)))
    assert restored.draw(12) == draws and restored.state_dict() == skipping.state_dict()
    with pytest.raises(ValueError, match="training dataset has 7"):
        PromptSampler(7, seed=3).load_state_dict(saved)

    every = PromptSampler(3, seed=0, skip_solved=True, solved_streak=1)
    every.record([0, 1, 2], [1.0, 1.0, 1.0])
    assert sorted(every.draw(3)) == [0, 1, 2]  # all solved: draw them all rather than none


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
@pytest.mark.parametrize("group_filter", ["zero_std", "all_wrong", "all_right"])
def test_a_batch_holds_the_first_groups_the_filter_keeps(kind, group_filter, tiny_model_dir, dataset, tmp_path):
    trainer = make_trainer(
        kind, tiny_model_dir, tmp_path, dataset, dynamic_sampling=True, group_filter=group_filter,
        max_generation_rounds=10, gradient_accumulation_steps=2,
    )  # fmt: skip
    output = generation_batch(trainer, dataset)
    keep = lambda index: prompt_class(dataset[index]["answer"]) in KEPT_CLASSES[group_filter]  # noqa: E731
    expected, rounds = first_kept(dataset, keep, target=2, per_round=2, max_rounds=10)
    assert len(expected) == 2 and rounds > 1  # the seed makes the first round come short: a refill happened
    assert trained_prompts(trainer, output, dataset) == expected
    stats = trainer.dynamic_sampling_stats
    assert stats.rounds == rounds and stats.groups_generated == 2 * rounds and stats.groups_trained == 2
    drawn = PromptSampler(len(dataset), 0).draw(2 * rounds)
    classes = [prompt_class(dataset[i]["answer"]) for i in drawn]
    assert stats.groups_matching == {"zero_std": classes.count(0) + classes.count(1), "all_wrong": classes.count(0),
                                     "all_right": classes.count(1)}  # fmt: skip
    assert stats.groups_dropped == sum(c not in KEPT_CLASSES[group_filter] for c in classes)
    metrics = trainer._metrics["train"]
    assert metrics["dynamic_sampling/rounds"] == [rounds] and metrics["dynamic_sampling/bound_reached"] == [0.0]
    assert metrics["dynamic_sampling/frac_dropped"] == [stats.groups_dropped / (2 * rounds)]


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_refill_stops_at_the_bound_and_trains_on_what_there_is(kind, tiny_model_dir, dataset, tmp_path):
    # Nothing is ever kept: three rounds, then one group per process (one sample per micro-batch), not an empty batch
    trainer = make_trainer(
        kind, tiny_model_dir, tmp_path, dataset, reward=zero_reward, dynamic_sampling=True, max_generation_rounds=3,
        gradient_accumulation_steps=4, steps_per_generation=4, per_device_train_batch_size=2,
    )  # fmt: skip
    generations = count_generations(trainer)
    output = generation_batch(trainer, dataset)
    assert output["completion_ids"].shape[0] == GROUP and generations.completions == 3 * 2 * GROUP
    stats = trainer.dynamic_sampling_stats
    assert stats.rounds == 3 and stats.bound_reached == 1 and stats.groups_filled == 1
    assert trainer._metrics["train"]["dynamic_sampling/bound_reached"] == [1.0]

    # Some kept but fewer than a batch: the bound ends the refill and the batch trains on those kept
    trainer = make_trainer(
        kind, tiny_model_dir, tmp_path, dataset, dynamic_sampling=True, max_generation_rounds=2,
        per_device_train_batch_size=16,
    )  # fmt: skip
    output = generation_batch(trainer, dataset)
    keep = lambda index: prompt_class(dataset[index]["answer"]) == 2  # noqa: E731
    expected, _ = first_kept(dataset, keep, target=4, per_round=4, max_rounds=2)
    assert 0 < len(expected) < 4 and trained_prompts(trainer, output, dataset) == expected
    assert trainer.dynamic_sampling_stats.bound_reached == 1 and trainer.dynamic_sampling_stats.groups_filled == 0


class MicroBatchSizes(TrainerCallback):
    """The size of every micro-batch the loss sees, and each optimizer step's."""

    def __init__(self, trainer):
        self.sizes, self.steps, compute_loss = [], 0, trainer._compute_loss

        def recorded(model, inputs):
            self.sizes.append(inputs["completion_ids"].shape[0])
            return compute_loss(model, inputs)

        trainer._compute_loss = recorded

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_gradient_accumulation_over_several_micro_batches_per_generation(kind, tiny_model_dir, dataset, tmp_path):
    # One generation batch (2 groups of 4) feeds 2 optimizer steps of 2 accumulated micro-batches each
    trainer = make_trainer(
        kind, tiny_model_dir, tmp_path, dataset, dynamic_sampling=True, max_generation_rounds=2,
        per_device_train_batch_size=2, gradient_accumulation_steps=2, steps_per_generation=4, max_steps=4,
    )  # fmt: skip
    recorder = MicroBatchSizes(trainer)
    trainer.add_callback(recorder)
    output = trainer.train()
    stats = trainer.dynamic_sampling_stats
    assert output.global_step == recorder.steps == 4 and stats.generation_batches == 2
    generations = [recorder.sizes[:4], recorder.sizes[4:]]  # each generation batch: 4 micro-batches, alike
    assert len(recorder.sizes) == 8 and all(len(set(sizes)) == 1 for sizes in generations)
    assert sum(recorder.sizes) == stats.completions_trained and 0 < stats.completions_trained <= 2 * 2 * GROUP


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_with_the_options_off_training_is_trl_bit_for_bit(kind, tiny_model_dir, dataset, tmp_path):
    runs = {}
    for label, trl in (("trl", True), ("ours", False)):
        trainer = make_trainer(
            kind, tiny_model_dir, tmp_path / label, dataset, reward=odd_length_reward, trl=trl,
            gradient_accumulation_steps=2, max_completion_length=12,
        )  # fmt: skip
        trainer.train()
        runs[label] = (
            [entry.get("loss") for entry in trainer.state.log_history],
            {name: parameter.detach().clone() for name, parameter in trainer.model.named_parameters()},
        )
    (trl_losses, trl_weights), (our_losses, our_weights) = runs["trl"], runs["ours"]
    assert our_losses == trl_losses
    assert trl_weights.keys() == our_weights.keys()
    assert all(torch.equal(trl_weights[name], our_weights[name]) for name in trl_weights)
    initial = make_trainer(kind, tiny_model_dir, tmp_path / "init", dataset, trl=True).model.state_dict()
    assert any(not torch.equal(initial[name], trl_weights[name]) for name in trl_weights)  # training moved them


def test_peft_adapters_train_with_dynamic_sampling(tiny_model_dir, dataset, tmp_path):
    from peft import LoraConfig

    trainer_class, config_class, _, _ = TRAINERS["grpo"]
    args = config_class(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=GROUP, max_completion_length=8,
        learning_rate=1e-2, max_steps=2, report_to="none", use_cpu=True, bf16=False, gradient_checkpointing=False,
        save_strategy="no", disable_tqdm=True, dynamic_sampling=True, max_generation_rounds=6,
    )  # fmt: skip
    trainer = trainer_class(
        model=str(tiny_model_dir), reward_funcs=class_reward, args=args, train_dataset=dataset,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )  # fmt: skip
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [name for name in before if "lora_B" in name]
    assert lora and all(not torch.equal(before[name], after[name]) for name in lora)
    assert all(torch.equal(before[name], after[name]) for name in before if "lora_" not in name)
    assert trainer.dynamic_sampling_stats.groups_dropped > 0


class TokensAtStepEnd(TrainerCallback):
    def __init__(self, count):
        self.count, self.tokens = count, []

    def on_step_end(self, args, state, control, **kwargs):
        self.tokens.append(self.count.tokens)


def test_the_vllm_path_and_a_token_budget_count_every_generated_token_dropped_or_kept(
    tiny_model_dir, dataset, tmp_path
):
    from trl_ext.run.progress import Budget, ProgressCallback

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    completion = tokenizer("#### 7", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    trainer = make_trainer(
        "grpo", tiny_model_dir, tmp_path, dataset, dynamic_sampling=True, max_generation_rounds=4, max_steps=50,
        per_device_train_batch_size=8, vllm_importance_sampling_correction=True,
    )  # fmt: skip
    trainer.use_vllm, trainer.vllm_generation = True, FakeVLLM(completion)  # TRL's vLLM path, without vLLM
    trainer._last_loaded_step = -1
    trainer.model.generate = lambda *args, **kwargs: pytest.fail("generation went around vLLM")
    budget = 60 * 8 * len(completion)  # 60 rounds' worth of completions, of which about a third are kept
    progress = ProgressCallback(trainer=trainer, score=lambda: 0.0, budget=Budget(tokens=budget))
    trainer.add_callback(progress)
    progress.start()
    per_step = TokensAtStepEnd(trainer.generation_count)
    trainer.add_callback(per_step)
    output = trainer.train()
    summary = progress.finish()
    stats = trainer.dynamic_sampling_stats
    assert summary["budget_exhausted"] and output.global_step < 50
    assert summary["generated_tokens"] == trainer.generation_count.tokens == stats.tokens_generated
    assert stats.tokens_generated == stats.rounds * 2 * GROUP * len(completion)
    assert stats.tokens_trained == stats.completions_trained * len(completion) < stats.tokens_generated
    assert stats.groups_dropped > 0
    assert per_step.tokens[-2] < budget <= per_step.tokens[-1]  # the step that spent it was the last
    assert trainer.vllm_generation.calls == stats.rounds > output.global_step  # refills went through vLLM
    assert trainer.vllm_generation.syncs == output.global_step  # weights synced once per step, not per round
    recorded = json.loads((tmp_path / "progress.json").read_text())["sampling_steps"]  # one entry per step
    assert [entry["step"] for entry in recorded] == list(range(1, output.global_step + 1))
    assert {k: v for k, v in recorded[-1].items() if k not in ("step", "seconds")} == asdict(stats)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_resume_restores_the_prompt_samplers_state(kind, tiny_model_dir, tmp_path):
    dataset = add_prompts(generate_gsm8k_like(6, seed=0), "Solve.")  # a small set: the second epoch starts at step 3
    options = dict(skip_solved_prompts=True, solved_streak=1, save_strategy="steps", save_steps=2, max_steps=4)
    options |= dict(per_device_train_batch_size=8)  # two groups per step

    def run(output_dir, resume=None, drop_state=False):
        trainer = make_trainer(kind, tiny_model_dir, output_dir, dataset, **options)
        draws, draw = [], trainer.prompt_sampler.draw
        trainer.prompt_sampler.draw = lambda count: draws.append(draw(count)) or draws[-1]
        if drop_state:
            (resume / STATE_FILE).unlink()
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        return trainer, draws

    whole, whole_draws = run(tmp_path / "whole")
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    saved = json.loads((checkpoint / STATE_FILE).read_text())
    assert saved["sampler"]["drawn"] == 2 * 2 and saved["sampler"]["history"]  # two steps of two prompts each
    resumed, resumed_draws = run(tmp_path / "resumed", resume=checkpoint)
    assert resumed_draws == whole_draws[2:] and resumed.prompt_sampler.skipped > saved["sampler"]["skipped"]
    assert resumed.prompt_sampler.state_dict() == whole.prompt_sampler.state_dict()
    assert resumed.dynamic_sampling_stats == whole.dynamic_sampling_stats

    fresh, fresh_draws = run(tmp_path / "fresh", resume=tmp_path / "whole" / "checkpoint-2", drop_state=True)
    assert fresh_draws != whole_draws[2:]  # without the saved state the sampler starts over: the state is what matters


def test_bad_options_fail_with_what_to_fix(tiny_model_dir, dataset, tmp_path):
    with pytest.raises(ValueError, match="group_filter must be one of zero_std, all_wrong, all_right"):
        DynamicSamplingGRPOConfig(output_dir=str(tmp_path), group_filter="uniform", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="max_generation_rounds must be at least 1 .got 0."):
        DynamicSamplingRLOOConfig(output_dir=str(tmp_path), max_generation_rounds=0, use_cpu=True, bf16=False)
    with pytest.raises(TypeError, match="takes a DynamicSamplingGRPOConfig"):
        args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
        DynamicSamplingGRPOTrainer(model=str(tiny_model_dir), reward_funcs=class_reward, args=args)
    with pytest.raises(ValueError, match="map-style train_dataset"):
        make_trainer("grpo", tiny_model_dir, tmp_path, dataset.to_iterable_dataset(), dynamic_sampling=True)


def test_the_recipes_take_the_options_and_show_where_they_came_from(tmp_path):
    from trl_ext.run import resolve_settings

    flags = ["--dynamic_sampling", "--group_filter", "all_wrong", "--max_generation_rounds", "3"]
    flags += ["--skip_solved_prompts", "--output_dir", str(tmp_path), "--report_to", "none"]
    for method, config_class in (("grpo", DynamicSamplingGRPOConfig), ("rloo", DynamicSamplingRLOOConfig)):
        settings = resolve_settings(method, config_class, argv=flags)
        args = settings.training
        assert isinstance(args, config_class)
        assert (args.dynamic_sampling, args.group_filter, args.max_generation_rounds) == (True, "all_wrong", 3)
        assert args.skip_solved_prompts and math.isclose(args.oversample_factor, 1.0)
        record = settings.record()
        assert record["group_filter"] == {"value": "all_wrong", "source": "command line"}
        assert record["dynamic_sampling"]["source"] == "command line" and "oversample_factor" not in record


@pytest.mark.parametrize("recipe", ["grpo_gsm8k.py", "rloo_gsm8k.py"])
def test_the_recipes_document_the_options_and_print_them_with_their_sources(recipe, tiny_model_dir, tmp_path):
    from recipe_runs import launch_recipe

    shown = launch_recipe(recipe, ["--help"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-3000:]
    for flag in ("--dynamic_sampling", "--group_filter", "--max_generation_rounds", "--skip_solved_prompts"):
        assert flag in shown.stdout
    assert "{zero_std,all_wrong,all_right}" in shown.stdout and "DAPO" in shown.stdout

    config = tmp_path / "run.yaml"
    config.write_text("max_generation_rounds: 6\n")
    args = ["--model_name_or_path", str(tiny_model_dir), "--config", str(config), "--dynamic_sampling"]
    args += ["--group_filter", "all_wrong", "--output_dir", str(tmp_path / "run"), "--report_to", "none"]
    printed = launch_recipe(recipe, [*args, "--print_config"], cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-3000:]
    assert re.search(r"^  dynamic_sampling +true  \[command line\]$", printed.stdout, re.M)
    assert re.search(r'^  group_filter +"all_wrong"  \[command line\]$', printed.stdout, re.M)
    assert re.search(rf"^  max_generation_rounds +6  \[YAML {re.escape(str(config))}\]$", printed.stdout, re.M)

    refused = launch_recipe(recipe, [*args, "--max_generation_rounds", "0"], cwd=tmp_path)
    assert refused.returncode != 0  # the recipe exits 2; accelerate's launcher reports that as its own failure
    assert "error: Invalid DynamicSampling" in refused.stderr
    assert "max_generation_rounds must be at least 1 (got 0). (settings: max_generation_rounds from command line)" in (
        refused.stderr
    )
