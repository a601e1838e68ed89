"""Weights & Biases set-up shared by the recipes: naming, grouping, offline fallback, versions and platform.

transformers 5 defaults to `report_to="none"`, so recipes ask for W&B explicitly. The run is created here, on the
main process, before the trainer exists; TRL's WandbCallback then reuses it (it only calls `wandb.init` when no run
is active), so its metrics land in the same run as our evaluation figures.
"""

from __future__ import annotations

import netrc
import os
import platform as host_platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_PROJECT = "trl-ext"


def wandb_credentials_available() -> bool:
    """True when W&B can log online: an API key in the environment or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def package_versions() -> dict[str, str]:
    versions = {"python": host_platform.python_version()}
    for name in ("trl-ext", "trl", "transformers", "torch", "peft", "accelerate", "datasets", "vllm", "bitsandbytes"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def short_name(name_or_path: str) -> str:
    """`Qwen/Qwen2.5-0.5B-Instruct` -> `Qwen2.5-0.5B-Instruct`; `data/train.jsonl` -> `train`."""
    path = Path(name_or_path.rstrip("/"))
    return path.stem if path.suffix in {".json", ".jsonl", ".parquet", ".csv"} else path.name


def run_name(method: str, model: str, dataset: str, seed: int) -> str:
    return f"{method}-{short_name(model)}-{short_name(dataset)}-s{seed}"


def start_wandb_run(
    method: str,
    model: str,
    dataset: str,
    seed: int | None,
    name: str,
    config: dict,
    tags: list[str],
    project: str | None = None,
    log=print,
):
    """Create the run (offline when there are no credentials, and say so); returns the wandb run."""
    import wandb

    mode = os.environ.get("WANDB_MODE")
    if mode not in {"offline", "disabled"} and not wandb_credentials_available():
        mode = "offline"  # for this run only: the process environment stays as it was
        log("W&B: no credentials found (WANDB_API_KEY or `wandb login`), so this run logs offline.")
    run = wandb.init(
        project=project or os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
        name=name,
        group=f"{method}-{short_name(model)}",
        job_type=method,
        tags=sorted({method, short_name(model), short_name(dataset), *tags}),
        config={**config, "versions": package_versions()} | ({} if seed is None else {"seed": seed}),
        mode=mode,
    )
    if mode == "offline":
        run_dir = Path(run.dir).parent
        log(f"W&B: offline run in {run_dir}; upload it later with `wandb sync {run_dir}`.")
    return run
