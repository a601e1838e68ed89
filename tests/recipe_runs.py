"""How the end-to-end tests run a recipe: `accelerate launch` on one CPU process, as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch_recipe(
    recipe: str, args: list[str], env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """Run `recipes/<recipe>` with `args`; `env` replaces the environment when given. Output is captured."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
    command += [str(REPO / "recipes" / recipe), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
