"""`rewards.code`: extraction, test formats, trusted-side grading, HumanEval, C/C++, cache, TRL signatures."""

from __future__ import annotations

import asyncio
import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sandbox_helpers import CountingSandbox

from rewards import code as code_module
from rewards.code import (
    CallTests,
    CompileOnly,
    OracleTests,
    StdioTests,
    extract_code,
    make_code_reward,
    plan_tests,
    score,
    stdout_matches,
    validate_rows,
)
from rewards.sandbox import Limits, Sandbox

HUMANEVAL = Path(__file__).parent / "data" / "humaneval" / "HumanEval.jsonl.gz"  # MIT, licence beside it
LIMITS = Limits(timeout=3.0, compile_timeout=20.0)


pytestmark = pytest.mark.usefixtures("fresh_code_cache")


def run(code, tests, language="python", sandbox=None, **kwargs):
    return score(code, tests, language, limits=LIMITS, sandbox=sandbox, **kwargs)


# ---------------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("Here:\n```python\ndef f(): return 1\n```\nDone.", "python", "def f(): return 1\n"),
        ("```py\na = 1\n```\n```python\na = 2\n```", "python", "a = 2\n"),  # the last block for the language
        ("```bash\nls\n```\n```\nx = 1\n```", "python", "x = 1\n"),  # no tagged block: the untagged one
        ("```python\ndef f():\n    return 1", "python", "def f():\n    return 1"),  # cut off by max length
        ("def f(): return 1", "python", "def f(): return 1"),  # no fence: the whole text
        ("```c\nint main(){}\n```\n```cpp\nint x;\n```", "c++", "int x;\n"),
        ("```C\nint main(){}\n```", "c", "int main(){}\n"),
    ],
)
def test_extract_code(text, language, expected):
    assert extract_code(text, language) == expected


# ---------------------------------------------------------------------------------------------------- plans


def test_plans_for_each_test_format():
    assert plan_tests(None) == CompileOnly() and plan_tests([]) == CompileOnly() and plan_tests("") == CompileOnly()
    calls = plan_tests(["assert add(1, 2) == 3", "assert math.isclose(area(2), 12.56, rel_tol=1e-3)"])
    assert isinstance(calls, CallTests) and calls.expressions == ("add(1, 2)", "area(2)")
    mbpp_string = plan_tests("assert f(1) == 2\nassert set(f([1, 2])) == {1, 2}\n")
    assert isinstance(mbpp_string, CallTests) and len(mbpp_string.checks) == 2
    assert plan_tests([{"input": "1 2\n", "output": "3\n"}], "c") == StdioTests((("1 2\n", "3\n"),))
    check = plan_tests("def check(candidate):\n    assert candidate(1) == 2\n", entry_point="inc")
    assert check == OracleTests("def check(candidate):\n    assert candidate(1) == 2\n", ("check(inc)",), ("inc",))


@pytest.mark.parametrize(
    "test",
    [
        "assert all(f(i) == i for i in range(3))",  # a comparison inside a comprehension
        "assert f(2) == list(range(2))",  # a builtin outside the trusted whitelist
        "assert f(2) * 3 == 6",  # `*` on a candidate value: unbounded cost here
        "assert sorted(f([2, 1]), key=lambda v: -v) == [2, 1]",  # a lambda on the trusted side
        "assert helper(f(1)) == 1",  # a trusted helper around a candidate value
        "assert f('%d') % 3 == '3'",  # `%` formats strings: the width would be the candidate's to choose
        "assert round(1.5, f(1)) == 1.5",  # round(10**4000, -10**9) is slow: the digits stay the dataset's
        "assert sum(f(1), []) == [1]",  # quadratic list concatenation
    ],
)
def test_asserts_that_cannot_be_split_go_to_the_oracle(test):
    plan = plan_tests([test], setup_code="def helper(v):\n    return v\n")
    assert isinstance(plan, OracleTests)
    assert "helper" not in plan.proxies and "f" in plan.proxies


