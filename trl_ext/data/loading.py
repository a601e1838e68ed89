"""Task data: GSM8K-format problems (hub, local files, or a seeded generator), code tasks, and prompts.

Every row keeps `question` and `answer` (a rationale ending in `#### N`): the reward functions read the gold from
`answer`, so the loader never drops it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict

DEFAULT_SYSTEM_PROMPT = (
    "Solve the math problem step by step. Write the final answer as a number on the last line, "
    "in the form '#### <number>'."
)
HUB_GSM8K = "openai/gsm8k"
EMBEDDED_CODE_TASKS = Path(__file__).parent / "tasks" / "code_tasks.jsonl"
COMPRESSED_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}
LOCAL_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}

_NAMES = ["Mia", "Tom", "Ava", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eli", "Amy", "Ben", "Kim", "Dan", "Sue"]
_ITEMS = ["apples", "books", "coins", "pens", "cards", "shells", "stamps", "eggs", "marbles", "cookies"]
_GAIN = ["buys {n} more", "finds {n} more", "gets {n} more", "is given {n} more"]
_LOSS = ["gives away {n}", "loses {n}", "sells {n}", "uses {n}"]
_TIMES = ["doubles them", "triples them"]
DIFFICULTY_LEVELS = {1: (1, 10), 2: (2, 10), 3: (3, 20), 4: (4, 50)}  # difficulty -> (steps, largest number)


@dataclass(frozen=True)
class WordProblem:
    question: str
    answer: str
    value: int


def generate_problem(rng: random.Random, difficulty: int = 2) -> WordProblem:
    """One word problem with its step-by-step rationale; `difficulty` (1-4) sets the steps and number range.

    Results never go negative, so every step is an addition, subtraction or small multiplication that a small
    model can learn to write out.
    """
    if difficulty not in DIFFICULTY_LEVELS:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTY_LEVELS)}, got {difficulty}")
    num_steps, limit = DIFFICULTY_LEVELS[difficulty]
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    value = rng.randint(2, limit)
    sentences = [f"{name} has {value} {item}."]
    steps = []
    for _ in range(num_steps):
        choice = rng.random()
        if choice < 0.12 and value <= 10:
            factor = 2 if rng.random() < 0.7 else 3
            sentences.append(f"Then {name} {_TIMES[factor - 2]}.")
            steps.append(f"{value}*{factor}={value * factor}")
            value *= factor
        elif choice < 0.56 or value < 2:
            amount = rng.randint(1, limit)
            sentences.append(f"Then {name} {rng.choice(_GAIN).format(n=amount)}.")
            steps.append(f"{value}+{amount}={value + amount}")
            value += amount
        else:
            amount = rng.randint(1, value - 1)
            sentences.append(f"Then {name} {rng.choice(_LOSS).format(n=amount)}.")
            steps.append(f"{value}-{amount}={value - amount}")
            value -= amount
    sentences.append(f"How many {item} does {name} have now?")
    return WordProblem(" ".join(sentences), "\n".join(steps) + f"\n#### {value}", value)


def generate_gsm8k_like(num_rows: int, seed: int = 0, difficulty: int = 2) -> Dataset:
    """`num_rows` seeded word problems with GSM8K's columns (`question`, `answer`)."""
    rng = random.Random(f"trl-ext-gsm8k-{seed}-{difficulty}")
    problems = [generate_problem(rng, difficulty) for _ in range(num_rows)]
    return Dataset.from_dict({"question": [p.question for p in problems], "answer": [p.answer for p in problems]})


def generated_splits(num_train: int = 4000, num_test: int = 500, difficulty: int = 2) -> DatasetDict:
    """Train and test splits drawn from different seeds; test questions that also occur in train are removed."""
    train = generate_gsm8k_like(num_train, seed=0, difficulty=difficulty)
    test = generate_gsm8k_like(num_test * 2, seed=1, difficulty=difficulty)
    seen = set(train["question"])
    test = test.filter(lambda row: row["question"] not in seen).select(range(num_test))
    return DatasetDict(train=train, test=test)


