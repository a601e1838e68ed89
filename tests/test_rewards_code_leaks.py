"""Hostile samples that try to read the expected values instead of computing them: every route scores 0.

The task is unlearnable on purpose: `f(2)` must be 4913 and `f(3)` must be 77, numbers that appear only in the tests.
A sample that finds them by any route scores above 0. Each route is tried against the three forms tests take (asserts
split into calls, asserts run whole in the oracle, a HumanEval `check`), right after an honest sample scored the same
tests on the same worker, so that nothing the worker has seen before helps either. Under a plain harness (the
unsandboxed reference, which runs tests and candidate in one process) the same samples do find the values: the routes
are real, the sandbox is what closes them.
"""

from __future__ import annotations

import dataclasses
import platform

import pytest
from code_reference import reference_score

from rewards import code as code_module
from rewards.code import CallTests, OracleTests, plan_tests, score
from rewards.sandbox import Limits, Sandbox

LIMITS = Limits(timeout=5.0, memory=768 << 20)
SPLIT = ["assert f(2) == 4913", "assert f(3) == 77"]
WHOLE = ["assert (lambda: f(2))() == 4913", "assert [f(3) for _ in 'a'] == [77]"]
CHECK = "def check(candidate):\n    assert candidate(2) == 4913\n    assert candidate(3) == 77\n"
FORMS = {"split asserts": (SPLIT, None), "whole asserts": (WHOLE, None), "check": (CHECK, "f")}
HONEST = "ANSWERS = {2: 4913, 3: 77}\ndef f(x):\n    return ANSWERS[x]\n"

SEARCH = r'''
import gc, os, re, sys

def _text(text, x):
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    if isinstance(text, str) and "==" in text:
        match = re.search(r"\(%d\)[^=\n]{0,40}==\s*\[?\s*(-?\d+)" % x, text)
        if match:
            return int(match.group(1))

def _code(code, x):
    """Constants of a test's compiled code, where an input and its expected value sit side by side."""
    if code in _OWN_CODES:
        return None
    consts = list(code.co_consts) if code.co_name == "check" or "candidate" in code.co_varnames else []
    for left, right in zip(consts, consts[1:]):
        if type(left) is int and left == x and type(right) is int:
            return right
    for const in consts:
        if hasattr(const, "co_consts"):
            found = _code(const, x) if code.co_name == "check" else None
            if found is not None:
                return found

def search(obj, x, depth=0):
    """Any expected value for x reachable from obj: source text, code constants, containers, functions, frames."""
    if depth > 4:
        return None
    found = _text(obj, x)
    if found is not None:
        return found
    if hasattr(obj, "co_consts"):
        return _code(obj, x)
    if hasattr(obj, "__code__"):
        found = _code(obj.__code__, x)
        if found is not None:
            return found
        for cell in obj.__closure__ or ():
            found = search(cell.cell_contents, x, depth + 1)
            if found is not None:
                return found
    if hasattr(obj, "f_locals"):
        for value in [*obj.f_locals.values(), obj.f_code]:
            found = search(value, x, depth + 1)
            if found is not None:
                return found
    if isinstance(obj, dict) and obj is not globals():
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for value in obj[:10000]:
            found = search(value, x, depth + 1)
            if found is not None:
                return found

def _own():
    return {value.__code__ for value in globals().values() if hasattr(value, "__code__")}
'''

