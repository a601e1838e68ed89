"""Correct programs score what plain Python gives them: the benign set against the unsandboxed reference, and a test
for each cause of a false negative (or of a false positive) the code reward once had."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from code_reference import reference_score

from rewards.code import CallTests, OracleTests, plan_tests, score, submit_score
from rewards.sandbox import Limits, Sandbox

DATA = Path(__file__).parent / "data"
LIMITS = Limits(timeout=5.0)


def _load_benign():
    spec = importlib.util.spec_from_file_location("code_benign", DATA / "code_benign.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["code_benign"] = module  # dataclasses looks the module up
    spec.loader.exec_module(module)
    return module


benign = _load_benign()
BY_NAME = {case.name: case for case in benign.CASES}


pytestmark = pytest.mark.usefixtures("fresh_code_cache")


def sandbox_scores(cases, box) -> list[float | None]:
    futures = [submit_score(case.code, case.tests, case.language, entry_point=case.entry_point, setup_code=case.setup,
                            limits=LIMITS, sandbox=box) for case in cases]  # fmt: skip
    return [future.result() for future in futures]


def test_the_benign_set_covers_every_kind():
    kinds = {case.kind for case in benign.CASES}
    assert kinds == {"humaneval", "humaneval+", "mbpp", "values", "objects", "python semantics", "stdio"}
    assert {case.language for case in benign.CASES} == {"python", "c", "cpp"}
    assert len(benign.CASES) >= 150 and len(BY_NAME) == len(benign.CASES)


@pytest.mark.slow
def test_every_benign_case_scores_what_plain_python_gives_it(sandbox):
    """The acceptance check: agreement with the unsandboxed reference on every benign case (right and wrong)."""
    sandboxed = sandbox_scores(benign.CASES, sandbox)
    with ThreadPoolExecutor(2) as pool:
        reference = list(pool.map(reference_score, benign.CASES))
    pairs = zip(benign.CASES, sandboxed, reference, strict=True)
    disagreements = {case.name: (mine, theirs) for case, mine, theirs in pairs if mine != theirs}
    assert disagreements == {}
    assert sum(value == 1.0 for value in reference) >= 130  # mostly correct programs
    assert sum(value < 1.0 for value in reference) >= 20  # and wrong ones, which must stay wrong


# Each cause of a false negative the issue lists, with the benign cases that show it fixed: each scores 1.0 under
# plain Python and must in the sandbox.
CAUSES = {
    "collections results": ["counter", "ordered-dict", "defaultdict", "deque", "namedtuple"],
    "fractions and decimals": ["fraction", "decimal"],
    "dates": ["dates"],
    "ranges and dictionary views": ["range", "dict-views"],
    "iterators and generators": ["iterators", "generator-result"],
    "byte arrays": ["bytearray"],
    "ints over 4,300 digits": ["ints-over-4300-digits", "mbpp-big-int"],
    "results over 1 MiB": ["result-over-1-mib"],
    "in-place mutation of arguments": [
        "mutates-list-in-place",
        "mutates-dict-and-nested",
        "mutates-deque-and-counter",
        "mutation-keeps-identity",
    ],
    "expected exception types": ["expected-exception-type", "assert-raises-unittest", "custom-exception-from-setup"],
    "class entry points": ["class-entry-point", "leetcode-solution-class", "candidate-object-attributes"],
    "generator entry points": ["generator-entry-point", "generator-send"],
    "callables passed in": ["callable-argument", "key-function", "iterator-argument"],
    "trusted helper objects": ["listnode-reverse", "listnode-cycle", "listnode-long", "dataclass-argument-and-result"],
    "dataclasses in candidate code": ["dataclass-in-candidate", "dataclass-with-future-annotations"],
    "exit() and quit()": ["exit-in-stdio"],
    "threads and atexit": ["thread-prints-after-main", "atexit-prints"],
    "stdout over 1 MiB": ["stdout-over-1-mib", "c-large-output"],
}


@pytest.mark.parametrize("cause", CAUSES)
def test_each_false_negative_cause_is_gone(cause, sandbox):
    cases = [BY_NAME[name] for name in CAUSES[cause]]
    assert sandbox_scores(cases, sandbox) == [1.0] * len(cases)
    assert [reference_score(case) for case in cases] == [1.0] * len(cases)


def test_candidate_code_does_not_inherit_future_flags(sandbox):
    """An undefined name in an annotation fails at definition in plain Python; it did pass under the worker's own
    `from __future__ import annotations`. A candidate that asks for the flag itself still gets it."""
    cases = [BY_NAME["undefined-name-in-annotation"], BY_NAME["string-annotations-by-choice"]]
    assert sandbox_scores(cases, sandbox) == [0.0, 1.0]
    assert [reference_score(case) for case in cases] == [0.0, 1.0]
    check = "def check(candidate):\n    assert candidate(1) == 1\n"
    assert score("def f(x: Undefined):\n    return x\n", check, entry_point="f", sandbox=sandbox) == 0.0


def test_a_result_over_the_size_cap_fails_only_its_own_test(sandbox, caplog):
    limits = dataclasses.replace(LIMITS, max_output=64 << 10)
    code = "def big():\n    return 'x' * (1 << 20)\ndef small():\n    return 2\n"
    with caplog.at_level(logging.WARNING, logger="rewards.code"):
        assert score(code, ["assert len(big()) == 1 << 20", "assert small() == 2"], limits=limits,
                     sandbox=sandbox) == 0.5  # fmt: skip
        check = "def check(candidate):\n    assert len(candidate()) == 1 << 20\n"
        assert score(code, check, entry_point="big", limits=limits, sandbox=sandbox) == 0.0
        assert score(code, "def check(candidate):\n    assert candidate() == 2\n", entry_point="small",
                     limits=limits, sandbox=sandbox) == 1.0  # fmt: skip
    assert caplog.text.count("over Limits.max_output") == 2  # said, not silently wrong


def test_stdout_over_the_cap_fails_and_says_so(sandbox, caplog):
    limits = dataclasses.replace(LIMITS, max_output=64 << 10)
    program = "print('x' * 100000)\n"
    with caplog.at_level(logging.WARNING, logger="rewards.code"):
        assert score(program, [{"input": "", "output": "x"}], limits=limits, sandbox=sandbox) == 0.0
    assert "printed more than Limits.max_output" in caplog.text
    with pytest.raises(ValueError, match="raise Limits.max_output"):  # a test no program could pass
        score(program, [{"input": "", "output": "x" * 100000}], limits=limits, sandbox=sandbox)


def test_a_compile_over_the_file_size_limit_scores_0_with_the_reason_logged(sandbox, caplog):
    """A huge initialised static array makes a gigabyte binary: the compile step has RLIMIT_FSIZE and a size-capped
    scratch, so such a program scores 0, and the log says why."""
    program = '#include <stdio.h>\n#include <unistd.h>\nchar big[1UL << 30] = {1};\nint main(void) { puts("3"); return big[getpid() % 1000] * 0; }\n'  # noqa: E501
    with caplog.at_level(logging.WARNING, logger="rewards.code"):
        assert score(program, [{"input": "", "output": "3"}], "c", limits=LIMITS, sandbox=sandbox) == 0.0
    assert "over Limits.file_size" in caplog.text
    small = program.replace("1UL << 30", "1 << 20")
    assert score(small, [{"input": "", "output": "3"}], "c", limits=LIMITS, sandbox=sandbox) == 1.0


def test_asserts_go_where_plain_python_semantics_survive():
    """Split asserts compare on the trusted side; parts Python may skip, dict displays and non-value results go
    through the oracle instead, so side effects and short-circuits happen exactly as in plain Python."""
    assert isinstance(plan_tests(["assert f(1) == 2", "assert g(2) > 1"]), CallTests)
    for test in ["assert f(1) == 1 or f(2) == 2", "assert (f(1) if c else f(2)) == 1", "assert 0 < f(1) < f(2)",
                 "assert {f(1): f(2)} == {}"]:  # fmt: skip
        assert isinstance(plan_tests([test]), OracleTests), test
    split = plan_tests(["assert f(1) == 1 or True", "assert 0 < f(1) < 3"])
    assert isinstance(split, CallTests) and split.expressions == ("f(1)", "f(1)")


def test_a_non_value_result_reruns_the_sample_through_the_oracle(sandbox):
    code = "class Box:\n    def __init__(self, v):\n        self.v = v\ndef make(v):\n    return Box(v)\n"
    assert score(code, ["assert make(3).v == 3", "assert make(4) is not None", "assert make(1) == make(1)"],
                 sandbox=sandbox) == pytest.approx(2 / 3)  # fmt: skip


def test_importing_rewards_starts_no_process_or_thread():
    """A fresh interpreter: `import rewards` (and building a code reward) starts nothing until the first call."""
    probe = (
        "import os, threading\n"
        "import rewards\n"
        "from rewards.code import make_code_reward\n"
        "make_code_reward()\n"
        "children = open(f'/proc/{os.getpid()}/task/{os.getpid()}/children').read().split()\n"
        "print(threading.active_count(), len(children))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert result.stdout.split() == ["1", "0"]


class KindsSeen(Sandbox):
    def __init__(self):
        super().__init__(workers=1)
        self.kinds: list[str] = []

    def run(self, job, timeout):
        self.kinds.append(job["kind"])
        return super().run(job, timeout)


def test_large_results_are_decoded_in_the_oracle_not_in_the_trainer():
    """The trainer decodes at most TRAINER_DECODE_BYTES of a sample's results; a sample returning more is scored
    again through the oracle, which decodes and compares in its jail."""
    box = KindsSeen()
    try:
        small = ["assert f(10) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]
        assert score("def f(n):\n    return list(range(n))\n", small, sandbox=box) == 1.0
        assert box.kinds == ["python_calls"]
        big = [f"assert len(f({1 << 20})) == {1 << 20}", f"assert f({1 << 20})[-1] == {(1 << 20) - 1}"]
        assert score("def f(n):\n    return list(range(n))\n", big, sandbox=box) == 1.0
        assert box.kinds == ["python_calls", "python_calls", "oracle"]
    finally:
        box.close()
