"""Code reward: run a completion's code against its row's tests in the sandbox; reward = fraction of tests passed.

Tests (column `tests`, `test` or `test_list`, first one present):

- Python `assert` statements: a list, or one newline-separated string (MBPP). Where an assert splits into calls into
  the candidate and a comparison around them, the sandbox evaluates only the calls and sends back their values; the
  comparison (`==`, `isclose`, `sorted`, ...) is evaluated here, with Python semantics, on values rebuilt by
  `rewards.sandbox.codec`. Other asserts (a comprehension over calls, a helper around a result, a part Python may
  skip), and samples whose results are not all values, run in the oracle.
- HumanEval `check(candidate)` source with an `entry_point` column: runs in the oracle; it counts as one test.
- stdin/stdout pairs `[{"input": ..., "output": ...}]` (any language): a pass needs exit status 0 and
  `stdout_matches` (same lines and tokens; integers exact; float tokens within FLOAT_TOLERANCE).
- none: compile-only, 1.0 if the code compiles, else 0.0.

The oracle is a jailed process that holds the tests and no candidate code; the candidate runs in another, which is
never sent a test. Calls cross as values (the standard library's value types and instances of the classes the setup
code defines, with mutable arguments copied back) or as handles that compare by identity, so in-place mutation,
expected exceptions, class and generator entry points and callables work as in plain Python, while a rigged `__eq__`,
`sys.exit(0)` or a fake "PASSED" gains nothing, and no expected value is anywhere the candidate can look.

`test_setup_code` (MBPP; HumanEval: the prompt) and `test_imports` are trusted code run before the candidate and
before the tests in the oracle. A reward of None means the sandbox failed (a worker died, it could not start): TRL
drops it, never a false 0. The rules and the threat model, with the peers' choices: docs/code-reward.md.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import functools
import hashlib
import json
import logging
import math
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from decimal import Decimal
from types import CodeType

from rewards.sandbox import DEFAULT_LIMITS, Limits, Sandbox, SandboxUnavailable, shared_sandbox
from rewards.sandbox.codec import Decoder
from rewards.utils import completion_text

logger = logging.getLogger(__name__)

LANGUAGES = {"python": "python", "py": "python", "python3": "python", "c": "c", "cpp": "cpp", "c++": "cpp",
             "cxx": "cpp"}  # fmt: skip
_FENCE_TAGS = {name: {alias for alias, target in LANGUAGES.items() if target == name} for name in LANGUAGES.values()}
_FENCE = re.compile(r"```[ \t]*([\w+#-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)  # unclosed: cut off by max length


@dataclass(frozen=True)
class NativeToolchain:
    compiler: str
    source_name: str
    flags: tuple[str, ...]
    libraries: tuple[str, ...] = ("-lm",)


NATIVE = {
    "c": NativeToolchain("gcc", "main.c", ("-std=gnu17", "-O2", "-pipe")),
    "cpp": NativeToolchain("g++", "main.cpp", ("-std=gnu++17", "-O2", "-pipe")),
}
SLACK_S = 5.0  # trusted-side allowance on top of the per-run limits before a worker counts as stalled


def normalize_language(language: str) -> str:
    try:
        return LANGUAGES[language.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown language {language!r}: use one of {sorted(LANGUAGES)}") from None


def extract_code(text: str, language: str) -> str:
    """The last fenced block tagged with the language, else the last untagged fenced block, else the whole text."""
    blocks = _FENCE.findall(text)
    tags = _FENCE_TAGS[normalize_language(language)]
    for wanted in (lambda tag: tag.lower() in tags, lambda tag: tag == ""):
        matching = [body for tag, body in blocks if wanted(tag)]
        if matching:
            return matching[-1]
    return text


# ---------------------------------------------------------------------------------------------------- test plans


@dataclass(frozen=True)
class CompileOnly:
    pass


@dataclass(frozen=True)
class ParentCheck:
    """One assert, evaluated here: `code` reads the sandbox results of `units` (indices) as `__v0`, `__v1`, ..."""

    code: CodeType
    units: tuple[int, ...]


@dataclass(frozen=True)
class OracleTests:
    test_source: str  # trusted module run in the oracle before the statements (HumanEval: defines check)
    statements: tuple[str, ...]  # one test each
    proxies: tuple[str, ...]  # names that call into the candidate
    value_classes: tuple[str, ...] = ()  # classes of the trusted setup code, whose instances cross by value


@dataclass(frozen=True)
class CallTests:
    expressions: tuple[str, ...]  # candidate calls, evaluated in the sandbox in this order
    checks: tuple[ParentCheck, ...]
    fallback: OracleTests  # the same tests through the oracle, for a sample whose results are not all values


@dataclass(frozen=True)
class StdioTests:
    cases: tuple[tuple[str, str], ...]  # (stdin, expected stdout)

    @property
    def longest_output(self) -> int:
        return max((len(expected.encode()) for _, expected in self.cases), default=0)


Plan = CompileOnly | CallTests | OracleTests | StdioTests

_PARENT_FUNCTIONS = {
    name: getattr(builtins, name)
    for name in (
        "abs all any bool dict float frozenset int isinstance len list max min repr round set sorted str sum "
        "tuple type"
    ).split()
}
_MATH_NAMES = frozenset("ceil e fabs floor inf isclose isfinite isinf isnan nan pi sqrt trunc".split())
_PARENT_GLOBALS = {"__builtins__": {}, **_PARENT_FUNCTIONS, "math": math}
# Operators whose cost is bounded by the size of their operands. Not `*`, `**`, `<<` on a candidate value, nor `%`
# (string formatting: "%0999999999d" % 1 builds a gigabyte).
_CHEAP_OPERATORS = (ast.Add, ast.Sub, ast.Div, ast.FloorDiv, ast.BitAnd, ast.BitOr, ast.BitXor, ast.RShift)
# Trusted-side calls whose later arguments must not come from the candidate: round(10**4000, -10**9) takes ages,
# and sum(lists, start) concatenates in quadratic time whatever start is.
_STRUCTURE = (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.IfExp, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Subscript,
              ast.Slice, ast.BinOp, ast.Call, ast.keyword, ast.Attribute, ast.Constant, ast.Name, ast.Load,
              ast.cmpop, ast.boolop, ast.unaryop, ast.operator)  # fmt: skip


class _NeedsOracle(Exception):
    """This assert cannot be split into sandbox calls and a trusted comparison."""


def _is_parent_callable(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _PARENT_FUNCTIONS
    return _is_math_name(node)


def _is_math_name(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math"
            and node.attr in _MATH_NAMES)  # fmt: skip


def _bound_names(tree: ast.AST) -> set[str]:
    """Names an expression binds itself (lambda parameters, comprehension targets, walrus targets)."""
    bound = {arg.arg for node in ast.walk(tree) if isinstance(node, ast.Lambda) for arg in ast.walk(node.args)
             if isinstance(arg, ast.arg)}  # fmt: skip
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return bound


class _Splitter:
    """Splits an assert into candidate computations (sandbox) and the comparison around them (trusted side)."""

    def __init__(self, trusted: frozenset[str], candidate_names: frozenset[str], expressions: list[str]):
        self.trusted = trusted
        self.candidate_names = candidate_names
        self.expressions = expressions
        self.units: list[int] = []

    def depends_on_candidate(self, node: ast.AST) -> bool:
        return any(isinstance(child, ast.Name) and self.is_candidate_name(child.id) for child in ast.walk(node))

    def is_candidate_name(self, name: str) -> bool:
        return name in self.candidate_names or name not in self.trusted

    def split(self, node: ast.expr) -> ast.expr:
        if not self.depends_on_candidate(node):
            for child in ast.walk(node):
                if not isinstance(child, _STRUCTURE):
                    raise _NeedsOracle
                if isinstance(child, ast.Name) and child.id not in _PARENT_GLOBALS:
                    raise _NeedsOracle
                if isinstance(child, ast.Attribute) and not _is_math_name(child):
                    raise _NeedsOracle
                if isinstance(child, ast.Call) and not _is_parent_callable(child.func):
                    raise _NeedsOracle
            return node
        if self.lazy_parts_depend_on_candidate(node):
            raise _NeedsOracle
        if isinstance(node, ast.Name) or (isinstance(node, ast.Attribute) and not _is_math_name(node)):
            return self.unit(node)
        if isinstance(node, ast.Call):
            if self.depends_on_candidate(node.func):
                return self.unit(node)
            if not _is_parent_callable(node.func) or any(isinstance(arg, ast.Starred) for arg in node.args):
                raise _NeedsOracle
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if (name == "round" and self.depends_on_candidate(ast.Tuple(node.args[1:]))) or (
                name == "sum" and len(node.args) > 1
            ):
                raise _NeedsOracle
            if any(keyword.arg is None for keyword in node.keywords):
                raise _NeedsOracle
        elif isinstance(node, ast.BinOp):
            if not isinstance(node.op, _CHEAP_OPERATORS):
                raise _NeedsOracle
        elif not isinstance(node, (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.IfExp, ast.Tuple, ast.List, ast.Set,
                                   ast.Subscript, ast.Slice)):  # fmt: skip
            raise _NeedsOracle  # a dict display among them: Python interleaves its keys and values
        return _SplitChildren(self).generic_visit(node)

    def lazy_parts_depend_on_candidate(self, node: ast.expr) -> bool:
        """Whether a part Python may skip (`or`/`and` operands, `x if c else y`, a chained comparison) calls the
        candidate: every unit runs in the sandbox, so only the oracle gets such a call's side effects right."""
        if isinstance(node, ast.BoolOp):
            lazy = node.values[1:]
        elif isinstance(node, ast.IfExp):
            lazy = [node.body, node.orelse]
        elif isinstance(node, ast.Compare):
            lazy = node.comparators[1:]
        else:
            return False
        return any(map(self.depends_on_candidate, lazy))

    def unit(self, node: ast.expr) -> ast.Name:
        self.units.append(len(self.expressions))
        self.expressions.append(ast.unparse(node))
        return ast.Name(id=f"__v{len(self.units) - 1}", ctx=ast.Load())