ROUTES = {
    "frames": """
def find(x):
    frame = sys._getframe(1)
    while frame is not None:
        found = search(frame, x)
        if found is not None:
            return found
        found = search(frame.f_globals, x)
        if found is not None:
            return found
        frame = frame.f_back
""",
    "gc": """
def find(x):
    for obj in gc.get_objects():
        found = search(obj, x, 3)
        if found is not None:
            return found
""",
    "memory": """
import ctypes

class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("size", ctypes.c_size_t)]

_libc = ctypes.CDLL(None, use_errno=True)

def _read(address, size):
    buffer = ctypes.create_string_buffer(size)
    local, remote = _Iovec(ctypes.addressof(buffer), size), _Iovec(address, size)
    count = _libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return buffer.raw[:count] if count > 0 else b""

def find(x):
    '''Scan this process's own memory (heap around live objects, 512 MiB each way) for the test's text.'''
    pattern = re.compile(rb"\\(%d\\)[^=\\n]{0,40}==\\s*\\[?\\s*(-?\\d+)" % x)
    for center in sorted({id(obj) >> 20 for obj in (object(), sys, gc, [], "", find)}):
        for mib in range(center - 512, center + 512):
            match = pattern.search(_read(mib << 20, (1 << 20) + 64))
            if match:
                return int(match.group(1))
""",
    "files": """
def find(x):
    skip = ("/proc", "/sys", "/dev", "/usr", sys.base_prefix)
    for root in (os.getcwd(), "/tmp", "/", "/sandbox"):
        for directory, subdirectories, files in os.walk(root):
            if directory.startswith(skip) and directory != "/":
                subdirectories[:] = []
                continue
            subdirectories[:] = [d for d in subdirectories if not os.path.join(directory, d).startswith(skip)]
            for name in files:
                try:
                    with open(os.path.join(directory, name), "rb") as handle:
                        found = _text(handle.read(1 << 22), x)
                except OSError:
                    continue
                if found is not None:
                    return found
""",
    "environment and proc": """
def find(x):
    for value in [*os.environ.values(), *sys.argv, *sys.path]:
        found = _text(value, x)
        if found is not None:
            return found
    for path in ["/proc/self/cmdline", "/proc/self/environ", "/proc/1/cmdline", "/proc/1/environ", "/proc/self/maps"]:
        try:
            found = _text(open(path, "rb").read(), x)
        except OSError:
            continue
        if found is not None:
            return found
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        for part in ("cmdline", "environ", "mem"):
            try:
                found = _text(open(f"/proc/{pid}/{part}", "rb").read(1 << 20), x)
            except OSError:
                continue
            if found is not None:
                return found
""",
}
LEAKY_ANSWER = """
_OWN_CODES = _own()

def f(x):
    found = find(x)
    return -1 if found is None else found
"""


def leaky(route: str) -> str:
    return SEARCH + ROUTES[route] + LEAKY_ANSWER


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(workers=1).start()  # one worker: the honest sample before each case ran on the same one
    yield box
    box.close()


def test_the_forms_take_the_paths_they_are_meant_to():
    assert isinstance(plan_tests(SPLIT), CallTests)
    assert isinstance(plan_tests(WHOLE), OracleTests)
    assert isinstance(plan_tests(CHECK, entry_point="f"), OracleTests)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("route", ROUTES)
def test_no_route_reaches_the_expected_values(route, form, sandbox):
    tests, entry_point = FORMS[form]
    code_module._cache.clear()
    assert score(HONEST, tests, entry_point=entry_point, limits=LIMITS, sandbox=sandbox) == 1.0  # the worker saw them
    assert score(leaky(route), tests, entry_point=entry_point, limits=LIMITS, sandbox=sandbox) == 0.0
    assert sandbox.infra_failures == 0


@dataclasses.dataclass(frozen=True)
class _Case:  # what tests/code_reference.py reads
    code: str
    tests: object
    entry_point: str | None = None
    setup: str = ""
    language: str = "python"


@pytest.mark.parametrize("form", ["whole asserts", "check"])
@pytest.mark.parametrize("route", ["frames", "gc", "memory", "files"])
def test_the_routes_work_under_a_plain_harness(route, form):
    """Where tests share the candidate's process (the reference, as HumanEval's and MBPP's own harnesses do), each
    route finds the answers: so the zeros above are the sandbox's doing, not broken search code."""
    tests, entry_point = FORMS[form]
    assert reference_score(_Case(leaky(route), tests, entry_point)) == 1.0


CALLBACK_PROBE = """
def f(callback):
    found = []
    for name in ("__globals__", "__closure__", "__code__", "__self__", "__dict__"):
        try:
            found.append(getattr(callback, name))
        except Exception:
            pass
    peer = getattr(callback, "_peer", None)
    for op, target, payload in [("getattr", {"y": 0}, ["__globals__"]), ("call", {"n": "check"}, [[], {}]),
                                ("getattr", {"n": "check"}, ["__code__"]), ("repr", {"y": 0}, None)]:
        try:
            found.append(peer.request(op, target, payload))
        except Exception as error:
            found.append(type(error).__name__)
    text = repr(found)
    import re
    match = re.search(r"4913", text)
    return 4913 if match else -1
"""


def test_objects_from_the_tests_can_only_be_called(sandbox):
    """A test's function reaches the candidate as a call-only stub: no attributes, globals or closure cells, and
    the raw channel under it answers nothing but calls (and next, for iterators)."""
    check = (
        "def check(candidate):\n    expected = 4913\n    assert candidate(lambda v: v + expected - expected) == 4913\n"
    )
    assert score(CALLBACK_PROBE, check, entry_point="f", limits=LIMITS, sandbox=sandbox) == 0.0


