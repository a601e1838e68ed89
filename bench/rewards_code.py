"""Code reward: agreement with plain Python on the benign set, the rate of one GRPO-sized reward call, and
throughput per workload with every sandbox layer on and with each layer taken off; prints figures.

    python bench/rewards_code.py [--workers N] [--scale 0.5] [--layers full,no-jail] [--skip-agreement]

Agreement: every case of tests/data/code_benign.py scored in the sandbox and by the unsandboxed reference
(tests/code_reference.py); the count that agree, and each that does not. One call: 64 distinct trivial Python
completions passed to `code_reward` in one call, as a GRPO step does (median of 5 calls, fresh completions each).

Every sample is distinct (no cache hits) and must score 1.0, so a layer that breaks scoring shows up as an error,
not as a fast row. Each cell also reports the CPU time per sample of this process, the workers and their runs
(kernel threads, such as network-namespace cleanup, are not in it; clock ticks, so +-10 ms over the whole cell),
which does not depend on what else the machine is doing: cores / that time bounds the rate on an idle machine.
The load average is printed with the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.code import make_code_reward, submit_score  # noqa: E402
from rewards.sandbox import Isolation, Limits, Sandbox, default_workers, python_executable  # noqa: E402

TESTS = Path(__file__).resolve().parents[1] / "tests"

LAYERS = {
    "full": Isolation(),
    "no per-run netns": Isolation(sample_network=False),
    "no per-run namespaces": Isolation(sample_namespaces=False, sample_network=False),
    "no rlimits": Isolation(rlimits=False),
    "no jail": Isolation(jail=False),
    "fork-server only": Isolation(jail=False, sample_namespaces=False, sample_network=False),
}
PRIMES = """
def is_prime(n):
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n ** 0.5) + 1))  # {i}
"""
SQUARE_CHECK = """
def check(candidate):
    assert candidate(2) == 4
    assert candidate(-3) == 9
    assert candidate(0) == 0