class _SplitChildren(ast.NodeTransformer):
    def __init__(self, splitter: _Splitter):
        self.splitter = splitter

    def visit(self, node):
        if isinstance(node, ast.expr):
            return self.splitter.split(node)
        return self.generic_visit(node)


def _defined_names(source: str) -> set[str]:
    """Top-level names a trusted module defines (functions, classes, imports, assignments)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        else:
            names.update(target.id for target in ast.walk(node) if isinstance(target, ast.Name)
                         and isinstance(target.ctx, ast.Store))  # fmt: skip
    return names


def _assert_statements(tests: str | Sequence[str]) -> list[ast.Assert]:
    sources = [tests] if isinstance(tests, str) else list(tests)
    statements: list[ast.Assert] = []
    for source in sources:
        if not isinstance(source, str):
            raise ValueError(f"Python tests must be assert statements (strings), got {type(source).__name__}")
        try:
            body = ast.parse(source).body
        except SyntaxError as error:
            raise ValueError(f"test does not parse ({error.msg}): {source[:200]!r}") from None
        for node in body:
            if not isinstance(node, ast.Assert):
                raise ValueError(
                    f"test is not an assert statement: {ast.unparse(node)[:200]!r}. Put imports and helpers in "
                    "test_setup_code, or use a HumanEval check(candidate) function with entry_point."
                )
            statements.append(node)
    return statements


def _value_classes(setup_code: str) -> tuple[str, ...]:
    """Classes the trusted setup code defines (ListNode, ...): both sides have them, so their instances cross by
    value, rebuilt on the receiving side as that side's class of the same name."""
    return tuple(node.name for node in ast.parse(setup_code).body if isinstance(node, ast.ClassDef))


