"""The unsandboxed reference for the code reward: what plain Python (and plain gcc/g++) make of a case.

No jail, no limits beyond a generous timeout, a fresh `python3` (with its site module, as a user would run it) per
case in a temporary directory:

- assert lists: the candidate is imported as a module (setup code first), then each assert runs in that module's
  namespace, in order, in one process (MBPP's harness); a test passes if it raises nothing;
- HumanEval `check(candidate)`: prompt, completion and test in one namespace, then `check(entry_point)` (HumanEval's
  own harness); one test;
- stdin/stdout: `python3 main.py` / the gcc or g++ binary (same flags as the reward) per input; a pass needs exit
  status 0 and `rewards.code.stdout_matches` (the comparison rule is the reward's policy, shared on purpose: what this
  reference checks is that the sandbox changes no outcome).

It is a test helper: it runs model-style code with the tester's privileges, so only the cases of this repository.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from rewards.code import NATIVE, stdout_matches
from rewards.sandbox import python_executable

TIMEOUT_S = 60  # seconds per process; past it, the remaining tests of the case fail

DRIVER = r"""
import json, sys, types
spec = json.load(open(sys.argv[1]))
module = types.ModuleType("solution")
sys.modules["solution"] = module
namespace = module.__dict__
results = []
try:
    exec(compile(spec["setup"] + "\n" + spec["code"], "solution.py", "exec"), namespace)
except BaseException:
    results = [False] * len(spec["tests"])
else:
    for test in spec["tests"]:
        try:
            exec(compile(test, "test.py", "exec"), namespace)
            results.append(True)
        except BaseException:
            results.append(False)
with open(sys.argv[2], "w") as out:
    json.dump(results, out)
"""


def _python_tests(case) -> list[str]:
    """The statements to run after the candidate: asserts one by one, or a HumanEval check as one test."""
    if isinstance(case.tests, str) and case.entry_point and "def check(" in case.tests:
        return [f"{case.tests}\ncheck({case.entry_point})"]
    if isinstance(case.tests, str):
        return [line for line in case.tests.splitlines() if line.strip()]
    return list(case.tests)


def _run_functions(case, directory: Path) -> float:
    tests = _python_tests(case)
    (directory / "spec.json").write_text(json.dumps({"setup": case.setup, "code": case.code, "tests": tests}))
    (directory / "driver.py").write_text(DRIVER)
    subprocess.run([python_executable(), "driver.py", "spec.json", "results.json"], cwd=directory,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=TIMEOUT_S, check=False)  # fmt: skip
    results_file = directory / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    return sum(results) / len(tests)


def _program(case, directory: Path) -> list[str] | None:
    """The command that runs the case's program, compiling it first where it is C or C++ (None: it did not compile)."""
    if case.language == "python":
        (directory / "main.py").write_text(case.code)
        return [python_executable(), "main.py"]
    toolchain = NATIVE[case.language]
    (directory / toolchain.source_name).write_text(case.code)
    compiler = [toolchain.compiler, *toolchain.flags, "-o", "prog", toolchain.source_name, *toolchain.libraries]
    compiled = subprocess.run(compiler, cwd=directory, capture_output=True, timeout=TIMEOUT_S, check=False)
    return ["./prog"] if compiled.returncode == 0 else None


def _run_stdio(case, directory: Path) -> float:
    command = _program(case, directory)
    if command is None:
        return 0.0
    passed = 0
    for test in case.tests:
        run = subprocess.run(command, cwd=directory, input=test["input"].encode(), capture_output=True,
                             timeout=TIMEOUT_S, check=False)  # fmt: skip
        passed += run.returncode == 0 and stdout_matches(run.stdout.decode(errors="replace"), test["output"])
    return passed / len(case.tests)


def reference_score(case) -> float:
    """The case's score under plain Python / gcc / g++ (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="code-reference-") as name:
        directory = Path(name)
        stdio = isinstance(case.tests, list) and all(isinstance(test, dict) for test in case.tests)
        return _run_stdio(case, directory) if stdio else _run_functions(case, directory)
