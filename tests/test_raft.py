"""RAFTTrainer: configuration checks, sampling and scoring, the cycle loop, its artifacts and resume."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_ext import RAFTConfig, RAFTTrainer
from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.trainer.generation import generate_completions, generate_samples
from trl_ext.trainer.sampling import SampleSet, score

NAN = float("nan")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The embedded default model (built once per cache): it finishes most answers within 48 tokens."""
    from trl_ext.data.embedded import embedded_model_path

    return embedded_model_path()


def read_parquet(path: Path) -> dict[str, list]:
    return pq.read_table(path).to_pydict()


def prompts(rows: int = 16) -> Dataset:
    return add_prompts(generate_gsm8k_like(rows, seed=3), system_prompt="Solve.")


def length_reward(completions, answer, **kwargs):
    """Deterministic, varied, and needs the `answer` column: enough to exercise selection without a good model."""
    assert len(answer) == len(completions)
    return [float(len(c[0]["content"]) % 7) for c in completions]


def config(output_dir, **overrides) -> RAFTConfig:
    values = dict(
        output_dir=str(output_dir),
        num_cycles=2,
        prompts_per_cycle=4,
        num_generations=4,
        max_completion_length=48,
        generation_batch_size=16,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
    )
    return RAFTConfig(**values | overrides)


def trainer_for(model_dir, output_dir, reward=length_reward, dataset=None, **overrides) -> RAFTTrainer:
    return RAFTTrainer(
        model=str(model_dir),
        reward_funcs=reward,
        args=config(output_dir, **overrides),
        train_dataset=dataset if dataset is not None else prompts(),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )


def test_config_names_every_bad_setting_and_what_to_do(tmp_path):
    with pytest.raises(ValueError) as error:
        RAFTConfig(
            output_dir=str(tmp_path),
            bf16=False,
            temperature=0.0,
            generation_batch_size=10,
            selection="threshold",
            top_fraction=1.5,
            save_strategy="steps",
        )
    message = str(error.value)
    for expected in (
        "temperature must be positive",
        "generation_batch_size (10) must be a positive multiple of num_generations (8)",
        "selection='threshold' needs reward_threshold",
        "top_fraction must be in (0, 1]",
        "save_strategy must be 'no' (got 'steps')",
    ):
        assert expected in message


def test_trainer_rejects_bad_inputs_before_loading_a_model(tmp_path):
    args = config(tmp_path)
    with pytest.raises(ValueError, match="'prompt' column"):
        RAFTTrainer("no/such-model", length_reward, args, train_dataset=Dataset.from_dict({"question": ["q"] * 8}))
    with pytest.raises(ValueError, match="prompts_per_cycle \\(4\\) exceeds the 2 prompts"):
        RAFTTrainer("no/such-model", length_reward, args, train_dataset=prompts(2))
    with pytest.raises(ValueError, match="reward_weights has 2 values for 1"):
        RAFTTrainer("no/such-model", length_reward, config(tmp_path, reward_weights=[1, 2]), train_dataset=prompts())
    with pytest.raises(TypeError, match="Reward models are not supported"):
        RAFTTrainer("no/such-model", torch.nn.Linear(2, 1), args, train_dataset=prompts())


def synthetic_samples() -> SampleSet:
    return SampleSet(
        num_samples=2,
        prompt_rows=[5, 9],
        prompt_ids=[[1, 2], [3]],
        completion_ids=[[7, 0], [8], [9, 9, 0], []],
        completions=["#### 1", "x", "#### 3", ""],
        truncated=np.array([[False, True], [False, True]]),
    )