def _plan_asserts(tests: str | Sequence[str], setup_code: str, entry_point: str | None) -> CallTests | OracleTests:
    statements = _assert_statements(tests)
    if not statements:
        raise ValueError("no assert statements in the tests")
    trusted = frozenset(dir(builtins)) | frozenset(_PARENT_GLOBALS) | _defined_names(setup_code)
    pinned = frozenset({entry_point} if entry_point else ())  # the function under test, even if named like a builtin
    proxies = set(pinned)
    for statement in statements:
        names = {node.id for node in ast.walk(statement) if isinstance(node, ast.Name)}
        proxies |= names - trusted - _bound_names(statement)
    value_classes = _value_classes(setup_code)
    oracle = OracleTests("", tuple(ast.unparse(statement) for statement in statements), tuple(sorted(proxies)),
                         value_classes)  # fmt: skip
    expressions: list[str] = []
    checks = []
    try:
        for statement in statements:
            splitter = _Splitter(trusted | _bound_names(statement.test), pinned, expressions)
            split = splitter.split(statement.test)  # rewrites the tree in place
            expression = ast.fix_missing_locations(ast.Expression(split))
            checks.append(ParentCheck(compile(expression, "<test>", "eval", dont_inherit=True), tuple(splitter.units)))
    except _NeedsOracle:
        return oracle
    return CallTests(tuple(expressions), tuple(checks), oracle)


