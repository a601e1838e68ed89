import json

import pytest

from rewards import math_answer_reward
from trl_ext.data.loading import (
    DIFFICULTY_LEVELS,
    add_prompts,
    generate_gsm8k_like,
    generated_splits,
    load_code_tasks,
    load_gsm8k,
    split_train_test,
)


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTY_LEVELS))
def test_generated_rationales_end_in_the_right_answer(difficulty):
    rows = generate_gsm8k_like(200, seed=3, difficulty=difficulty)
    steps, _ = DIFFICULTY_LEVELS[difficulty]
    for answer in rows["answer"]:
        *lines, final = answer.split("\n")
        assert len(lines) == steps and final.startswith("#### ")
        for line in lines:  # every step is arithmetic that evaluates to what it says
            expression, result = line.split("=")
            assert eval(expression) == int(result)  # noqa: S307 - generated digits and + - * only
        assert int(lines[-1].split("=")[1]) == int(final[5:])
    assert math_answer_reward(rows["answer"], answer=rows["answer"]) == [1.0] * 200


def test_generator_is_seeded():
    assert generate_gsm8k_like(20, seed=1)["question"] == generate_gsm8k_like(20, seed=1)["question"]
    assert generate_gsm8k_like(20, seed=1)["question"] != generate_gsm8k_like(20, seed=2)["question"]
    with pytest.raises(ValueError, match="difficulty"):
        generate_gsm8k_like(1, difficulty=9)


def test_generated_splits_do_not_overlap():
    splits = generated_splits(num_train=500, num_test=100)
    assert len(splits["test"]) == 100
    assert not set(splits["train"]["question"]) & set(splits["test"]["question"])


def test_loads_real_gsm8k_jsonl_and_carves_a_holdout(gsm8k_sample_path):
    splits = load_gsm8k(str(gsm8k_sample_path))
    train, test = split_train_test(splits, test_size=50)
    assert {"question", "answer"} <= set(train.column_names)
    assert len(test) == 50 and len(train) == 200 - 50
    assert not set(train["question"]) & set(test["question"])
    assert "####" in test[0]["answer"]


def test_custom_columns_are_renamed(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"{i}+1?", "gold": f"#### {i + 1}"}) for i in range(5)))
    split = load_gsm8k(str(path), question_column="q", answer_column="gold")["train"]
    assert split.column_names == ["question", "answer"] and split[2]["answer"] == "#### 3"


def test_missing_file_and_wrong_columns_say_what_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        load_gsm8k(str(tmp_path / "nope.jsonl"))
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"problem": "1+1", "solution": "2"}))
    with pytest.raises(ValueError, match=r"columns \['problem', 'solution'\]; expected \['question', 'answer'\]"):
        load_gsm8k(str(path))


def test_too_small_for_a_holdout():
    splits = load_gsm8k(None)
    with pytest.raises(ValueError, match="lower --eval_num_problems"):
        split_train_test({"train": splits["test"]}, test_size=400)


def test_prompts_are_conversational_and_keep_the_gold():
    rows = add_prompts(generate_gsm8k_like(3), system_prompt="Be brief.")
    assert rows[0]["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": rows[0]["question"]},
    ]
    assert "answer" in rows.column_names
    assert add_prompts(generate_gsm8k_like(1), system_prompt="")[0]["prompt"][0]["role"] == "user"


def test_code_tasks_from_humaneval_mbpp_and_the_embedded_set(humaneval_path, tmp_path):
    humaneval = load_code_tasks(str(humaneval_path))["train"]
    assert len(humaneval) == 164
    row = humaneval[0]
    assert row["question"].startswith("Complete this Python function.") and row["prompt"] in row["question"]
    assert row["test_setup_code"] == row["prompt"] and "def check(candidate)" in row["test"]

    embedded = load_code_tasks(None)["train"]
    assert len(embedded) >= 30 and all("Your code should pass this test:\nassert" in q for q in embedded["question"])

    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"question": "add", "tests": ["assert add(1, 1) == 2"]}))
    with pytest.raises(ValueError, match="expected MBPP columns"):
        load_code_tasks(str(path))