def test_sample_sets_round_trip_through_parquet_with_rewards_and_extras(tmp_path):
    samples = synthetic_samples()
    samples.reward_names = ["a", "b"]
    samples.rewards_per_func = np.array([[[1.0, NAN], [0.0, 0.5]], [[NAN, NAN], [2.0, 1.0]]])
    samples.extras = {"note": ["p", "q", "r", "s"]}

    assert samples.rewards([1.0, 2.0]).tolist()[0] == [1.0, 1.0]  # None (NaN) is left out of the sum
    assert np.isnan(samples.rewards([1.0, 2.0])[1, 0])  # no function scored it
    samples.save(tmp_path / "s.parquet", weights=[1.0, 2.0])
    loaded = SampleSet.load(tmp_path / "s.parquet")

    assert loaded.prompt_rows == [5, 9] and loaded.prompt_ids == [[1, 2], [3]]
    assert loaded.completion_ids == samples.completion_ids and loaded.completions == samples.completions
    assert loaded.truncated.tolist() == samples.truncated.tolist() and loaded.extras == samples.extras
    np.testing.assert_array_equal(loaded.rewards_per_func, samples.rewards_per_func)
    assert loaded.lengths.tolist() == [[2, 1], [3, 0]]
    assert [p.name for p in tmp_path.iterdir()] == ["s.parquet"]  # no temporary file left behind
    joined = SampleSet.concat([loaded.slice(0, 1), loaded.slice(1, 2)])
    assert joined.completion_ids == loaded.completion_ids and joined.rewards_per_func.shape == (2, 2, 2)


def test_score_calls_reward_functions_as_trl_does():
    samples = synthetic_samples()
    rows = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": "one"}], [{"role": "user", "content": "two"}]],
            "answer": ["#### 1", "#### 3"],
        }
    )
    seen = {}

    def exact(completions, prompts, completion_ids, answer, trainer_state, log_extra, log_metric, **kwargs):
        seen.update(prompts=prompts, ids=completion_ids, answer=answer, state=trainer_state)
        log_extra("checked", [True] * len(completions))
        log_metric("calls", 1.0)
        return [1.0 if c[0]["content"] == a else None for c, a in zip(completions, answer, strict=True)]

    async def halves(completions, **kwargs):
        await asyncio.sleep(0)
        return [0.5] * len(completions)

    scored, logged = score(samples, rows, [exact, halves], batch_size=2, reward_kwargs={"trainer_state": "S"})

    assert scored.reward_names == ["exact", "halves"]
    assert scored.rewards_per_func[..., 0].tolist()[0][0] == 1.0 and np.isnan(scored.rewards_per_func[0, 1, 0])
    assert scored.rewards_per_func[..., 1].tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert seen["answer"] == ["#### 3", "#### 3"] and seen["ids"] == [[9, 9, 0], []]  # the last batch of 2
    assert seen["prompts"][0] == [{"role": "user", "content": "two"}] and seen["state"] == "S"
    assert scored.extras == {"checked": [True] * 4} and logged == {"calls": 1.0}
    with pytest.raises(ValueError, match="returned 1 rewards for 4 completions"):
        score(samples, rows, [lambda completions, **kw: [1.0]])