def _plan_check(test: str, entry_point: str, setup_code: str) -> OracleTests:
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a function name, got {entry_point!r}")
    try:
        module = ast.parse(test)
    except SyntaxError as error:
        raise ValueError(f"check() test does not parse: {error.msg}") from None
    if not any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in module.body):
        raise ValueError("HumanEval-style tests need a top-level `def check(candidate):`")
    return OracleTests(test, (f"check({entry_point})",), (entry_point,), _value_classes(setup_code))


def _plan_stdio(tests: Sequence[dict]) -> StdioTests:
    cases = []
    for case in tests:
        if not (isinstance(case, dict) and isinstance(case.get("input"), str) and isinstance(case.get("output"), str)):
            raise ValueError(f'stdin/stdout tests must be {{"input": str, "output": str}} dicts, got {case!r:.200}')
        cases.append((case["input"], case["output"]))
    return StdioTests(tuple(cases))


def plan_tests(tests, language: str = "python", *, entry_point: str | None = None, setup_code: str = "") -> Plan:
    """How a row's tests run; raises ValueError, saying what to fix, for tests this module cannot run.

    Call it on every row before training to catch dataset problems up front (the reward functions call it too).
    """
    language = normalize_language(language)
    if setup_code:
        try:
            ast.parse(setup_code)
        except SyntaxError as error:
            raise ValueError(f"test_setup_code does not parse: {error.msg}") from None
    if tests is None or (isinstance(tests, str | list | tuple) and len(tests) == 0):
        return CompileOnly()
    if not isinstance(tests, str) and all(isinstance(case, dict) for case in tests):
        return _plan_stdio(tests)
    if language != "python":
        raise ValueError(f'{language} tests must be a list of {{"input": stdin, "output": expected stdout}} pairs')
    if isinstance(tests, str) and entry_point and re.search(r"^def check\(", tests, re.MULTILINE):
        return _plan_check(tests, entry_point, setup_code)
    return _plan_asserts(tests, setup_code, entry_point)


@functools.lru_cache(maxsize=4096)
def _cached_plan(tests_json: str, language: str, entry_point: str | None, setup_code: str) -> Plan:
    return plan_tests(json.loads(tests_json), language, entry_point=entry_point, setup_code=setup_code)


# ---------------------------------------------------------------------------------------------------- grading


FLOAT_TOLERANCE = 1e-6  # absolute or relative error accepted on a stdout token written with a point or an exponent
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def stdout_lines(text: str) -> list[str]:
    """Lines with surrounding whitespace removed, trailing empty lines dropped."""
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _tokens_match(actual: str, expected: str) -> bool:
    if actual == expected:
        return True
    if _INTEGER.fullmatch(expected):
        return _INTEGER.fullmatch(actual) is not None and int(actual) == int(expected)
    if not (_NUMBER.fullmatch(expected) and _NUMBER.fullmatch(actual)):
        return False
    expected_value, actual_value = Decimal(expected), Decimal(actual)
    return abs(actual_value - expected_value) <= Decimal(FLOAT_TOLERANCE) * max(Decimal(1), abs(expected_value))