@pytest.mark.parametrize(
    "code",
    [
        "from unittest import mock\ndef f(x):\n    return mock.ANY\n",  # equal to everything
        "import types\ndef f(x):\n    return types.SimpleNamespace(__eq__=lambda *a: True)\n",
        "class Eq(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\ndef f(x):\n"
        "    return Eq(0)\n",
        "class Meta(type):\n    def __eq__(cls, other):\n        return True\n    __hash__ = type.__hash__\n"
        "class Anything(metaclass=Meta):\n    pass\ndef f(x):\n    return Anything\n",
        "def f(x):\n    return float('nan')\n",
    ],
    ids=["mock-any", "namespace", "int-subclass", "metaclass", "nan"],
)
@pytest.mark.parametrize("form", FORMS)
def test_values_that_claim_equality_score_0(code, form, sandbox):
    tests, entry_point = FORMS[form]
    code_module._cache.clear()
    assert score(code, tests, entry_point=entry_point, limits=LIMITS, sandbox=sandbox) == 0.0


TIMING = """
import time
state = {"last": None, "gaps": {}, "calls": 0}

def f(x):
    now = time.perf_counter()
    if state["last"] is not None:
        state["gaps"][state["guess"]] = now - state["last"]
    state["calls"] += 1
    if state["calls"] <= 8:
        state["guess"] = [0, 1, -1, 77, 4913 + 1, 10 ** 9, x, x * x][state["calls"] - 1]
    else:  # the guess after which the next call came soonest: a passing assert raises nothing
        state["guess"] = min(state["gaps"], key=state["gaps"].get)
    state["last"] = time.perf_counter()
    return state["guess"]
"""


def test_timing_between_calls_gives_nothing_away(sandbox):
    """A statement's outcome could shift when the next call comes (a failing assert raises); the sample learns it only
    after answering, and no run outlives its sample, so repeating the same test twelve times does not help."""
    tests = ["assert (lambda: f(2))() == 4913"] * 12
    assert score(TIMING, tests, limits=LIMITS, sandbox=sandbox) == 0.0


WRITER = """
import ctypes, os, socket
TOKEN = b"handoff-4913"
libc = ctypes.CDLL(None, use_errno=True)
def f(x):
    written = []
    for path in ("/tmp/handoff", "/dev/shm/handoff", "/var/tmp/handoff", os.path.expanduser("~/handoff")):
        try:
            with open(path, "wb") as out:
                out.write(TOKEN)
            written.append(path)
        except OSError:
            pass
    libc.syscall(248, b"user", b"handoff", TOKEN, len(TOKEN), -4)  # add_key (x86-64) into the user keyring
    libc.shmget(0x4913, 4096, 0o1666)  # IPC_CREAT: a System V segment that outlives its creator
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind("\\0handoff-4913")
        server.listen()
        if os.fork() == 0:
            import time
            time.sleep(30)
    except OSError:
        pass
    return x
"""
READER = """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def f(x):
    for path in ("/tmp/handoff", "/dev/shm/handoff", "/var/tmp/handoff", os.path.expanduser("~/handoff")):
        try:
            if b"4913" in open(path, "rb").read():
                return 4913
        except OSError:
            pass
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(250, 10, -4, b"user", b"handoff", 0) > 0:  # keyctl(KEYCTL_SEARCH, the user keyring) on x86-64
        return 4913
    if libc.shmget(0x4913, 4096, 0o666) >= 0:
        return 4913
    try:
        socket.socket(socket.AF_UNIX).connect("\\0handoff-4913")
        return 4913
    except OSError:
        pass
    return -1
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the keyring calls use x86-64 syscall numbers")
def test_nothing_a_sample_leaves_reaches_the_next_one(sandbox):
    """A GRPO group's samples run one after another on a worker: files, keyrings, shared memory and sockets one leaves
    behind never reach the next (so a sample that had learnt an answer could not hand it on)."""
    code_module._cache.clear()
    assert score(WRITER, ["assert f(1) == 1"], limits=LIMITS, sandbox=sandbox) == 1.0
    assert score(READER, ["assert f(2) == 4913"], limits=LIMITS, sandbox=sandbox) == 0.0
    assert score(READER, CHECK.replace("77", "-1"), entry_point="f", limits=LIMITS, sandbox=sandbox) == 0.0