def test_generated_samples_carry_the_exact_token_ids(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = prompts(6)
    torch.manual_seed(0)
    generations = generate_samples(
        model, tokenizer, dataset["prompt"], 10, batch_size=4, num_samples=3, temperature=1.0
    )

    assert len(generations) == 6
    for generation, prompt in zip(generations, dataset["prompt"], strict=True):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        assert generation.prompt_ids == tokenizer(text, add_special_tokens=False)["input_ids"]  # no left padding
        for ids, completion, truncated in zip(
            generation.completion_ids, generation.texts, generation.truncated, strict=True
        ):
            assert truncated == (tokenizer.eos_token_id not in ids)
            assert len(ids) == 10 if truncated else ids.index(tokenizer.eos_token_id) == len(ids) - 1
            assert tokenizer.decode(ids, skip_special_tokens=True) == completion
    greedy_texts, lengths = generate_completions(model, tokenizer, dataset["prompt"], 10, batch_size=4)
    assert [len(t) for t in greedy_texts] == [1] * 6 and all(0 < n[0] <= 10 for n in lengths)


def test_cycles_train_on_the_selected_samples_exact_tokens_and_leave_every_artifact(model_dir, tmp_path):
    trainer = trainer_for(model_dir, tmp_path)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}

    output = trainer.train()

    state = json.loads((tmp_path / "raft_state.json").read_text())
    assert state["completed_cycles"] == 2 and len(state["cycles"]) == 2 and output.global_step == state["sft_steps"]
    for cycle in (1, 2):
        directory = tmp_path / f"checkpoint-{cycle}"
        assert sorted(p.name for p in directory.iterdir()) == [
            "metrics.json",
            "model",
            "samples.parquet",
            "selected.parquet",
        ]
        metrics = json.loads((directory / "metrics.json").read_text())
        assert metrics == state["cycles"][cycle - 1] and metrics["raft/cycle"] == cycle
        samples = SampleSet.load(directory / "samples.parquet")
        assert samples.num_prompts == 4 and samples.num_samples == 4 and samples.reward_names == ["length_reward"]
        assert metrics["raft/generated_tokens"] == samples.lengths.sum()
    models = {cycle: AutoModelForCausalLM.from_pretrained(tmp_path / f"checkpoint-{cycle}/model") for cycle in (1, 2)}
    saved = {cycle: dict(model.named_parameters()) for cycle, model in models.items()}
    final = dict(trainer.model.named_parameters())
    assert all(torch.equal(saved[2][name], final[name].detach()) for name in final)  # the last cycle saves the policy
    for earlier, later in ((before, saved[1]), (saved[1], saved[2])):  # and each cycle's SFT phase moved it
        assert any(not torch.equal(earlier[name], later[name]) for name in final)
    first = SampleSet.load(tmp_path / "checkpoint-1/samples.parquet").prompt_rows
    second = SampleSet.load(tmp_path / "checkpoint-2/samples.parquet").prompt_rows
    assert not set(first) & set(second)  # a cycle draws prompts the previous cycle did not use

    # The last SFT phase trained on exactly the selected samples: sampled ids, loss on the completion only.
    selected = read_parquet(tmp_path / "checkpoint-2/selected.parquet")
    assert len(selected["sample"]) == metrics["raft/accepted_samples"] == 4  # best of K: one per prompt
    expected = sorted(
        (p + c, [-100] * len(p) + c) for p, c in zip(selected["prompt_ids"], selected["completion_ids"], strict=True)
    )
    trained = sorted(zip(trainer.train_dataset["input_ids"], trainer.train_dataset["labels"], strict=True))
    assert trained == expected
    final = load_file(tmp_path / "checkpoint-2/model/model.safetensors")
    assert any(not torch.equal(before[name], final[name]) for name in final if name in before)


def test_best_of_k_selection_is_the_per_prompt_maximum(model_dir, tmp_path):
    trainer_for(model_dir, tmp_path, num_cycles=1, num_train_epochs=0.01).train()
    samples = SampleSet.load(tmp_path / "checkpoint-1/samples.parquet")
    selected = read_parquet(tmp_path / "checkpoint-1/selected.parquet")
    best = samples.rewards().max(axis=1)
    assert sorted(selected["reward"]) == sorted(best.tolist())
    assert not any(selected["truncated"])