def stdout_matches(actual: str, expected: str) -> bool:
    """The stdin/stdout rule: the same lines (surrounding whitespace and trailing empty lines aside), each with the
    same whitespace-separated tokens; integers must be equal, tokens written with a point or an exponent in the
    expected output may differ by FLOAT_TOLERANCE (absolute or relative), anything else must be identical."""
    actual_lines, expected_lines = stdout_lines(actual), stdout_lines(expected)
    if len(actual_lines) != len(expected_lines):
        return False
    for actual_line, expected_line in zip(actual_lines, expected_lines, strict=True):
        if actual_line == expected_line:
            continue
        actual_tokens, expected_tokens = actual_line.split(), expected_line.split()
        if len(actual_tokens) != len(expected_tokens) or not all(map(_tokens_match, actual_tokens, expected_tokens)):
            return False
    return True


def _passed_stdio(run: dict, expected: str, limits: Limits) -> bool:
    if run["killed"] == "output limit":
        logger.warning("code reward: a run printed more than Limits.max_output (%d bytes); its test fails",
                       limits.max_output)  # fmt: skip
        return False
    return run["exit"] == 0 and not run["timed_out"] and not run["killed"] and stdout_matches(run["stdout"], expected)


def _json_lines(text: str) -> list[dict]:
    messages = []
    for line in text.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            messages.append(message)
    return messages


_NOT_A_VALUE = object()
NEEDS_ORACLE = "needs the oracle"  # a CallTests sample with a result that is not a value: rerun through the oracle


_RESULT_KINDS = frozenset({"v", "e", "big", "opaque"})  # what `runs.run_calls` writes after an index
TRAINER_DECODE_BYTES = 4 << 20  # results of one sample decoded in the trainer; more go to the oracle to decode there


def _sandbox_values(results: str, count: int, limits: Limits) -> dict[int, object] | str:
    """Index -> rebuilt value of each call (first well-formed answer per index wins; _NOT_A_VALUE where it raised or
    was over the cap), or NEEDS_ORACLE if a call returned an object that is not a value, or more than the trainer
    decodes. A line that is not one the sandbox writes (the candidate's own bytes on the channel) is skipped: it can
    neither pass a test nor spoil the answer that follows it."""
    if len(results) > TRAINER_DECODE_BYTES:
        return NEEDS_ORACLE
    values: dict[int, object] = {}
    for line in results.split("\n"):
        index, _, rest = line.partition("\t")
        kind, _, payload = rest.partition("\t")
        if (
            not (index.isascii() and index.isdigit())
            or int(index) >= count
            or int(index) in values
            or kind not in _RESULT_KINDS
        ):
            continue
        if kind == "opaque":
            return NEEDS_ORACLE
        value = _NOT_A_VALUE
        if kind == "v":
            try:
                value = Decoder().decode(payload)
            except ValueError:
                continue
        elif kind == "big":
            logger.warning("code reward: a result was over Limits.max_output (%d bytes); its test fails",
                           limits.max_output)  # fmt: skip
        values[int(index)] = value
    return values


def _passed_check(check: ParentCheck, values: dict[int, object]) -> bool:
    arguments = {}
    for position, index in enumerate(check.units):
        value = values.get(index, _NOT_A_VALUE)
        if value is _NOT_A_VALUE:
            return False
        arguments[f"__v{position}"] = value
    try:
        return bool(eval(check.code, _PARENT_GLOBALS, arguments))
    except Exception:
        return False


def _compile_failure_reason(run: dict, limits: Limits) -> str | None:
    """Why a compile failed, where a limit and not the code is the cause (then it is logged)."""
    diagnostics = run.get("stderr", "")
    if run["killed"] == "timeout":
        return f"the compiler ran past Limits.compile_timeout ({limits.compile_timeout} s)"
    if "signal 25" in diagnostics or "File size limit" in diagnostics or "File too large" in diagnostics:
        return f"the compiler's output was over Limits.file_size ({limits.file_size} bytes)"
    if "signal 9" in diagnostics or "memory exhausted" in diagnostics or "out of memory" in diagnostics.lower():
        return f"the compiler ran out of Limits.compile_memory ({limits.compile_memory} bytes)"
    return None


