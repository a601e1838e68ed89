"""Does GRPO on the embedded default really learn? Held-out accuracy before/after for several seeds.

    python bench/grpo_embedded_seeds.py                 # seeds 42 (the default), 1, 2
    python bench/grpo_embedded_seeds.py --seeds 3 4 -- --max_steps 80

Each seed runs `accelerate launch recipes/grpo_gsm8k.py` exactly as a user would (extra recipe flags after `--`),
and its `eval_results.json` is read back. Prints a Markdown table: before, after, gain (points) and wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_seed(method: str, seed: int, extra: list[str], workdir: Path) -> dict:
    output_dir = workdir / f"{method}-s{seed}"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        str(REPO / "recipes" / f"{method}_gsm8k.py"),
        "--seed",
        str(seed),
        "--output_dir",
        str(output_dir),
        "--report_to",
        "none",
        *extra,
    ]
    started = time.time()
    subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    results = json.loads((output_dir / "eval_results.json").read_text())
    return {**results, "wall_seconds": time.time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="grpo", help="recipe: recipes/<method>_gsm8k.py")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("extra", nargs="*", help="flags passed to the recipe (after --)")
    args = parser.parse_args()
    print(f"| {args.method} seed | before | after | gain (points) | wall (s) |\n|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            result = run_seed(args.method, seed, args.extra, Path(workdir))
            before, after = result["eval/before/accuracy"], result["eval/after/accuracy"]
            print(
                f"| {seed} | {100 * before:.1f}% | {100 * after:.1f}% | {100 * (after - before):+.1f} "
                f"| {result['wall_seconds']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