@pytest.mark.slow
def test_a_finished_run_is_never_overwritten_and_resume_extends_it(model_dir, tmp_path):
    trainer_for(model_dir, tmp_path, num_cycles=1).train()
    first = json.loads((tmp_path / "raft_state.json").read_text())
    weights = load_file(tmp_path / "checkpoint-1/model/model.safetensors")

    with pytest.raises(ValueError, match="already holds a RAFT run .*nothing was overwritten"):
        trainer_for(model_dir, tmp_path, num_cycles=2).train()
    with pytest.raises(ValueError, match="prompts_per_cycle 4 -> 8"):
        trainer_for(model_dir, tmp_path, num_cycles=2, prompts_per_cycle=8).train(resume_from_checkpoint=True)

    resumed = trainer_for(model_dir, tmp_path, num_cycles=2)
    loaded = []
    original = resumed._load_from_checkpoint
    resumed._load_from_checkpoint = lambda path: (loaded.append(path), original(path))
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))

    assert loaded == [str(tmp_path / "checkpoint-1" / "model")]
    state = json.loads((tmp_path / "raft_state.json").read_text())
    assert state["completed_cycles"] == 2 and state["cycles"][0] == first["cycles"][0]
    assert load_file(tmp_path / "checkpoint-1/model/model.safetensors").keys() == weights.keys()


def test_lora_cycles_save_and_resume_the_adapter(model_dir, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = RAFTTrainer(
        model=str(model_dir),
        reward_funcs=length_reward,
        args=config(tmp_path, num_cycles=1),
        train_dataset=prompts(),
        peft_config=lora,
    )
    trainer.train()
    adapter = tmp_path / "checkpoint-1/model"
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "model.safetensors").exists()
    saved = load_file(adapter / "adapter_model.safetensors")

    resumed = RAFTTrainer(
        model=str(model_dir),
        reward_funcs=length_reward,
        args=config(tmp_path, num_cycles=2),
        train_dataset=prompts(),
        peft_config=lora,
    )
    resumed.rounds.start_or_resume(True)
    state = {name.replace(".default", ""): p for name, p in resumed.model.named_parameters() if "lora_" in name}
    assert state and all(torch.equal(state[name].detach(), saved[name]) for name in saved)


@pytest.mark.slow
def test_per_cycle_metrics_reach_wandb_with_steps_counted_across_cycles(model_dir, tmp_path, monkeypatch):
    import wandb

    from trl_ext.run.wandb_offline import latest_offline_run, read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    trainer = trainer_for(model_dir, tmp_path / "run", report_to="wandb", logging_steps=1, num_train_epochs=2)
    trainer.train()
    wandb.finish()

    history = read_offline_run(latest_offline_run(tmp_path)).history
    cycles = [row for row in history if "train/raft/acceptance_rate" in row]
    assert [row["train/raft/cycle"] for row in cycles] == [1, 2]
    assert all(f"train/raft/{key}" in cycles[0] for key in ("pass@4", "sft_loss", "time/generate", "accepted_tokens"))
    steps = [row["train/global_step"] for row in history if "train/loss" in row]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # the second SFT phase continues the count
    assert cycles[-1]["train/global_step"] == trainer.state.global_step + cycles[0]["train/global_step"]


def test_by_default_raft_never_fine_tunes_on_a_rejected_sample(model_dir, tmp_path):
    """best_of_k without min_reward: prompts whose samples the verifier all rejected (0.0) give no training sample."""

    def verdict(completions, **kwargs):  # odd lengths "pass"; every sample of the first prompt fails
        return [0.0 if i < 4 else float(len(c[0]["content"]) % 2) for i, c in enumerate(completions)]

    trainer = trainer_for(model_dir, tmp_path / "run", reward=verdict, num_cycles=1, drop_duplicates=False)
    assert trainer.args.min_reward is None and trainer.args.selection_floor > trainer.args.worst_reward == 0.0
    trainer.train()
    samples = SampleSet.load(tmp_path / "run" / "checkpoint-1" / "samples.parquet")
    selected = read_parquet(tmp_path / "run" / "checkpoint-1" / "selected.parquet")
    assert selected["reward"] and min(selected["reward"]) > 0.0  # only samples the verifier accepted
    prompts_with_a_pass = int((np.nan_to_num(samples.rewards()) > 0).any(axis=1).sum())
    assert len(selected["reward"]) == prompts_with_a_pass  # best of K among passing samples, none elsewhere
    assert 0 not in selected["prompt_index"]