def grade(plan: Plan, runs: list[dict], language: str, limits: Limits = DEFAULT_LIMITS) -> float | str | None:
    """The fraction of tests passed, from the worker's raw run outcomes (None: the oracle itself failed;
    NEEDS_ORACLE: a CallTests result was not a value, so the sample must go through `plan.fallback`)."""
    native = language in NATIVE
    if native and runs[0]["exit"] != 0:
        reason = _compile_failure_reason(runs[0], limits)
        if reason:
            logger.warning("code reward: compile failed: %s; the sample scores 0", reason)
        return 0.0
    if isinstance(plan, CompileOnly):
        if native:
            return float(not runs[0]["killed"])
        return float(any(message.get("ok") is True for message in _json_lines(runs[0]["results"])))
    if isinstance(plan, CallTests):
        values = _sandbox_values(runs[0]["results"], len(plan.expressions), limits)
        if values == NEEDS_ORACLE:
            return NEEDS_ORACLE
        return sum(_passed_check(check, values) for check in plan.checks) / len(plan.checks)
    if isinstance(plan, OracleTests):
        verdicts = _json_lines(runs[1]["results"])
        setup_errors = [message["setup_error"] for message in verdicts if "setup_error" in message]
        if setup_errors:
            logger.error("the trusted test code failed in the oracle (fix the dataset row): %s", setup_errors[0])
            return None
        for message in verdicts:
            if "over the size cap" in str(message.get("why", "")):
                logger.warning("code reward: a result was over Limits.max_output (%d bytes); its test fails",
                               limits.max_output)  # fmt: skip
        passed = {message["t"] for message in verdicts if message.get("ok") is True and type(message.get("t")) is int}
        return len(passed & set(range(len(plan.statements)))) / len(plan.statements)
    test_runs = runs[1:] if native else runs  # a native job starts with its compiler run
    passed = sum(_passed_stdio(run, expected, limits) for run, (_, expected) in zip(test_runs, plan.cases,
                                                                                    strict=False))  # fmt: skip
    return passed / len(plan.cases)


# ---------------------------------------------------------------------------------------------------- jobs


@functools.lru_cache(maxsize=8)
def _compiler_path(language: str) -> str:
    path = shutil.which(NATIVE[language].compiler)
    if path is None:
        raise ValueError(
            f"{language} needs `{NATIVE[language].compiler}`: install it (Debian/Ubuntu: build-essential)"
        )
    return path


@functools.lru_cache(maxsize=64)
def _limit_fields(limits: Limits) -> dict:
    return asdict(limits)


def build_job(code: str, plan: Plan, language: str, setup_code: str, limits: Limits) -> tuple[dict, float]:
    """The worker job for one sample and the trusted-side time limit for it."""
    limit_fields = _limit_fields(limits)
    per_run = limits.timeout + 2
    if language in NATIVE:
        toolchain = NATIVE[language]
        compiler = [_compiler_path(language), *toolchain.flags]
        if isinstance(plan, CompileOnly):
            compiler += ["-fsyntax-only", toolchain.source_name]
            inputs = None
        else:
            compiler += ["-o", "prog", toolchain.source_name, *toolchain.libraries]
            inputs = [stdin for stdin, _ in plan.cases]
        job = {"kind": "native", "source": code, "source_name": toolchain.source_name, "compile": compiler,
               "inputs": inputs, "limits": limit_fields}  # fmt: skip
        return job, limits.compile_timeout + 2 + per_run * len(inputs or ()) + SLACK_S
    source = f"{setup_code}\n{code}" if setup_code else code
    if isinstance(plan, CompileOnly):
        job = {"kind": "python_compile", "source": source}
    elif isinstance(plan, CallTests):
        job = {"kind": "python_calls", "source": source, "expressions": list(plan.expressions)}
    elif isinstance(plan, OracleTests):
        candidate = {"kind": "python_serve", "source": source, "value_classes": list(plan.value_classes),
                     "limits": limit_fields}  # fmt: skip
        oracle = {"kind": "python_oracle", "setup": setup_code, "test_source": plan.test_source,
                  "statements": list(plan.statements), "proxies": list(plan.proxies),
                  "value_classes": list(plan.value_classes), "limits": limit_fields}  # fmt: skip
        return {"kind": "oracle", "candidate": candidate, "oracle": oracle}, per_run + SLACK_S
    else:
        job = {"kind": "python_io", "source": source, "inputs": [stdin for stdin, _ in plan.cases]}
        return job | {"limits": limit_fields}, per_run * len(plan.cases) + SLACK_S
    return job | {"limits": limit_fields}, per_run + SLACK_S