@pytest.mark.parametrize(
    ("tests", "language", "kwargs", "message"),
    [
        (["assert f(1) == 1"], "rust", {}, "unknown language 'rust'"),
        (["assert f(1) == 1"], "c", {}, "c tests must be a list of"),
        (["import math"], "python", {}, "not an assert statement"),
        (["assert f(1 =="], "python", {}, "does not parse"),
        ([42], "python", {}, "must be assert statements"),
        ([{"input": "1"}], "c", {}, "stdin/stdout tests must be"),
        ("def check(candidate):\n    pass\n", "python", {"entry_point": "not a name"}, "entry_point must be"),
        ("def check(candidate):\n    pass\n", "python", {"entry_point": "f", "setup_code": "def ("}, "setup_code"),
    ],
)
def test_bad_tests_say_what_to_fix(tests, language, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_tests(tests, language, **kwargs)


def test_validate_rows_names_the_bad_row():
    rows = [{"tests": ["assert f(1) == 1"]}, {"test": "def check(c):\n    pass\n", "entry_point": "f"},
            {"tests": ["x = 1"], "language": "python"}]  # fmt: skip
    with pytest.raises(ValueError, match="row 2: test is not an assert statement"):
        validate_rows(rows)
    with pytest.raises(ValueError, match="row 0: unknown language"):
        validate_rows([{"tests": None, "language": "cobol"}])


# ---------------------------------------------------------------------------------------------------- grading


ADD = "def add(a, b):\n    return a + b\n"


def test_reward_is_the_fraction_of_tests_passed(sandbox):
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(2, 2) == 5", "assert add('a', 1) == 'a1'"]
    assert run(ADD, tests, sandbox=sandbox) == 0.5


@pytest.mark.parametrize(
    ("code", "test", "expected"),
    [
        ("def f(): return [1, 2]", "assert f() == (1, 2)", 0.0),  # a list is not a tuple
        ("def f(): return (1, 2)", "assert f() == (1, 2)", 1.0),
        ("def f(): return 0.1 + 0.2", "assert f() == 0.3", 0.0),
        ("def f(): return 0.1 + 0.2", "assert math.isclose(f(), 0.3)", 1.0),
        ("def f(): return 0.1 + 0.2", "assert abs(f() - 0.3) < 1e-9", 1.0),
        ("def f(): return {3, 1}", "assert f() == {1, 3}", 1.0),
        ("def f(): return set()", "assert f() == set()", 1.0),
        ("def f(): return [3, 1, 2]", "assert sorted(f()) == [1, 2, 3]", 1.0),
        ("def f(): return float('nan')", "assert f() == float('nan')", 0.0),
        ("def f(): return float('-inf')", "assert f() == -math.inf", 1.0),
        ("def f(): return 1 + 2j", "assert f() == complex(1, 2)", 1.0),
        ("def f(): return b'\\x00'", "assert f() == b'\\x00'", 1.0),
        ("def f(): return {'a': [1]}", "assert f()['a'][0] == 1", 1.0),
        ("def f(): return True", "assert f()", 1.0),
        ("def f(): return 1", "assert f() is True", 0.0),
        ("def f(): return 1", "assert f() == True", 1.0),  # Python semantics, not a stricter invention
        ("def f(): return object()", "assert f() is not None", 1.0),  # not a value: a handle, through the oracle
        ("def f(): return object()", "assert f() == f()", 0.0),  # handles compare by identity
        ("def f(): return 10 ** 4000", "assert f() > 10 ** 3999", 1.0),
        ("def f(): return 10 ** 5000", "assert f() > 10 ** 4999", 1.0),  # past the 4300-digit str() limit
        ("def f(g, x): return g(x)", "assert f(lambda v: v + 1, 1) == 2", 1.0),  # a lambda as an argument
        ("def f(x): return x * 2", "assert all(f(i) == 2 * i for i in range(5))", 1.0),  # through the oracle
        ("def f(x): return x * 2", "assert f(3) * 1 == 6", 1.0),  # through the oracle
        ("def f(): return 1 / 3", "assert round(f(), 2) == 0.33", 1.0),
        ("def f(): return 2", "assert round(0.333, f()) == 0.33", 1.0),  # through the oracle
        ("class S:\n    def go(self, x): return x", "assert S().go(3) == 3", 1.0),
    ],
)
def test_python_semantics_of_the_trusted_comparison(sandbox, code, test, expected):
    assert run(code, [test], sandbox=sandbox) == expected


def test_calls_run_in_order_in_one_process(sandbox):
    code = "calls = []\ndef f(x):\n    calls.append(x)\n    return list(calls)\n"
    assert run(code, ["assert f(1) == [1]", "assert f(2) == [1, 2]"], sandbox=sandbox) == 1.0


def test_an_exception_fails_only_its_own_test(sandbox):
    code = "def f(x):\n    return 10 // x\n"
    assert run(code, ["assert f(0) == 0", "assert f(5) == 2"], sandbox=sandbox) == 0.5


def test_setup_code_and_imports(sandbox):
    code = "def hyp(a, b):\n    return sqrt(a * a + b * b)\n"
    assert run(code, ["assert hyp(3, 4) == 5.0"], sandbox=sandbox, setup_code="from math import sqrt") == 1.0


def test_compile_only_without_tests(sandbox):
    assert run("def f(:\n    pass", None, sandbox=sandbox) == 0.0
    assert run("import sys\nsys.exit(1)\n", None, sandbox=sandbox) == 1.0  # compiled, never run
    assert run("int main(void) { return 0; }", None, "c", sandbox=sandbox) == 1.0
    assert run("int main(void) { return 0 }", None, "c", sandbox=sandbox) == 0.0


def test_python_stdin_stdout(sandbox):
    code = "a, b = map(int, input().split())\nprint(a + b)\n"
    tests = [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4"}, {"input": "1 1\n", "output": "3"}]
    assert run(code, tests, sandbox=sandbox) == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------------- HumanEval


@pytest.fixture(scope="module")
def humaneval():
    with gzip.open(HUMANEVAL, "rt") as handle:
        return [json.loads(line) for line in handle]


def humaneval_scores(rows, solutions, sandbox) -> list[float | None]:
    futures = [
        code_module.submit_score(row["prompt"] + solution, row["test"], entry_point=row["entry_point"],
                                 setup_code=row["prompt"], limits=LIMITS, sandbox=sandbox)
        for row, solution in zip(rows, solutions, strict=True)
    ]  # fmt: skip
    return [future.result() for future in futures]


def test_humaneval_canonical_solutions_score_1(humaneval, sandbox):
    scores = humaneval_scores(humaneval, [row["canonical_solution"] for row in humaneval], sandbox)
    assert len(scores) == 164
    assert {row["task_id"]: value for row, value in zip(humaneval, scores, strict=True) if value != 1.0} == {}


RIGGED_RESULT = """
class _AlwaysEqual:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

_real = {entry_point}

def {entry_point}(*args, **kwargs):
    _real(*args, **kwargs)
    return _AlwaysEqual()
"""


@pytest.mark.parametrize(
    "break_solution",
    [
        lambda row: "    return None\n",
        lambda row: "    raise ValueError\n",
        lambda row: "    import sys\n    sys.exit(0)\n",
        lambda row: row["canonical_solution"] + RIGGED_RESULT.format(entry_point=row["entry_point"]),
    ],
    ids=["none", "raises", "exits", "rigged-eq"],
)
def test_broken_humaneval_solutions_score_below_1(humaneval, sandbox, break_solution):
    scores = humaneval_scores(humaneval, [break_solution(row) for row in humaneval], sandbox)
    assert {row["task_id"]: value for row, value in zip(humaneval, scores, strict=True) if value >= 1.0} == {}


def test_humaneval_helpers_come_from_the_trusted_prompt(humaneval, sandbox):
    """HumanEval/32 checks with `poly` from the prompt; a candidate redefining `poly` gains nothing."""
    (row,) = [row for row in humaneval if row["task_id"] == "HumanEval/32"]
    cheat = "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 0.0\n"
    assert humaneval_scores([row], [cheat], sandbox) == [0.0]


# ---------------------------------------------------------------------------------------------------- C and C++


SUM_C = '#include <stdio.h>\nint main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\\n", a + b); }\n'
SUM_CPP = "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }\n"
SUM_TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "40 2", "output": "42"}, {"input": "1 1", "output": "3"}]


