# ruff: noqa: E501  (a table of programs: one case per line reads better than wrapped strings)
r"""Benign code-reward cases: honest programs, right and wrong, of every kind the reward takes.

Each case is scored twice, by `rewards.code` in its sandbox and by `tests/code_reference.py` (plain `python3`, gcc,
g++, unsandboxed); the two must agree on every case. Kinds:

- `humaneval`: the canonical solutions of 42 problems of tests/data/humaneval (OpenAI HumanEval, MIT), and a wrong
  variant of some; `humaneval+`: HumanEval problems with extra inputs checked against the canonical solution held
  in the test, the way EvalPlus (HumanEval+) builds its tests (written for this suite);
- `mbpp`: MBPP-style assert lists (`test_list`, `test_setup_code`, `test_imports`), written for this suite;
- `values`: results of the standard-library types a solution may return (collections, fractions, decimals, dates,
  ranges, dictionary views, iterators, generators, byte arrays, ints over 4,300 digits, results over 1 MiB);
- `objects`: checks that need live objects: in-place mutation of arguments, expected exceptions, class and
  generator entry points, callables and helper objects (ListNode, dataclasses) passed in;
- `python semantics`: what plain Python does with future flags, dataclasses, `exit()`, threads and `atexit`;
- `stdio`: LiveCodeBench / code_contests-style stdin/stdout problems in Python, C and C++, written for this suite.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

HUMANEVAL = Path(__file__).parent / "humaneval" / "HumanEval.jsonl.gz"
# Problems chosen for the kinds of values and checks they have (floats, tuples, None, helpers in the prompt, random
# inputs in the check, hashes, ...).
HUMANEVAL_PROBLEMS = (0, 2, 4, 8, 10, 12, 16, 22, 26, 29, 32, 33, 37, 38, 44, 50, 53, 55, 58, 62, 70, 73, 81, 87, 90,
                      95, 96, 100, 105, 107, 112, 117, 120, 125, 129, 136, 137, 148, 151, 160, 162, 163)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    kind: str
    code: str
    tests: object
    language: str = "python"
    entry_point: str | None = None
    setup: str = ""


def humaneval_rows() -> list[dict]:
    with gzip.open(HUMANEVAL, "rt") as handle:
        rows = [json.loads(line) for line in handle]
    return [rows[number] for number in HUMANEVAL_PROBLEMS]


def _humaneval_cases() -> list[Case]:
    cases = []
    for row in humaneval_rows():
        number = row["task_id"].split("/")[1]
        code = row["prompt"] + row["canonical_solution"]
        cases.append(Case(f"humaneval-{number}", "humaneval", code, row["test"], entry_point=row["entry_point"],
                          setup=row["prompt"]))  # fmt: skip
        if int(number) % 4 == 0:  # and a wrong answer for some
            wrong = row["prompt"] + "    return None\n"
            cases.append(Case(f"humaneval-{number}-wrong", "humaneval", wrong, row["test"],
                              entry_point=row["entry_point"], setup=row["prompt"]))  # fmt: skip
    return cases


def _plus(number: int, inputs: str, compare: str = "candidate(*args) == reference(*args)") -> Case:
    """A HumanEval+-style case: the canonical solution as `reference` in the test, checked on many inputs."""
    (row,) = [row for row in humaneval_rows() if row["task_id"] == f"HumanEval/{number}"]
    entry = row["entry_point"]
    reference = row["prompt"].replace(f"def {entry}(", "def reference(", 1) + row["canonical_solution"]
    test = f"{reference}\n\ndef check(candidate):\n    for args in {inputs}:\n        assert {compare}, args\n"
    return Case(f"humaneval+-{number}", "humaneval+", row["prompt"] + row["canonical_solution"], test,
                entry_point=entry, setup=row["prompt"])  # fmt: skip


HUMANEVAL_PLUS = [
    _plus(
        0, "[([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], t) for t in (0.0, 0.05, 0.3, 1e9)] + [([], 1.0), ([1e308, -1e308], 0.5)]"
    ),
    _plus(
        2,
        "[(x,) for x in (3.5, 1.33, 123.456, 0.0, 1e-9, 999999.999999)]",
        "abs(candidate(*args) - reference(*args)) < 1e-9",
    ),
    _plus(8, "[(list(range(n)),) for n in range(12)] + [([-1, 10**20],)]"),
    _plus(12, "[([],), (['a', 'bb', 'cc'],), (['x' * n for n in range(50)],)]"),
    _plus(16, "[('',), ('aAbB' * 100,), ('Jerry jERRY JeRRRY',)]"),
    _plus(29, "[([], ''), (['abc', 'bcd', 'cde', 'array'], 'a'), (['x' + str(i) for i in range(300)], 'x1')]"),
    _plus(55, "[(n,) for n in range(1, 25)]"),
    _plus(100, "[(n,) for n in range(1, 40)]"),
    _plus(107, "[(n,) for n in (1, 2, 12, 123, 999)]"),
    _plus(163, "[(a, b) for a in (2, 10, 132, 17) for b in (8, 14, 2, 89)]"),
]

SETUP_LISTNODE = """
class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next