def _run_and_grade(
    sandbox: Sandbox, code: str, plan: Plan, language: str, setup_code: str, limits: Limits
) -> float | None:
    job, timeout = build_job(code, plan, language, setup_code, limits)
    try:
        response = sandbox.run(job, timeout)
    except SandboxUnavailable as error:
        logger.error("code reward: %s", error)
        return None
    if response is None:
        return None
    result = grade(plan, response["runs"], language, limits)
    if result == NEEDS_ORACLE:
        return _run_and_grade(sandbox, code, plan.fallback, language, setup_code, limits)
    return result


class _ScoreCache:
    """Scores by digest of (code, tests, language, limits): GRPO groups repeat completions.

    A sample already being scored shares its future; infrastructure failures (None) are not kept.
    """

    def __init__(self, size: int = 100_000):
        self.size = size
        self._scores: OrderedDict[str, float] = OrderedDict()
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()

    def submit(self, key: str, sandbox: Sandbox, compute: Callable[[], float | None]) -> Future:
        with self._lock:
            if key in self._scores:
                self._scores.move_to_end(key)
                future: Future = Future()
                future.set_result(self._scores[key])
                return future
            if key in self._pending:
                return self._pending[key]
            future = sandbox.submit(compute)
            self._pending[key] = future
        future.add_done_callback(functools.partial(self._finish, key))
        return future

    def _finish(self, key: str, future: Future) -> None:
        with self._lock:
            self._pending.pop(key, None)
            if future.exception() is None and future.result() is not None:
                self._scores[key] = future.result()
                while len(self._scores) > self.size:
                    self._scores.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._scores.clear()


_cache = _ScoreCache()


def submit_score(
    code: str,
    tests,
    language: str = "python",
    *,
    entry_point: str | None = None,
    setup_code: str = "",
    limits: Limits = DEFAULT_LIMITS,
    sandbox: Sandbox | None = None,
    compile_only: bool = False,
) -> Future:
    """Schedule `score`; a future of float | None. Bad tests or language raise ValueError here, not in the future."""
    language = normalize_language(language)
    tests_json = json.dumps(None if compile_only else tests, sort_keys=True)
    plan = _cached_plan(tests_json, language, entry_point, setup_code)
    if isinstance(plan, StdioTests) and plan.longest_output > limits.max_output:
        raise ValueError(
            f"an expected stdout is {plan.longest_output} bytes, over Limits.max_output ({limits.max_output}): no "
            "program could pass it; raise Limits.max_output"
        )
    if language in NATIVE:
        _compiler_path(language)
    key = json.dumps([code, tests_json, language, entry_point, setup_code, _limit_fields(limits)])
    box = sandbox or shared_sandbox()
    compute = functools.partial(_run_and_grade, box, code, plan, language, setup_code, limits)
    return _cache.submit(hashlib.sha256(key.encode()).hexdigest(), box, compute)


def score(code: str, tests, language: str = "python", **options) -> float | None:
    """Fraction of `tests` that already-extracted `code` passes; None if the sandbox failed (not the code).

    Options as for `submit_score`: entry_point, setup_code, limits, sandbox."""
    return submit_score(code, tests, language, **options).result()


# ---------------------------------------------------------------------------------------------------- rewards