@pytest.mark.parametrize(("language", "source"), [("c", SUM_C), ("cpp", SUM_CPP)])
def test_c_and_cpp_stdin_stdout(sandbox, language, source):
    assert run(source, SUM_TESTS, language, sandbox=sandbox) == pytest.approx(2 / 3)
    assert run(source.replace("+", "-"), SUM_TESTS, language, sandbox=sandbox) == 0.0
    assert run(source.replace("int main", "int mian"), SUM_TESTS, language, sandbox=sandbox) == 0.0  # link error


@pytest.mark.parametrize(
    ("printed", "expected", "passes"),
    [
        ("a  \nb\t\n\n\n", "a\nb", True),  # whitespace around a line, trailing empty lines
        (" a\nb\n", "a\nb", True),
        ("a\n\nb\n", "a\nb", False),  # an empty line inside is a line
        ("1   2\n", "1 2", True),  # tokens, whatever the spaces between them
        ("1 2 3\n", "1 2", False),
        ("0.3333333\n", "0.333333333", True),  # a float token may differ by 1e-6, absolute or relative
        ("0.3334\n", "0.333333333", False),
        ("1234567.8\n", "1234567.2", True),  # relative
        ("1e-7\n", "0.0000001", True),
        ("4.0\n", "4", False),  # an integer answer must be an integer, equal in value
        ("+4\n", "4", True),
        ("50000000000000001\n", "50000000000000000", False),  # integers are exact, however large
        ("yes\n", "YES", False),  # case matters
        ("nan\n", "nan", True),
        ("", "", True),
        ("\n\n", "", True),
    ],
)
def test_stdout_rule(printed, expected, passes):
    assert stdout_matches(printed, expected) is passes