"""
SUM_C = (
    '#include <stdio.h>\nint main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\\n", a + b); }  // {i}\n'
)
SUM_CPP = "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }  // {i}\n"
SUM_TESTS = [
    {"input": "1 2\n", "output": "3\n"},
    {"input": "40 2\n", "output": "42\n"},
    {"input": "-1 1", "output": "0"},
]
# name: (samples at --scale 1, code template, tests, language, extra score arguments)
WORKLOADS = {
    "trivial Python": (800, "def f(x):\n    return x + 1  # {i}\n", ["assert f(1) == 2"], "python", {}),
    "Python, 5 asserts": (400, PRIMES, [f"assert is_prime({n}) == {p}" for n, p in
                                        ((2, True), (9, False), (97, True), (1, False), (7919, True))], "python", {}),
    "HumanEval check()": (300, "def square(x):\n    return x * x  # {i}\n", SQUARE_CHECK, "python",
                          {"entry_point": "square", "setup_code": "def square(x):\n    pass\n"}),
    "C, 3 stdin tests": (40, SUM_C, SUM_TESTS, "c", {}),
    "C++, 3 stdin tests": (8, SUM_CPP, SUM_TESTS, "cpp", {}),
}  # fmt: skip
LIMITS = Limits(timeout=5.0)
serial = count()


def measure(layer: Isolation, workers: int, workload: str, scale: float) -> tuple[float, float]:
    """(samples/s, CPU ms per sample) for one workload on a fresh sandbox with the given layers."""
    samples, template, tests, language, extra = WORKLOADS[workload]
    samples = max(2, int(samples * scale))
    warm = min(samples, 2 * workers)
    sandbox = Sandbox(workers, layer, allow_unsandboxed=True).start()

    def batch(size: int) -> list:
        futures = [submit_score(template.replace("{i}", str(next(serial))), tests, language, limits=LIMITS,
                                sandbox=sandbox, **extra) for _ in range(size)]  # fmt: skip
        return [future.result() for future in futures]

    try:
        batch(warm)  # first forks, compiler caches
        cpu_before = _cpu_seconds(sandbox)
        started = time.perf_counter()
        scores = batch(samples)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(sandbox) - cpu_before
    finally:
        sandbox.close()
    if scores != [1.0] * samples:
        raise RuntimeError(f"{workload}: expected every sample to score 1.0, got {sorted(set(map(str, scores)))}")
    return samples / elapsed, cpu / samples * 1000


def _cpu_seconds(sandbox: Sandbox) -> float:
    """CPU time of this process and of every worker process tree, each with the children it has reaped."""
    return time.process_time() + sum(_tree_cpu_seconds(pid) for pid in sandbox.worker_pids())


def _tree_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]  # fmt: skip
    except OSError:  # gone in the meantime
        return 0.0
    own = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return own + sum(_tree_cpu_seconds(child) for child in children)


def spawn_per_sample(workers: int, scale: float) -> float:
    """Reference without an executor: a fresh `python -I -S` per trivial sample (rlimits only, no isolation)."""
    samples = max(2, int(WORKLOADS["trivial Python"][0] * scale / 2))
    program = "def f(x):\n    return x + 1\nassert f(1) == 2\n"
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        codes = list(pool.map(lambda _: subprocess.run([python_executable(), "-I", "-S", "-c", program]).returncode,
                              range(samples)))  # fmt: skip
    if any(codes):
        raise RuntimeError("spawned samples failed")
    return samples / (time.perf_counter() - started)


def one_call_rate(workers: int, completions: int = 64, calls: int = 5) -> float:
    """Samples/s of `code_reward` called once on `completions` distinct trivial completions (median over calls)."""
    sandbox = Sandbox(workers).start()
    reward = make_code_reward(limits=LIMITS, sandbox=sandbox)
    rates = []
    try:
        for _ in range(calls + 1):  # the first call warms the workers up
            batch = [f"```python\ndef f(x):\n    return x + 1  # {next(serial)}\n```" for _ in range(completions)]
            started = time.perf_counter()
            rewards = reward(batch, tests=[["assert f(1) == 2"]] * completions)
            rates.append(completions / (time.perf_counter() - started))
            if rewards != [1.0] * completions:
                raise RuntimeError(
                    f"one call: expected every sample to score 1.0, got {sorted(set(map(str, rewards)))}"
                )
    finally:
        sandbox.close()
    return sorted(rates[1:])[calls // 2]


def agreement(workers: int) -> tuple[int, dict[str, tuple]]:
    """(cases, {name: (sandbox, reference)} for each benign case on which the two disagree)."""
    sys.path.insert(0, str(TESTS))
    from code_reference import reference_score

    spec = importlib.util.spec_from_file_location("code_benign", TESTS / "data" / "code_benign.py")
    benign = importlib.util.module_from_spec(spec)
    sys.modules["code_benign"] = benign
    spec.loader.exec_module(benign)
    sandbox = Sandbox(workers).start()
    try:
        futures = [submit_score(case.code, case.tests, case.language, entry_point=case.entry_point,
                                setup_code=case.setup, limits=LIMITS, sandbox=sandbox)
                   for case in benign.CASES]  # fmt: skip
        sandboxed = [future.result() for future in futures]
    finally:
        sandbox.close()
    with ThreadPoolExecutor(workers) as pool:
        reference = list(pool.map(reference_score, benign.CASES))
    pairs = zip(benign.CASES, sandboxed, reference, strict=True)
    return len(benign.CASES), {case.name: (mine, theirs) for case, mine, theirs in pairs if mine != theirs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of samples per cell")
    parser.add_argument("--layers", default=",".join(LAYERS), help=f"comma-separated, of: {', '.join(LAYERS)}")
    parser.add_argument("--skip-agreement", action="store_true", help="leave out the benign-set agreement check")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the rows without a layer log a loud unsandboxed warning each
    layers = [name.strip() for name in arguments.layers.split(",")]
    unknown = set(layers) - set(LAYERS)
    if unknown:
        parser.error(f"unknown layers {sorted(unknown)}; choose from {list(LAYERS)}")

    load_before = os.getloadavg()
    if not arguments.skip_agreement:
        cases, disagreements = agreement(arguments.workers)
        print(f"\nBenign set: {cases - len(disagreements)}/{cases} cases score what plain Python gives them")
        for name, (mine, theirs) in disagreements.items():
            print(f"  DISAGREES {name}: sandbox {mine}, plain Python {theirs}")
    rate = one_call_rate(arguments.workers)
    print(f"One code_reward call on 64 distinct trivial Python completions: {rate:.0f} samples/s "
          f"({arguments.workers} workers)")  # fmt: skip
    rows = {name: {workload: measure(LAYERS[name], arguments.workers, workload, arguments.scale)
                   for workload in WORKLOADS} for name in layers}  # fmt: skip
    spawn_rate = spawn_per_sample(arguments.workers, arguments.scale)
    load_after = os.getloadavg()

    width = max(len(name) for name in [*layers, "python -I -S per sample"]) + 2
    print(
        f"\nCode reward throughput: samples/s (CPU ms per sample), {arguments.workers} workers, {os.cpu_count()} CPUs"
    )
    print("layers".ljust(width) + "".join(workload.rjust(22) for workload in WORKLOADS))
    for name, cells in rows.items():
        print(name.ljust(width) + "".join(f"{rate:>14.1f} ({cpu:4.1f})" for rate, cpu in cells.values()))
    print("python -I -S per sample".ljust(width) + f"{spawn_rate:>14.1f}" + "  (reference: no executor, no isolation)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
