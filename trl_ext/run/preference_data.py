"""An existing preference dataset for the DPO recipe: `--preference_dataset` and friends, checked before any model
loads. Unset, DPO rounds label pairs sampled from the policy with a verifier (`trl_ext.trainer.preference_pairs`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from trl_ext.run.arguments import RecipeArguments, RecipeError, option


def load_preference_dataset(name: str, config: str | None = None, split: str = "train") -> Dataset:
    """A preference dataset (`prompt`/`chosen`/`rejected`) from the hub, a local JSON/JSONL/parquet/CSV file or a
    dataset directory; checked for its columns, before any model loads.

    The `prompt` column may be left out when `chosen` and `rejected` hold whole conversations that start alike (TRL
    extracts the shared start as the prompt).
    """
    from datasets import load_dataset

    from trl_ext.data.loading import LOCAL_SUFFIXES, _load_local

    path = Path(name).expanduser()
    if (path.suffix.lower() in LOCAL_SUFFIXES or name.startswith((".", "/", "~"))) and not path.exists():
        raise FileNotFoundError(f"Preference dataset {path} does not exist; check --preference_dataset.")
    splits = _load_local(path) if path.is_file() else load_dataset(str(path) if path.is_dir() else name, name=config)
    if path.is_file():
        split = "train"  # a single file is one split
    if split not in splits:
        raise ValueError(
            f"Preference dataset {name} has splits {sorted(splits)}; expected '{split}' (--preference_split)."
        )
    dataset = splits[split]
    missing = [column for column in ("chosen", "rejected") if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Preference dataset {name} has columns {dataset.column_names}; expected {missing} (TRL's preference "
            "format: 'prompt', 'chosen', 'rejected', as text or chat messages)."
        )
    if len(dataset) == 0:
        raise ValueError(f"Preference dataset {name} has no rows in split '{split}'.")
    return dataset


@dataclass
class PreferenceDataArguments(RecipeArguments):
    """Recipe arguments for DPO: those of every recipe, plus an optional existing preference dataset."""

    preference_dataset: str | None = option(
        None,
        "Existing preference pairs (prompt/chosen/rejected) to train on offline: a hub id or a JSON/JSONL/"
        "parquet/CSV file. Unset: the verifier labels pairs sampled from the policy, round after round.",
    )
    preference_dataset_config: str | None = option(None, "Hub configuration of --preference_dataset.")
    preference_split: str = option("train", "Split of --preference_dataset to train on.")


def load_preference_data(script_args: PreferenceDataArguments) -> Dataset | None:
    """`--preference_dataset`, checked, or None when unset; a recipe calls it before any model loads."""
    if script_args.preference_dataset is None:
        return None
    try:
        return load_preference_dataset(
            script_args.preference_dataset, script_args.preference_dataset_config, script_args.preference_split
        )
    except (FileNotFoundError, ValueError) as error:
        raise RecipeError(str(error)) from error