def build(values):
    head = None
    for value in reversed(values):
        head = ListNode(value, head)
    return head


def to_list(node):
    out = []
    while node is not None:
        out.append(node.val)
        node = node.next
    return out
"""
SETUP_POINT = """
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    x: int
    y: int
"""
SETUP_COLOR = "import enum\n\n\nclass Color(enum.Enum):\n    RED = 1\n    GREEN = 2\n"


def _mbpp(name: str, code: str, tests: list[str], setup: str = "", entry_point: str | None = None) -> Case:
    return Case(name, "mbpp", code, tests, setup=setup, entry_point=entry_point)


MBPP = [
    _mbpp("mbpp-similar-elements", "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
          ["assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))",
           "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == set((3, 4))"]),
    _mbpp("mbpp-is-not-prime", "import math\ndef is_not_prime(n):\n    return any(n % i == 0 for i in range(2, int(math.sqrt(n)) + 1))\n",
          ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"]),
    _mbpp("mbpp-heap-largest", "import heapq\ndef heap_queue_largest(nums, n):\n    return heapq.nlargest(n, nums)\n",
          ["assert heap_queue_largest([25, 35, 22, 85, 14, 65, 75, 22, 58], 3) == [85, 75, 65]",
           "assert heap_queue_largest([25, 35, 22, 85, 14, 65, 75, 22, 58], 2) == [85, 75]"]),
    _mbpp("mbpp-area-float", "import math\ndef circle_area(r):\n    return math.pi * r * r\n",
          ["assert math.isclose(circle_area(10), 314.15926535897927, rel_tol=0.001)",
           "assert abs(circle_area(2) - 12.566) < 1e-3"]),
    _mbpp("mbpp-tuple-not-list", "def pair(a, b):\n    return [a, b]\n", ["assert pair(1, 2) == (1, 2)", "assert list(pair(1, 2)) == [1, 2]"]),
    _mbpp("mbpp-dict-result", "def count_chars(s):\n    out = {}\n    for c in s:\n        out[c] = out.get(c, 0) + 1\n    return out\n",
          ["assert count_chars('abca') == {'a': 2, 'b': 1, 'c': 1}", "assert count_chars('')['x'] == 0"]),
    _mbpp("mbpp-none-result", "def first_even(xs):\n    for x in xs:\n        if x % 2 == 0:\n            return x\n",
          ["assert first_even([1, 3, 4]) == 4", "assert first_even([1, 3]) is None"]),
    _mbpp("mbpp-setup-and-imports", "def hyp(a, b):\n    return sqrt(a * a + b * b)\n",
          ["assert hyp(3, 4) == 5.0", "assert hyp(5, 12) == 13.0"], setup="from math import sqrt"),
    _mbpp("mbpp-wrong-half", "def double(x):\n    return x * 2 if x < 10 else x * 3\n",
          ["assert double(2) == 4", "assert double(20) == 40", "assert double(0) == 0", "assert double(11) == 22"]),
    _mbpp("mbpp-raises-in-one", "def inverse(x):\n    return 1 / x\n", ["assert inverse(2) == 0.5", "assert inverse(0) == 0"]),
    _mbpp("mbpp-comprehension", "def square(x):\n    return x * x\n",
          ["assert all(square(i) == i * i for i in range(20))", "assert [square(i) for i in range(3)] == [0, 1, 4]"]),
    _mbpp("mbpp-short-circuit", "calls = []\ndef f(x):\n    calls.append(x)\n    return x\ndef seen():\n    return list(calls)\n",
          ["assert f(1) == 1 or f(2) == 2", "assert seen() == [1]"]),
    _mbpp("mbpp-state-between-asserts", "store = []\ndef push(x):\n    store.append(x)\n    return len(store)\n",
          ["assert push('a') == 1", "assert push('b') == 2", "assert push('c') == 3"]),
    _mbpp("mbpp-big-int", "def fact(n):\n    out = 1\n    for i in range(2, n + 1):\n        out *= i\n    return out\n",
          ["assert fact(3000) % 10**9 == 0", "assert fact(3000) > 10**9000", "assert len(str(fact(20))) == 19"]),
    _mbpp("mbpp-string-methods", "def snake(s):\n    return '_'.join(w.lower() for w in s.split())\n",
          ["assert snake('Hello World') == 'hello_world'", "assert snake('A') == 'a'", "assert snake('') == ''"]),
    _mbpp("mbpp-set-of-tuples", "def pairs(n):\n    return {(i, j) for i in range(n) for j in range(i)}\n",
          ["assert pairs(3) == {(1, 0), (2, 0), (2, 1)}", "assert len(pairs(10)) == 45"]),
    _mbpp("mbpp-nested-lists", "def grid(n):\n    return [[i * n + j for j in range(n)] for i in range(n)]\n",
          ["assert grid(2) == [[0, 1], [2, 3]]", "assert grid(50)[49][49] == 2499", "assert sum(map(sum, grid(3))) == 36"]),
    _mbpp("mbpp-bytes", "def enc(s):\n    return s.encode('utf-8')\n", ["assert enc('é') == b'\\xc3\\xa9'", "assert enc('') == b''"]),
    _mbpp("mbpp-floats-nan", "import math\ndef ratio(a, b):\n    return a / b if b else math.nan\n",
          ["assert ratio(1, 4) == 0.25", "assert ratio(1, 0) != ratio(1, 0)", "assert math.isnan(ratio(0, 0))"]),
    _mbpp("mbpp-own-name-shadows-builtin", "def max(xs):\n    return sorted(xs)[0]\n", ["assert max([3, 1, 2]) == 1"], entry_point="max"),
]  # fmt: skip

VALUES = [
    Case("counter", "values", "from collections import Counter\ndef tally(s):\n    return Counter(s)\n",
         ["assert tally('abca') == {'a': 2, 'b': 1, 'c': 1}", "assert tally('abca').most_common(1) == [('a', 2)]",
          "assert tally('') + tally('x') == tally('x')"]),
    Case("ordered-dict", "values", "from collections import OrderedDict\ndef od(keys):\n    return OrderedDict((k, i) for i, k in enumerate(keys))\n",
         ["assert od('ba') == {'b': 0, 'a': 1}", "assert list(od('ba')) == ['b', 'a']", "assert od('ab') != OrderedDict(b=1, a=0)"]),
    Case("defaultdict", "values", "from collections import defaultdict\ndef group(words):\n    out = defaultdict(list)\n    for w in words:\n        out[len(w)].append(w)\n    return out\n",
         ["assert group(['a', 'bb', 'c']) == {1: ['a', 'c'], 2: ['bb']}", "assert group([])[3] == []"]),
    Case("deque", "values", "from collections import deque\ndef window(xs, n):\n    return deque(xs, maxlen=n)\n",
         ["assert window([1, 2, 3, 4], 2) == deque([3, 4])", "assert list(window('abc', 5)) == ['a', 'b', 'c']",
          "assert window([1], 3).maxlen == 3"]),
    Case("namedtuple", "values", "from collections import namedtuple\nPoint = namedtuple('Point', 'x y')\ndef origin():\n    return Point(0, 0)\n",
         ["assert origin() == (0, 0)", "assert origin().x == 0", "assert origin()._asdict() == {'x': 0, 'y': 0}"]),
    Case("fraction", "values", "from fractions import Fraction\ndef harmonic(n):\n    return sum(Fraction(1, k) for k in range(1, n + 1))\n",
         ["assert harmonic(3) == Fraction(11, 6)", "assert harmonic(1) == 1", "assert float(harmonic(2)) == 1.5"]),
    Case("decimal", "values", "from decimal import Decimal\ndef price(cents):\n    return Decimal(cents) / 100\n",
         ["assert price(1999) == Decimal('19.99')", "assert str(price(5)) == '0.05'", "assert price(100) == 1"]),
    Case("dates", "values", "import datetime\ndef next_day(y, m, d):\n    return datetime.date(y, m, d) + datetime.timedelta(days=1)\n"
         "def span(h):\n    return datetime.timedelta(hours=h)\ndef stamp():\n    return datetime.datetime(2024, 2, 29, 12, 30)\n",
         ["assert next_day(2024, 2, 28) == datetime.date(2024, 2, 29)", "assert next_day(2023, 12, 31).year == 2024",
          "assert span(36) == datetime.timedelta(days=1, hours=12)", "assert stamp().isoformat() == '2024-02-29T12:30:00'"],
         setup="import datetime"),
    Case("range", "values", "def evens(n):\n    return range(0, n, 2)\n",
         ["assert evens(7) == range(0, 7, 2)", "assert list(evens(5)) == [0, 2, 4]", "assert 4 in evens(10)", "assert evens(4) != [0, 2]"]),
    Case("dict-views", "values", "def keys(d):\n    return d.keys()\ndef items(d):\n    return d.items()\ndef values(d):\n    return d.values()\n",
         ["assert keys({1: 2, 3: 4}) == {1, 3}", "assert items({1: 2}) == {(1, 2)}", "assert list(values({1: 2})) == [2]",
          "assert sorted(keys({'b': 1, 'a': 2})) == ['a', 'b']"]),
    Case("iterators", "values", "def doubled(xs):\n    return map(lambda x: 2 * x, xs)\ndef pairs(a, b):\n    return zip(a, b)\ndef rev(xs):\n    return reversed(xs)\n",
         ["assert list(doubled([1, 2])) == [2, 4]", "assert dict(pairs('ab', [1, 2])) == {'a': 1, 'b': 2}",
          "assert list(rev([1, 2, 3])) == [3, 2, 1]", "assert next(doubled([5])) == 10"]),
    Case("generator-result", "values", "def countdown(n):\n    while n > 0:\n        yield n\n        n -= 1\n",
         ["assert list(countdown(3)) == [3, 2, 1]", "assert sum(countdown(100)) == 5050", "assert list(countdown(0)) == []"]),
    Case("bytearray", "values", "def xor(data, key):\n    return bytearray(b ^ key for b in data)\n",
         ["assert xor(b'ab', 1) == bytearray(b'`c')", "assert xor(b'', 7) == b''", "assert bytes(xor(b'\\x00', 255)) == b'\\xff'"]),
    Case("frozenset-complex", "values", "def roots():\n    return frozenset({1j, -1j})\ndef cplx():\n    return complex(3, -4)\n",
         ["assert roots() == {1j, -1j}", "assert abs(cplx()) == 5.0", "assert cplx().conjugate() == 3 + 4j"]),
    Case("ints-over-4300-digits", "values", "def power(n):\n    return 7 ** n\n",
         ["assert power(20000) % 1000 == pow(7, 20000, 1000)", "assert power(20000) == 7 ** 20000", "assert power(20000).bit_length() == 56148"]),
    Case("result-over-1-mib", "values", "def big(n):\n    return 'ab' * n\ndef many(n):\n    return list(range(n))\n",
         ["assert len(big(1 << 20)) == 2 << 20", "assert big(600000)[-1] == 'b'", "assert many(300000)[-1] == 299999",
          "assert sum(many(300000)) == 44999850000"]),
    Case("enum-from-setup", "values", "def pick(n):\n    return Color.RED if n == 1 else Color.GREEN\n",
         ["assert pick(1) == Color.RED", "assert pick(2) is Color.GREEN", "assert pick(1).value == 1"], setup=SETUP_COLOR),
    Case("namedtuple-from-setup", "values", "def swap(p):\n    return Pair(p.b, p.a)\n",
         ["assert swap(Pair(1, 2)) == Pair(2, 1)", "assert isinstance(swap(Pair(1, 2)), Pair)", "assert swap(Pair(1, 2)).a == 2"],
         setup="from typing import NamedTuple\n\n\nclass Pair(NamedTuple):\n    a: int\n    b: int\n"),
    Case("dataclass-from-setup", "values", "def mirror(p):\n    return Point(p.y, p.x)\n",
         ["assert mirror(Point(1, 2)) == Point(2, 1)", "assert mirror(Point(3, 3)).x == 3"], setup=SETUP_POINT),
    Case("shared-and-cyclic", "values", "def shared():\n    row = [0]\n    return [row, row]\ndef cycle():\n    a = []\n    a.append(a)\n    return a\n",
         ["assert shared()[0] is shared()[1] or True", "assert (lambda r: r[0] is r[1])(shared())", "assert (lambda c: c[0] is c)(cycle())"]),
]  # fmt: skip


def _check(name: str, code: str, check: str, entry_point: str, setup: str = "") -> Case:
    return Case(name, "objects", code, check, entry_point=entry_point, setup=setup)


OBJECTS = [
    _check("mutates-list-in-place", "def sort_in_place(xs):\n    xs.sort()\n",
           "def check(candidate):\n    xs = [3, 1, 2]\n    assert candidate(xs) is None\n    assert xs == [1, 2, 3]\n"
           "    ys = [[2], [1]]\n    candidate(ys)\n    assert ys == [[1], [2]]\n", "sort_in_place"),
    _check("mutates-dict-and-nested", "def add_key(d, k):\n    d[k] = len(d)\n    d.setdefault('log', []).append(k)\n",
           "def check(candidate):\n    d = {}\n    candidate(d, 'a')\n    candidate(d, 'b')\n"
           "    assert d == {'a': 0, 'log': ['a', 'b'], 'b': 2}\n", "add_key"),
    _check("mutates-deque-and-counter", "def tick(queue, counts):\n    queue.rotate(1)\n    counts['ticks'] += 1\n",
           "from collections import Counter, deque\n\ndef check(candidate):\n    queue, counts = deque([1, 2, 3]), Counter()\n"
           "    candidate(queue, counts)\n    candidate(queue, counts)\n    assert queue == deque([2, 3, 1]) and counts == {'ticks': 2}\n", "tick"),
    _check("mutation-keeps-identity", "def append_to(xs, x):\n    xs.append(x)\n    return xs\n",
           "def check(candidate):\n    xs = []\n    ys = candidate(xs, 1)\n    assert ys is xs and xs == [1]\n", "append_to"),
    _check("expected-exception-type", "def parse_age(text):\n    age = int(text)\n    if age < 0:\n        raise ValueError('negative')\n    return age\n",
           "def check(candidate):\n    assert candidate('7') == 7\n    try:\n        candidate('-1')\n    except ValueError as error:\n"
           "        assert str(error) == 'negative'\n    else:\n        assert False\n    try:\n        candidate('x')\n"
           "    except ValueError:\n        pass\n    else:\n        assert False\n", "parse_age"),
    _check("assert-raises-unittest", "def div(a, b):\n    return a // b\n",
           "import unittest\n\ndef check(candidate):\n    case = unittest.TestCase()\n    with case.assertRaises(ZeroDivisionError):\n"
           "        candidate(1, 0)\n    case.assertEqual(candidate(7, 2), 3)\n", "div"),
    _check("custom-exception-from-setup", "def withdraw(balance, amount):\n    if amount > balance:\n        raise InsufficientFunds(amount - balance)\n    return balance - amount\n",
           "def check(candidate):\n    assert candidate(10, 3) == 7\n    try:\n        candidate(1, 5)\n    except InsufficientFunds as error:\n"
           "        assert error.args == (4,)\n    else:\n        assert False\n", "withdraw",
           setup="class InsufficientFunds(Exception):\n    pass\n"),
    _check("class-entry-point", "class MinStack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)\n"
           "    def pop(self):\n        return self.items.pop()\n    def min(self):\n        return min(self.items)\n    def __len__(self):\n        return len(self.items)\n",
           "def check(candidate):\n    s = candidate()\n    s.push(3)\n    s.push(1)\n    s.push(2)\n    assert s.min() == 1\n"
           "    assert s.pop() == 2\n    assert len(s) == 2\n    assert s.items == [3, 1]\n    s.items = []\n    assert len(s) == 0\n", "MinStack"),
    _check("leetcode-solution-class", "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n        for i, x in enumerate(nums):\n"
           "            if target - x in seen:\n                return [seen[target - x], i]\n            seen[x] = i\n",
           "def check(candidate):\n    assert candidate().twoSum([2, 7, 11, 15], 9) == [0, 1]\n    assert sorted(candidate().twoSum([3, 2, 4], 6)) == [1, 2]\n", "Solution"),
    _check("generator-entry-point", "def fib():\n    a, b = 0, 1\n    while True:\n        yield a\n        a, b = b, a + b\n",
           "import itertools\n\ndef check(candidate):\n    assert list(itertools.islice(candidate(), 8)) == [0, 1, 1, 2, 3, 5, 8, 13]\n"
           "    gen = candidate()\n    assert next(gen) == 0 and next(gen) == 1\n    assert 21 in candidate()\n", "fib"),
    _check("generator-send", "def accumulate():\n    total = 0\n    while True:\n        value = yield total\n        total += value\n",
           "def check(candidate):\n    gen = candidate()\n    next(gen)\n    assert gen.send(5) == 5\n    assert gen.send(2) == 7\n    gen.close()\n", "accumulate"),
    _check("callable-argument", "def apply_all(fs, x):\n    return [f(x) for f in fs]\n",
           "def check(candidate):\n    assert candidate([abs, lambda v: v * 2, str], -3) == [3, -6, '-3']\n"
           "    calls = []\n    def spy(v):\n        calls.append(v)\n        return v\n    candidate([spy], 9)\n    assert calls == [9]\n", "apply_all"),
    _check("key-function", "def top(xs, key):\n    return max(xs, key=key)\n",
           "def check(candidate):\n    assert candidate(['aa', 'b', 'cccc'], len) == 'cccc'\n    assert candidate([3, -5, 4], lambda v: -abs(v)) == 3\n", "top"),
    _check("iterator-argument", "def total(it):\n    return sum(it)\n",
           "import itertools\n\ndef check(candidate):\n    assert candidate(iter([1, 2, 3])) == 6\n    assert candidate(x * x for x in range(4)) == 14\n"
           "    assert candidate(itertools.islice(itertools.count(), 5)) == 10\n", "total"),
    _check("listnode-reverse", "def reverse(head):\n    prev = None\n    while head:\n        head.next, prev, head = prev, head, head.next\n    return prev\n",
           "def check(candidate):\n    head = build([1, 2, 3])\n    new = candidate(head)\n    assert to_list(new) == [3, 2, 1]\n    assert head.next is None\n"
           "    assert candidate(None) is None\n", "reverse", setup=SETUP_LISTNODE),
    _check("listnode-cycle", "def has_cycle(head):\n    slow = fast = head\n    while fast and fast.next:\n        slow, fast = slow.next, fast.next.next\n"
           "        if slow is fast:\n            return True\n    return False\n",
           "def check(candidate):\n    head = build(list(range(5)))\n    assert candidate(head) is False\n    tail = head\n    while tail.next:\n"
           "        tail = tail.next\n    tail.next = head.next\n    assert candidate(head) is True\n", "has_cycle", setup=SETUP_LISTNODE),
    _check("listnode-long", "def length(head):\n    n = 0\n    while head:\n        n, head = n + 1, head.next\n    return n\ndef make(n):\n    return build(list(range(n)))\n",
           "def check(candidate):\n    assert candidate(build(list(range(20000)))) == 20000\n", "length", setup=SETUP_LISTNODE),
    _check("candidate-builds-helper-objects", "def make(values):\n    head = None\n    for v in reversed(values):\n        head = ListNode(v, head)\n    return head\n",
           "def check(candidate):\n    assert to_list(candidate([4, 5])) == [4, 5]\n    assert candidate([]) is None\n", "make", setup=SETUP_LISTNODE),
    _check("dataclass-argument-and-result", "def shift(p, dx):\n    return Point(p.x + dx, p.y)\n",
           "def check(candidate):\n    assert candidate(Point(1, 2), 3) == Point(4, 2)\n    assert {candidate(Point(0, 0), 1)} == {Point(1, 0)}\n", "shift", setup=SETUP_POINT),
    _check("object-identity", "class Box:\n    pass\ndef same(a, b):\n    return a is b\ndef make():\n    return Box()\n",
           "def check(candidate):\n    xs = [1]\n    assert candidate(xs, xs) is True\n    assert candidate([1], [1]) is False\n", "same"),
    _check("candidate-object-attributes", "class Account:\n    def __init__(self, owner):\n        self.owner = owner\n        self.balance = 0\n"
           "    def deposit(self, n):\n        self.balance += n\n        return self\n",
           "def check(candidate):\n    a = candidate('ann')\n    assert a.deposit(5).deposit(7).balance == 12\n    assert a.owner == 'ann'\n"
           "    assert isinstance(a.balance, int)\n    assert str(a.balance) == '12'\n", "Account"),
]  # fmt: skip

SEMANTICS = [
    Case("undefined-name-in-annotation", "python semantics", "def f(x: Undefined) -> int:\n    return x\n", ["assert f(1) == 1"]),
    Case("string-annotations-by-choice", "python semantics",
         "from __future__ import annotations\ndef f(x: Undefined) -> int:\n    return x\n", ["assert f(1) == 1"]),
    Case("dataclass-in-candidate", "python semantics",
         "from dataclasses import dataclass, field\n@dataclass\nclass Item:\n    name: str\n    tags: list = field(default_factory=list)\n"
         "def make(name):\n    return Item(name).name\ndef tags():\n    return Item('x').tags\n",
         ["assert make('a') == 'a'", "assert tags() == []"]),
    Case("dataclass-with-future-annotations", "python semantics",
         "from __future__ import annotations\nimport dataclasses\nfrom typing import ClassVar\n@dataclasses.dataclass\nclass C:\n"
         "    x: int\n    y: ClassVar[int] = 0\ndef fields():\n    return [f.name for f in dataclasses.fields(C)]\n",
         ["assert fields() == ['x']"]),
    Case("typing-get-type-hints", "python semantics",
         "import typing\nclass A:\n    x: 'int'\ndef hints():\n    return typing.get_type_hints(A)\n", ["assert hints() == {'x': int}"]),
    Case("pickle-own-class", "python semantics",
         "import pickle\nclass P:\n    def __init__(self, v):\n        self.v = v\ndef roundtrip(v):\n    return pickle.loads(pickle.dumps(P(v))).v\n",
         ["assert roundtrip(3) == 3"]),
    Case("main-guard-not-run", "python semantics", "def f():\n    return 1\nif __name__ == '__main__':\n    print(f())\n",
         ["assert f() == 1"]),
    Case("recursion-depth", "python semantics", "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n",
         ["assert depth(900) == 900", "assert depth(985) == 985"]),
    Case("exit-in-stdio", "python semantics", "print(int(input()) * 2)\nexit()\nprint('unreachable')\n", [{"input": "21\n", "output": "42\n"}]),
    Case("quit-with-status", "python semantics", "print('x')\nquit(3)\n", [{"input": "", "output": "x\n"}]),
    Case("sys-exit-zero-after-output", "python semantics", "import sys\nprint(5)\nsys.exit(0)\n", [{"input": "", "output": "5"}]),
    Case("thread-prints-after-main", "python semantics",
         "import threading, time\ndef late():\n    time.sleep(0.2)\n    print('from thread')\nthreading.Thread(target=late).start()\nprint('main')\n",
         [{"input": "", "output": "main\nfrom thread\n"}]),
    Case("atexit-prints", "python semantics", "import atexit\natexit.register(print, 'bye')\nprint('hi')\n",
         [{"input": "", "output": "hi\nbye\n"}]),
    Case("daemon-thread-dropped", "python semantics",
         "import threading, time\ndef never():\n    time.sleep(30)\n    print('late')\nthreading.Thread(target=never, daemon=True).start()\nprint('done')\n",
         [{"input": "", "output": "done\n"}]),
    Case("stdout-over-1-mib", "python semantics", "n = int(input())\nprint('\\n'.join(str(i) for i in range(n)))\n",
         [{"input": "300000\n", "output": "\n".join(str(i) for i in range(300000)) + "\n"}]),
    Case("unbuffered-write-and-print-mix", "python semantics", "import sys, os\nsys.stdout.write('a\\n')\nsys.stdout.flush()\nos.write(1, b'b\\n')\nprint('c')\n",
         [{"input": "", "output": "a\nb\nc\n"}]),
]  # fmt: skip

SUM_TESTS = [
    {"input": "1 2\n", "output": "3\n"},
    {"input": "40 2", "output": "42"},
    {"input": "-5 5\n", "output": "0\n"},
]
QUERIES = {"input": "4\n2\n3\n4\n9\n", "output": "YES\nNO\nYES\nNO\n"}
STDIO = [
    Case("py-sum", "stdio", "a, b = map(int, input().split())\nprint(a + b)\n", SUM_TESTS),
    Case("py-sum-wrong", "stdio", "a, b = map(int, input().split())\nprint(a - b)\n", SUM_TESTS),
    Case("py-read-all", "stdio", "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums[1:]))\n",
         [{"input": "3\n1 2 3\n", "output": "6\n"}, {"input": "0\n", "output": "0\n"}]),
    Case("py-even-queries", "stdio", "q = int(input())\nfor _ in range(q):\n    print('YES' if int(input()) % 2 == 0 else 'NO')\n", [QUERIES]),
    Case("py-float-more-digits", "stdio", "a, b = map(int, input().split())\nprint(f'{a / b:.12f}')\n",
         [{"input": "1 3\n", "output": "0.333333333\n"}, {"input": "2 1\n", "output": "2.000000\n"}]),
    Case("py-float-rounded-wrong", "stdio", "a, b = map(int, input().split())\nprint(f'{a / b:.2f}')\n",
         [{"input": "1 3\n", "output": "0.333333333\n"}]),
    Case("py-int-is-not-float", "stdio", "print(float(input()) * 2)\n", [{"input": "2\n", "output": "4\n"}]),
    Case("py-trailing-spaces", "stdio", "n = int(input())\nfor i in range(n):\n    print(*range(i + 1), end=' \\n')\n",
         [{"input": "3\n", "output": "0\n0 1\n0 1 2\n"}]),
    Case("py-eof-loop", "stdio", "import sys\nfor line in sys.stdin:\n    print(line.strip()[::-1])\n",
         [{"input": "abc\nxy\n", "output": "cba\nyx\n"}]),
    Case("py-input-eof", "stdio", "out = []\nwhile True:\n    try:\n        out.append(input())\n    except EOFError:\n        break\nprint(len(out))\n",
         [{"input": "a\nb\nc", "output": "3\n"}]),
    Case("py-recursion-limit-raised", "stdio", "import sys\nsys.setrecursionlimit(10000)\ndef d(n):\n    return 0 if n == 0 else 1 + d(n - 1)\nprint(d(5000))\n",
         [{"input": "", "output": "5000\n"}]),
    Case("py-big-int-output", "stdio", "import sys\nsys.set_int_max_str_digits(0)\nprint(len(str(3 ** 20000)))\n",
         [{"input": "", "output": "9543\n"}]),
    Case("py-runtime-error-after-output", "stdio", "print(1)\nraise SystemExit('bad')\n", [{"input": "", "output": "1\n"}]),
    Case("py-map-sum", "stdio", "print(sum(map(int, input().split())))\n", SUM_TESTS),
    Case("c-sum", "stdio", '#include <stdio.h>\nint main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\\n", a + b); return 0; }\n',
         SUM_TESTS, "c"),
    Case("c-queries", "stdio", '#include <stdio.h>\nint main(void) { int q, x; scanf("%d", &q); while (q--) { scanf("%d", &x);'
         ' puts(x % 2 ? "NO" : "YES"); } return 0; }\n', [QUERIES], "c"),
    Case("c-float", "stdio", '#include <stdio.h>\nint main(void) { double a, b; scanf("%lf %lf", &a, &b); printf("%.9f\\n", a / b); return 0; }\n',
         [{"input": "1 3\n", "output": "0.333333\n"}, {"input": "10 4\n", "output": "2.5\n"}], "c"),
    Case("c-math-lib", "stdio", '#include <math.h>\n#include <stdio.h>\nint main(void) { double x; scanf("%lf", &x); printf("%.6f\\n", sqrt(x)); return 0; }\n',
         [{"input": "2\n", "output": "1.414214\n"}], "c"),
    Case("c-exit-status-1", "stdio", '#include <stdio.h>\nint main(void) { puts("3"); return 1; }\n', [{"input": "", "output": "3"}], "c"),
    Case("c-large-output", "stdio", '#include <stdio.h>\nint main(void) { int n; scanf("%d", &n); for (int i = 0; i < n; i++) printf("%d\\n", i); return 0; }\n',
         [{"input": "300000\n", "output": "\n".join(str(i) for i in range(300000))}], "c"),
    Case("c-static-array-15-mib", "stdio", '#include <stdio.h>\n#include <unistd.h>\nchar big[15 << 20] = {1};\n'
         'int main(void) { puts("3"); return big[getpid() % 1000] * 0; }\n', [{"input": "", "output": "3\n"}], "c"),
    Case("c-compile-error", "stdio", "int main(void) { return 0 }\n", SUM_TESTS, "c"),
    Case("cpp-sum", "stdio", "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n", SUM_TESTS, "cpp"),
    Case("cpp-stl", "stdio", "#include <bits/stdc++.h>\nusing namespace std;\nint main() { int n; cin >> n; vector<int> v(n);"
         " for (auto &x : v) cin >> x; sort(v.begin(), v.end()); for (int x : v) cout << x << ' '; cout << endl; }\n",
         [{"input": "4\n3 1 4 1\n", "output": "1 1 3 4\n"}, {"input": "1\n7\n", "output": "7"}], "cpp"),
    Case("cpp-iomanip", "stdio", "#include <iomanip>\n#include <iostream>\nint main() { double r; std::cin >> r;"
         " std::cout << std::fixed << std::setprecision(10) << 3.14159265358979 * r * r << '\\n'; }\n",
         [{"input": "1\n", "output": "3.141593\n"}, {"input": "2\n", "output": "12.566371\n"}], "cpp"),
    Case("cpp-wrong", "stdio", "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a * b << '\\n'; }\n", SUM_TESTS, "cpp"),
]  # fmt: skip

CASES = [*_humaneval_cases(), *HUMANEVAL_PLUS, *MBPP, *VALUES, *OBJECTS, *SEMANTICS, *STDIO]