def _data_suffix(path: Path) -> str:
    """`.jsonl` for `x.jsonl` and `x.jsonl.gz` alike (datasets decompresses by itself)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    return suffixes[-2] if len(suffixes) > 1 and suffixes[-1] in COMPRESSED_SUFFIXES else path.suffix.lower()


def _load_local(path: Path) -> DatasetDict:
    from datasets import load_dataset

    builder = LOCAL_SUFFIXES.get(_data_suffix(path))
    if builder is None:
        raise ValueError(f"Dataset file {path} has an unsupported type; use one of {sorted(LOCAL_SUFFIXES)}.")
    return load_dataset(builder, data_files={"train": str(path)})


def load_splits(dataset_name: str, dataset_config: str | None = None) -> DatasetDict:
    """Splits from a local JSON/JSONL/parquet/CSV file, a local dataset directory, or the hub.

    A path that looks local but does not exist fails here, with the path, before anything is downloaded.
    """
    from datasets import load_dataset

    path = Path(dataset_name).expanduser()
    looks_local = _data_suffix(path) in LOCAL_SUFFIXES or dataset_name.startswith((".", "/", "~"))
    if looks_local and not path.exists():
        raise FileNotFoundError(f"Dataset file {path} does not exist; check --dataset_name.")
    if path.is_file():
        return _load_local(path)
    if path.is_dir():
        return load_dataset(str(path), name=dataset_config)
    return load_dataset(dataset_name, name=dataset_config or ("main" if dataset_name == HUB_GSM8K else None))


def load_gsm8k(
    dataset_name: str | None,
    dataset_config: str | None = None,
    question_column: str = "question",
    answer_column: str = "answer",
    difficulty: int = 2,
) -> DatasetDict:
    """GSM8K-format splits from the hub (`openai/gsm8k`), a local JSON/JSONL/parquet/CSV file, or the generator.

    `dataset_name=None` selects the generator. Columns are renamed to `question`/`answer`; a missing file or
    column raises before any model loads.
    """
    if dataset_name is None:
        return generated_splits(difficulty=difficulty)
    splits = load_splits(dataset_name, dataset_config)
    return DatasetDict(
        {name: _gsm8k_columns(split, dataset_name, question_column, answer_column) for name, split in splits.items()}
    )


def load_code_tasks(dataset_name: str | None, dataset_config: str | None = None) -> DatasetDict:
    """Code tasks in MBPP format (`text` or `prompt`, `test_list`) or HumanEval format (`prompt`, `test`,
    `entry_point`), from the hub, a local file, or (None) the project's own small task set.

    Adds a `question` column (the problem as the model sees it) and keeps the columns `rewards.code_reward` reads.
    """
    splits = load_splits(str(EMBEDDED_CODE_TASKS) if dataset_name is None else dataset_name, dataset_config)
    return DatasetDict(
        {name: _code_columns(split, dataset_name or "the embedded code tasks") for name, split in splits.items()}
    )


def _code_columns(split: Dataset, source: str) -> Dataset:
    columns = set(split.column_names)
    if {"prompt", "test", "entry_point"} <= columns:  # HumanEval: complete the function; check() may use its helpers
        return split.map(
            lambda row: {
                "question": f"Complete this Python function.\n```python\n{row['prompt']}```",
                "test_setup_code": row["prompt"],
            }
        )
    if "test_list" in columns and columns & {"text", "prompt"}:  # MBPP (full: text; sanitized: prompt)
        text_column = "text" if "text" in columns else "prompt"
        return split.map(
            lambda row: {"question": f"{row[text_column]}\nYour code should pass this test:\n{row['test_list'][0]}"}
        )
    raise ValueError(
        f"Dataset {source} has columns {split.column_names}; expected MBPP columns (text or prompt, test_list) "
        "or HumanEval columns (prompt, test, entry_point)."
    )


def _gsm8k_columns(split: Dataset, source: str, question_column: str, answer_column: str) -> Dataset:
    missing = [column for column in (question_column, answer_column) if column not in split.column_names]
    if missing:
        raise ValueError(
            f"Dataset {source} has columns {split.column_names}; expected {missing} "
            "(set --question_column / --answer_column)."
        )
    renames = {old: new for old, new in ((question_column, "question"), (answer_column, "answer")) if old != new}
    return split.rename_columns(renames) if renames else split


def add_prompts(dataset: Dataset, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> Dataset:
    """Add a conversational `prompt` column (system + user messages); TRL applies the chat template."""

    def to_prompt(row: dict) -> dict:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return {"prompt": messages + [{"role": "user", "content": row["question"]}]}

    return dataset.map(to_prompt)


def split_train_test(
    splits: DatasetDict, test_size: int, train_split: str = "train", test_split: str = "test", seed: int = 0
) -> tuple[Dataset, Dataset]:
    """The train and held-out splits; a dataset without `test_split` gets a seeded hold-out of `test_size` rows."""
    if train_split not in splits:
        raise ValueError(f"The dataset has splits {sorted(splits)}; expected '{train_split}' (--dataset_train_split).")
    if test_split in splits:
        return splits[train_split], splits[test_split]
    if len(splits[train_split]) < 2 * test_size:
        raise ValueError(
            f"The dataset has {len(splits[train_split])} rows and no '{test_split}' split; need at least "
            f"{2 * test_size} to hold out {test_size} evaluation problems (lower --eval_num_problems)."
        )
    parts = splits[train_split].train_test_split(test_size=test_size, seed=seed)
    return parts["train"], parts["test"]
