from transformers import AutoModelForCausalLM, AutoTokenizer

from rewards import math_answer_reward
from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.run.evaluation import evaluate


def test_accuracy_is_the_reward_of_the_greedy_completions(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = add_prompts(generate_gsm8k_like(24, seed=5), system_prompt="Solve.")
    result = evaluate(model, tokenizer, dataset, max_new_tokens=24, batch_size=10)
    assert result.num_problems == 24 and len(result.completions) == 24
    rescored = math_answer_reward(result.completions, answer=dataset["answer"])
    assert result.accuracy == sum(rescored) / 24
    again = evaluate(model, tokenizer, dataset, max_new_tokens=24, batch_size=7)
    assert again.completions == result.completions  # greedy and batch-independent (left padding)
    assert 0 < result.mean_completion_tokens <= 24


def test_sampling_gives_pass_at_k_at_least_pass_at_1(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = add_prompts(generate_gsm8k_like(16, seed=6, difficulty=1), system_prompt="Solve.")
    result = evaluate(model, tokenizer, dataset, max_new_tokens=16, num_samples=4, temperature=1.0)
    assert result.num_samples == 4 and result.pass_at_k >= result.accuracy
    assert result.as_metrics("eval/x")["eval/x/pass@4"] == result.pass_at_k


def test_evaluation_calls_rewards_as_training_does_trl_accuracy_reward_and_async(tiny_model_dir):
    """Conversational completions for conversational prompts, dataset columns as keywords, async rewards awaited."""
    from reward_helpers import async_answer_reward
    from trl.rewards import accuracy_reward

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = add_prompts(generate_gsm8k_like(12, seed=5), system_prompt="Solve.")
    dataset = dataset.add_column("solution", [answer.rsplit("#### ", 1)[1] for answer in dataset["answer"]])
    seen = {}

    def conversational_only(completions, solution, trainer_state=None, **kwargs):
        seen["completion"], seen["state"] = completions[0], trainer_state
        return accuracy_reward(completions, solution, **kwargs)  # indexes completion[0]["content"]

    result = evaluate(model, tokenizer, dataset, reward_func=conversational_only, max_new_tokens=24, reward_kwargs={
        "trainer_state": "state"})  # fmt: skip
    assert seen["completion"] == [{"role": "assistant", "content": result.completions[0]}] and seen["state"] == "state"
    conversational = [[{"role": "assistant", "content": text}] for text in result.completions]
    expected = [r or 0.0 for r in accuracy_reward(conversational, dataset["solution"])]
    assert result.accuracy == sum(expected) / 12
    awaited = evaluate(model, tokenizer, dataset, reward_func=async_answer_reward, max_new_tokens=24)
    assert awaited.accuracy == sum(math_answer_reward(conversational, answer=dataset["answer"])) / 12
