r"""Accuracy and throughput of `rewards.math_answer_reward` against math-verify, TRL's `accuracy_reward` and a
verl-style `#### N` regex, on (a) GSM8K-style completions built from ../shared/data/gsm8k/test.jsonl (in a clone
without it, the repository's 200-problem slice tests/data/gsm8k/test_head200.jsonl) and (b) the held-out-style
answer-checking corpus tests/data/math_corpus.jsonl (public checkers' test suites, real model outputs,
own category cases; every case names its source).

Every system sees each item once, one call per item, in the main thread (math-verify's and TRL's signal timeouts
need it); throughput is given per wall-clock second and per CPU-second (the latter does not depend on other load).
Our caches are cleared before each dataset and the symbolic worker is started beforehand (its ~1 s start-up is
printed separately); the gold-answer cache still helps, as it does in GRPO, where each prompt has several completions.

    python bench/rewards_math.py [--gsm8k PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
GSM8K_TEST = (
    SHARED_GSM8K_TEST if SHARED_GSM8K_TEST.exists() else ROOT / "tests" / "data" / "gsm8k" / "test_head200.jsonl"
)

CORPUS = ROOT / "tests" / "data" / "math_corpus.jsonl"


def gsm8k_items(path: Path, limit: int | None) -> list[tuple[str, str, str, int]]:
    """(completion, gold rationale, gold number, label): seven completions per problem, two of them wrong."""
    items = []
    with path.open() as lines:
        rows = [json.loads(line) for line in lines][:limit]
    for row in rows:
        body, number = row["answer"].rsplit("####", 1)
        number = number.strip()
        value = int(number.replace(",", ""))
        body = re.sub(r"<<[^>]*>>", "", body).strip()
        variants = [
            (f"{body}\n#### {number}", 1),
            (f"{body}\nThe answer is {number}.", 1),
            (f"{body}\nTherefore, the final answer is ${value:,}.", 1),
            (f"{body}\nSo the answer is $\\boxed{{{number}}}$.", 1),
            (f"<think>\n{body}\n</think>\n<answer>{number}</answer>", 1),
            (f"{body}\n#### {value + 1}", 0),
            (f"{body}\nThe answer is {value * 10}.", 0),
        ]
        items += [(completion, row["answer"], number, label) for completion, label in variants]
    return items


def corpus_items() -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]], list[str]]:
    """The held-out-style corpus (tests/data/math_corpus.jsonl): items for ours (gold as its dataset column holds it),
    items for the baselines (the bare gold: a GSM8K rationale's number after `####`), and each item's column."""
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    ours_items = [(row["completion"], row["gold"], row["label"]) for row in rows]
    bare = [row["gold"].rsplit("####", 1)[1].strip() if row["column"] == "answer" else row["gold"] for row in rows]
    baseline_items = [(row["completion"], gold, row["label"]) for row, gold in zip(rows, bare, strict=True)]
    return ours_items, baseline_items, [row["column"] for row in rows]


def cpu_seconds() -> float:
    """CPU time of this process plus that of the live symbolic workers (they do our LaTeX work), so that checks per
    CPU-second compare fairly with in-process checkers and do not depend on what else the machine runs."""
    from rewards.math import _POOL

    total = time.process_time()
    for worker in _POOL._idle:
        try:
            fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def run(check: Callable[[str, str], float], items: list[tuple[str, str, int]]) -> dict:
    """Scores every item once; exceptions and None count as 0.0."""
    false_negatives = false_positives = 0
    slowest = 0.0
    cpu_start = cpu_seconds()
    start = time.perf_counter()
    for completion, gold, label in items:
        item_start = time.perf_counter()
        try:
            score = check(completion, gold) or 0.0
        except Exception:
            score = 0.0
        slowest = max(slowest, time.perf_counter() - item_start)
        false_negatives += label == 1 and score != 1.0
        false_positives += label == 0 and score == 1.0
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_start
    errors = false_negatives + false_positives
    return {
        "items": len(items),
        "accuracy": 1 - errors / len(items),
        "false_negatives": false_negatives,
        "false_positives": false_positives,
        "per_second": len(items) / elapsed,
        "per_cpu_second": len(items) / max(cpu, 1e-9),
        "slowest_ms": 1000 * slowest,
    }


def ours(reset: Callable[[], None], columns: list[str]) -> Callable[[str, str], float]:
    """Our reward, one call per item, the gold in the item's dataset column (taken in order)."""
    from rewards import math_answer_reward

    reset()
    order = iter(columns)
    return lambda completion, gold: math_answer_reward([completion], **{next(order): [gold]})[0]


def math_verify_check(completion: str, gold: str) -> float:
    from math_verify import parse, verify

    return float(verify(parse(gold), parse(completion)))


def trl_check(completion: str, gold: str) -> float | None:
    from trl.rewards import accuracy_reward

    return accuracy_reward([[{"role": "assistant", "content": completion}]], [gold])[0]


def verl_regex_check(completion: str, gold: str) -> float:
    """verl's GSM8K scorer: the last `#### N`, commas removed, compared as a string."""
    found = re.findall(r"#### (\-?[0-9\.\,]+)", completion)
    if not found:
        return 0.0
    return float(found[-1].replace(",", "").rstrip(".") == gold.replace(",", "").strip("$ "))


def reset_ours() -> None:
    from rewards import math as rewards_math

    rewards_math._value.cache_clear()
    rewards_math._gold_value.cache_clear()
    rewards_math._SYMBOLIC_CACHE.clear()


PATHOLOGICAL = {  # unclosed delimiters and markers repeated: what would make a careless extractor quadratic
    "\\[": 25_000, "\\(": 25_000, "\\boxed{": 7_000, "<answer>": 6_000, "answer is ": 5_000, "$": 50_000,
    "{": 50_000, "#### ": 10_000, "1 000 ": 8_000, "x = ": 10_000, "1 \\pm ": 5_000,
}  # fmt: skip


def pathological_milliseconds(piece: str, repeats: int) -> float:
    """CPU milliseconds of one reward call on `piece` repeated (extraction and the fast path run in this process)."""
    from rewards import math_answer_reward

    start = time.process_time()
    math_answer_reward([piece * repeats], answer=["#### 7"])
    return 1000 * (time.process_time() - start)


def print_pathological() -> None:
    """Linear time: four times the text should cost about four times as much (quadratic work: sixteen)."""
    print(f"\n{'pathological completion':26} {'chars':>7} {'CPU ms':>8} {'4x chars':>9} {'CPU ms':>8} {'ratio':>6}")
    for piece, repeats in PATHOLOGICAL.items():
        single, quadruple = pathological_milliseconds(piece, repeats), pathological_milliseconds(piece, 4 * repeats)
        print(
            f"{repr(piece) + ' repeated':26} {len(piece) * repeats:7d} {single:8.1f} {4 * len(piece) * repeats:9d} "
            f"{quadruple:8.1f} {quadruple / max(single, 1e-3):6.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gsm8k", type=Path, default=GSM8K_TEST, help=f"GSM8K JSONL (default {GSM8K_TEST})")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N GSM8K problems")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # math-verify logs every timeout

    from rewards.math import is_equivalent

    start = time.perf_counter()
    is_equivalent(r"\sqrt{2}", r"\sqrt{2}+0")
    print(f"symbolic worker start-up (once per process): {time.perf_counter() - start:.2f} s")
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())} on {os.cpu_count()} CPUs\n")

    gsm8k = gsm8k_items(args.gsm8k, args.limit)
    datasets = {
        "gsm8k": (
            [(completion, rationale, label) for completion, rationale, _, label in gsm8k],
            [(completion, number, label) for completion, _, number, label in gsm8k],
            ["answer"] * len(gsm8k),
        ),
        "corpus": corpus_items(),
    }
    print(
        f"{'dataset':8} {'system':26} {'items':>6} {'accuracy':>9} {'FN':>5} {'FP':>5} {'checks/s':>10} "
        f"{'per CPU-s':>10} {'max ms':>8}"
    )
    for dataset, (items, baseline_items, columns) in datasets.items():
        systems = [
            ("rewards.math_answer_reward", ours(reset_ours, columns), items),
            ("math-verify 0.9", math_verify_check, baseline_items),
            ("trl accuracy_reward", trl_check, baseline_items),
            ("verl #### regex", verl_regex_check, baseline_items),
        ]
        for name, check, system_items in systems:
            result = run(check, system_items)
            print(
                f"{dataset:8} {name:26} {result['items']:6d} {100 * result['accuracy']:8.1f}% "
                f"{result['false_negatives']:5d} {result['false_positives']:5d} {result['per_second']:10.0f} "
                f"{result['per_cpu_second']:10.0f} {result['slowest_ms']:8.1f}"
            )
    print_pathological()
    print(f"\nload average after: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    print("math-verify, TRL and the regex get the bare gold (`18`, `$\\frac{1}{2}$`); ours gets the GSM8K rationale.")
    print("checks/s: wall clock, one thread; per CPU-s: CPU time, ours including its symbolic worker processes.")


if __name__ == "__main__":
    main()