def test_stdout_rule_in_a_run(sandbox):
    program = '#include <stdio.h>\nint main(void) { printf("%s", " a  \\nb\\t\\n0.5000001\\n\\n"); }\n'
    assert run(program, [{"input": "", "output": "a\nb\n0.5"}], "c", sandbox=sandbox) == 1.0
    assert run(program, [{"input": "", "output": "a\n\nb\n0.5"}], "c", sandbox=sandbox) == 0.0


def test_a_pass_needs_exit_status_0(sandbox):
    program = '#include <stdio.h>\nint main(void) { puts("3"); return 1; }\n'
    assert run(program, [{"input": "", "output": "3"}], "c", sandbox=sandbox) == 0.0


# ---------------------------------------------------------------------------------------------------- reward functions


def test_reward_function_with_trl_columns_and_chat_completions(sandbox):
    reward = make_code_reward(limits=LIMITS, sandbox=sandbox)
    completions = [
        [{"role": "assistant", "content": f"Sure:\n```python\n{ADD}```"}],
        [{"role": "assistant", "content": "```c\n" + SUM_C + "```"}],
        [{"role": "assistant", "content": "no code here"}],
    ]
    metrics = []
    rewards = reward(
        prompts=[[{"role": "user", "content": "..."}]] * 3,
        completions=completions,
        tests=[["assert add(1, 2) == 3"], SUM_TESTS[:2], ["assert f() == 1"]],
        language=["python", "c", "python"],
        log_metric=lambda name, value: metrics.append((name, value)),
        trainer_state=None,
    )
    assert rewards == [1.0, 1.0, 0.0]
    assert metrics == [("code_reward/infra_failure_rate", 0.0)]
    assert reward.__name__ == "code_reward"


def test_humaneval_columns_and_test_list_column(humaneval, sandbox):
    reward = make_code_reward(limits=LIMITS, sandbox=sandbox)
    row = humaneval[0]
    assert reward([row["canonical_solution"]], test=[row["test"]], entry_point=[row["entry_point"]],
                  test_setup_code=[row["prompt"]]) == [1.0]  # fmt: skip
    assert reward([ADD], test_list=[["assert add(2, 3) == 5"]], test_imports=[["import math"]]) == [1.0]


def test_compile_reward_ignores_tests(sandbox):
    reward = make_code_reward(compile_only=True, limits=LIMITS, sandbox=sandbox)
    assert reward.__name__ == "compile_reward"
    assert reward(["def f(): return 1", "def f(:"], tests=[["assert f() == 2"]] * 2) == [1.0, 0.0]


def test_async_variant(sandbox):
    reward = make_code_reward(asynchronous=True, limits=LIMITS, sandbox=sandbox)
    assert asyncio.iscoroutinefunction(reward) and reward.__name__ == "code_reward_async"
    completions = [f"def f():\n    return {value}\n" for value in range(6)]
    rewards = asyncio.run(reward(completions, tests=[["assert f() == 3"]] * 6))
    assert rewards == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_concurrent_callers_from_threads(sandbox):
    reward = make_code_reward(limits=LIMITS, sandbox=sandbox)

    def call(worker: int) -> list:
        completions = [f"def f():\n    return {worker * 10 + value}\n" for value in range(5)]
        return reward(completions, tests=[[f"assert f() == {worker * 10 + 2}"]] * 5)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(4)))
    assert results == [[0.0, 0.0, 1.0, 0.0, 0.0]] * 4


def test_repeated_completions_run_once():
    box = CountingSandbox()
    try:
        reward = make_code_reward(limits=LIMITS, sandbox=box)
        group = ["def f():\n    return 1\n"] * 6 + ["def f():\n    return 2\n"] * 2  # a GRPO group with repeats
        assert reward(group, tests=[["assert f() == 1"]] * 8) == [1.0] * 6 + [0.0] * 2
        assert box.jobs == 2
        assert reward(group[:1], tests=[["assert f() == 1"]]) == [1.0]
        assert box.jobs == 2  # served from the cache
        assert reward(group[:1], tests=[["assert f() == 2"]]) == [0.0]  # other tests: another key
        assert box.jobs == 3
    finally:
        box.close()


def test_an_unavailable_sandbox_gives_none_not_zero(monkeypatch):
    monkeypatch.delenv("TRL_EXT_ALLOW_UNSANDBOXED", raising=False)
    monkeypatch.setattr("rewards.sandbox.shutil.which", lambda name: None)
    reward = make_code_reward(limits=LIMITS, sandbox=Sandbox(workers=1))
    metrics = []
    assert reward([ADD], tests=[["assert add(1, 1) == 2"]], log_metric=lambda *m: metrics.append(m)) == [None]
    assert metrics == [("code_reward/infra_failure_rate", 1.0)]


def test_bad_language_argument_fails_at_setup():
    with pytest.raises(ValueError, match="unknown language 'go'"):
        make_code_reward("go")