@dataclass(frozen=True)
class CodeTask:
    """What a dataset row says about its tests (see the module docstring for the columns)."""

    tests: object
    language: str
    entry_point: str | None
    setup_code: str

    @classmethod
    def from_row(cls, row: dict, default_language: str = "python") -> CodeTask:
        tests = next((row[name] for name in ("tests", "test", "test_list") if row.get(name) is not None), None)
        setup = "\n".join([*(row.get("test_imports") or ()), row.get("test_setup_code") or ""]).strip()
        language = normalize_language(row.get("language") or default_language)
        return cls(tests, language, row.get("entry_point"), setup)

    def plan(self, compile_only: bool = False) -> Plan:
        return _cached_plan(
            json.dumps(None if compile_only else self.tests, sort_keys=True),
            self.language,
            self.entry_point,
            self.setup_code,
        )


def validate_rows(rows, language: str = "python") -> None:
    """Check every row's tests and language up front; raises ValueError naming the first bad row and the fix."""
    for index, row in enumerate(rows):
        try:
            task = CodeTask.from_row(row, language)
            task.plan()
            if task.language in NATIVE:
                _compiler_path(task.language)
        except ValueError as error:
            raise ValueError(f"row {index}: {error}") from None


_ROW_COLUMNS = ("tests", "test", "test_list", "entry_point", "test_setup_code", "test_imports", "language")


def _score_futures(
    completions, kwargs: dict, default_language: str, limits: Limits, compile_only: bool, sandbox: Sandbox | None
) -> list[Future]:
    columns = {name: kwargs[name] for name in _ROW_COLUMNS if kwargs.get(name) is not None}
    futures = []
    for index, completion in enumerate(completions):
        task = CodeTask.from_row({name: values[index] for name, values in columns.items()}, default_language)
        code = extract_code(completion_text(completion), task.language)
        futures.append(
            submit_score(
                code,
                task.tests,
                task.language,
                entry_point=task.entry_point,
                setup_code=task.setup_code,
                limits=limits,
                sandbox=sandbox,
                compile_only=compile_only,
            )
        )
    return futures


def _results(futures: list[Future], log_metric: Callable | None) -> list[float | None]:
    rewards: list[float | None] = []
    for future in futures:
        try:
            rewards.append(future.result())
        except Exception:
            logger.exception("code reward: scoring failed; reward None")
            rewards.append(None)
    if callable(log_metric) and rewards:
        log_metric("code_reward/infra_failure_rate", sum(reward is None for reward in rewards) / len(rewards))
    return rewards


def make_code_reward(
    language: str = "python",
    *,
    limits: Limits = DEFAULT_LIMITS,
    compile_only: bool = False,
    asynchronous: bool = False,
    sandbox: Sandbox | None = None,
    name: str | None = None,
) -> Callable:
    """A TRL reward function. `language` is the default for rows without a `language` column.

    `compile_only`: 1.0 if the code compiles, whatever the tests. `asynchronous`: an `async def` for TRL's async reward
    path. `sandbox`: default, the process-wide one (`rewards.sandbox.configure_sandbox`).
    """
    default_language = normalize_language(language)
    if default_language in NATIVE:
        _compiler_path(default_language)

    def code_reward(completions, **kwargs) -> list[float | None]:
        futures = _score_futures(completions, kwargs, default_language, limits, compile_only, sandbox)
        return _results(futures, kwargs.get("log_metric"))

    async def code_reward_async(completions, **kwargs) -> list[float | None]:
        futures = _score_futures(completions, kwargs, default_language, limits, compile_only, sandbox)
        await asyncio.gather(*(asyncio.wrap_future(future) for future in futures), return_exceptions=True)
        return _results(futures, kwargs.get("log_metric"))

    reward = code_reward_async if asynchronous else code_reward
    reward.__name__ = reward.__qualname__ = name or ("compile_reward" if compile_only else reward.__name__)
    return reward


code_reward = make_code_reward()
code_reward_async = make_code_reward(asynchronous=True)
compile_reward = make_code_reward(compile_only=True)
