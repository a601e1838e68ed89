"""Fork-server worker for untrusted code; `rewards.sandbox` starts one per slot inside a bwrap jail.

Standalone on purpose (standard library only): inside the jail this file and the Python standard library are all
there is. At start the worker takes user, mount, pid, network, IPC and UTS namespaces of its own (so it may make
more without privileges) and lives on as pid 1 of its pid namespace. A worker runs one job at a time. Every
untrusted run is a fork into fresh pid, network, IPC and UTS namespaces (the worker `unshare`s them, forks, and
`setns` back to its own), so the run is pid 1 of its own pid namespace and everything it starts dies with it. The
run drops every capability, and gets rlimits, a wall-clock SIGKILL, capped output and a scratch directory that is
wiped afterwards.

Nothing the untrusted process reports is a verdict: it sends back values (repr), output and exit status, and the
trusted side compares. Protocol on fd 0 / fd 1: frames of a 4-byte big-endian length and a UTF-8 JSON object.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import fcntl
import gc
import json
import math
import os
import resource
import select
import signal
import sys
import time
from collections import Counter

_write = os.write  # held before any untrusted code runs in a forked child, which may rebind os.write

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 4, 38, 36
DRAIN_GRACE_S = 1.0  # after a run ends, how long its pipes may take to reach EOF

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl({option})")


class _CapabilityHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def _drop_capabilities() -> None:
    """Clear every capability (the worker holds all of them in its user namespace; a forked Python never execs)."""
    no_capabilities = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; two 32-bit words each
    _check(_libc.capset(ctypes.byref(_CapabilityHeader(0x20080522, 0)), no_capabilities), "capset")


# ---------------------------------------------------------------------------------------------------- framing


def read_frame(fd: int) -> dict | None:
    """The next frame on `fd`, or None at EOF."""
    header = _read_exact(fd, 4)
    if header is None:
        return None
    body = _read_exact(fd, int.from_bytes(header, "big"))
    if body is None:
        return None
    return json.loads(body)


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def encode_frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return len(body).to_bytes(4, "big") + body


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[_write(fd, data) :]


def _emit(fd: int, message: dict) -> None:
    """One JSON line on a run's result channel."""
    _write_all(fd, (json.dumps(message) + "\n").encode())


# ---------------------------------------------------------------------------------------------------- values


def literal_value(text: str):
    """The value whose repr() is `text`: literals, containers, set()/frozenset(), inf/nan, and nothing that runs code.

    Values cross every process boundary this way, so a rigged `__eq__` or `__hash__` never reaches the trusted side.
    Raises ValueError for anything else.
    """
    try:
        return _literal(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, TypeError, RecursionError, MemoryError) as error:  # unhashable set member, too deep, ...
        raise ValueError(f"not a literal: {type(error).__name__}") from None


MAX_EQUAL_HASHES = 16  # distinct items of one container that may share a hash value
_NON_FINITE = {"inf": math.inf, "nan": math.nan, "infj": complex(0, math.inf), "nanj": complex(0, math.nan)}
_NUMBER = (int, float, complex)


def _literal(node: ast.expr):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        items = _spread_hashes([_literal_item(element) for element in node.elts])
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        keys = _spread_hashes([_literal_item(key) for key in node.keys])
        return dict(zip(keys, (_literal_item(value) for value in node.values), strict=True))
    if isinstance(node, ast.Name) and node.id in _NON_FINITE:
        return _NON_FINITE[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _literal(node.operand)
        if type(operand) in _NUMBER:
            return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):  # complex: (1+2j), (-0-1j)
        left, right = _literal(node.left), _literal(node.right)
        if type(left) in (int, float) and type(right) is complex:
            return left + right if isinstance(node.op, ast.Add) else left - right
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("set", "frozenset")
        and len(node.args) <= 1
        and not node.keywords
    ):
        return {"set": set, "frozenset": frozenset}[node.func.id](*(_literal(arg) for arg in node.args))
    raise ValueError(f"not a literal: {ast.dump(node)[:80]}")


def _literal_item(node: ast.expr):
    return node.value if type(node) is ast.Constant else _literal(node)  # the common case, without a call


def _spread_hashes(items: list) -> list:
    """`items`, unless many distinct ones share a hash value (ints are easy to collide: multiples of 2**61 - 1).

    Putting such items in a set or dict, here or later in a test like `set(result) == ...`, takes quadratic time:
    a 1 MiB answer could stall the trusted side for many seconds.
    """
    if len(items) <= MAX_EQUAL_HASHES:
        return items
    hashable = [item for item in items if type(item).__hash__ is not None]  # lists never go into a set as they are
    crowded = {value for value, count in Counter(map(hash, hashable)).items() if count > MAX_EQUAL_HASHES}
    for value in crowded:  # equal items share a hash harmlessly: count the distinct ones
        distinct: list = []
        for item in hashable:
            if hash(item) == value and all(item != other for other in distinct):
                distinct.append(item)
                if len(distinct) > MAX_EQUAL_HASHES:
                    raise ValueError("not a literal: too many distinct values with one hash")
    return items


# ---------------------------------------------------------------------------------------------------- python runs
# Each runs in the forked child (the untrusted run) and ends the process itself.


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # the program may have replaced or closed them
            pass


def _exit_code(error: SystemExit) -> int:
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code & 0xFF
    print(error.code, file=sys.stderr)
    return 1


def run_python_calls(source: str, expressions: list[str]) -> None:
    """Define the candidate, then evaluate each call expression; send back repr() of each result on fd 3."""
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(source, "<candidate>", "exec"), namespace)
    except BaseException as error:
        _emit(3, {"module_error": type(error).__name__})
        os._exit(1)
    for index, expression in enumerate(expressions):
        try:
            text = repr(eval(compile(expression, "<test>", "eval"), namespace))
        except BaseException as error:
            _emit(3, {"i": index, "e": type(error).__name__})
        else:
            _emit(3, {"i": index, "r": text})
    os._exit(0)


def run_python_compile(source: str) -> None:
    """Compile only (no candidate code runs), result on fd 3."""
    try:
        compile(source, "<candidate>", "exec")
    except BaseException as error:
        _emit(3, {"ok": False, "e": type(error).__name__})
    else:
        _emit(3, {"ok": True})
    os._exit(0)


def run_python_main(source: str) -> None:
    """Run the program as __main__ with the real stdin/stdout (stdin/stdout tests)."""
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fresh objects over the run's own fds 0-2
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    code = 0
    try:
        exec(compile(source, "<candidate>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as error:
        code = _exit_code(error)
    except BaseException as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        code = 1
    _flush_stdio()
    os._exit(code)


def run_python_server(source: str) -> None:
    """Candidate side of an oracle run: define the candidate, then answer calls (fd 3 in, fd 4 out)."""
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    exec(compile(source, "<candidate>", "exec"), namespace)  # an exception ends the run: the oracle sees EOF
    requests = os.fdopen(3, "rb")
    while line := requests.readline():
        try:
            request = json.loads(line)
            args, kwargs = literal_value(request["a"]), literal_value(request["k"])
            text = repr(namespace[request["f"]](*args, **kwargs))
        except BaseException as error:
            _emit(4, {"e": type(error).__name__})
        else:
            _emit(4, {"r": text})
    os._exit(0)


class CandidateError(Exception):
    """Raised in the oracle where a call to the candidate failed or returned something that is not a literal."""


def run_python_oracle(setup: str, test_source: str, statements: list[str], proxies: list[str], max_line: int) -> None:
    """Trusted side of an oracle run: the tests run here, with no candidate code in the process.

    Each name in `proxies` becomes a stub that forwards its call to the candidate process (fd 4 out, fd 3 in) and
    rebuilds the answer with `literal_value`. One verdict line per statement on fd 5.
    """
    namespace = {"__name__": "__oracle__", "__builtins__": builtins}
    answers = os.fdopen(3, "rb")

    def proxy_for(name: str):
        def proxy(*args, **kwargs):
            _emit(4, {"f": name, "a": repr(args), "k": repr(kwargs)})
            line = answers.readline(max_line + 1)
            if not line.endswith(b"\n"):
                raise CandidateError("no answer")
            answer = json.loads(line)
            if "r" not in answer:
                raise CandidateError(str(answer.get("e")))
            try:
                return literal_value(answer["r"])
            except ValueError:
                raise CandidateError("answer is not a literal") from None

        proxy.__name__ = name
        return proxy

    try:
        exec(compile(setup, "<setup>", "exec"), namespace)
        exec(compile(test_source, "<test>", "exec"), namespace)
    except BaseException as error:
        _emit(5, {"setup_error": f"{type(error).__name__}: {error}"[:500]})
        os._exit(1)
    namespace.update({name: proxy_for(name) for name in proxies})
    for index, statement in enumerate(statements):
        try:
            exec(compile(statement, "<test>", "exec"), namespace)
        except BaseException as error:
            _emit(5, {"t": index, "ok": False, "e": type(error).__name__})
        else:
            _emit(5, {"t": index, "ok": True})
    os._exit(0)


# ---------------------------------------------------------------------------------------------------- runs


class Run:
    """One untrusted run as the worker sees it: its process, pid 1 of its own pid namespace (unless those are off)."""

    def __init__(self, pid: int, control: int, no_namespace: bool):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.control = control  # carries a setup failure, before the untrusted program starts
        self.no_namespace = no_namespace
        self.status: int | None = None
        self.infra: str | None = None
        self.killed_for: str | None = None
        self.done = False

    def kill(self, reason: str) -> None:
        """SIGKILL the run; as pid 1 of its namespace, its death takes every process it started along."""
        if not self.done and self.killed_for is None:
            self.killed_for = reason
            (os.killpg if self.no_namespace else os.kill)(self.pid, signal.SIGKILL)

    def reap(self) -> None:
        _, self.status = os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        report = b"".join(iter(lambda: os.read(self.control, 65536), b""))
        os.close(self.control)
        for line in report.splitlines():
            self.infra = json.loads(line).get("infra", self.infra)
        if self.no_namespace:  # without a pid namespace, the process group is the best handle on leftovers
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.done = True

    def outcome(self) -> dict:
        exit_code = signal_number = None
        if self.status is not None:
            if os.WIFEXITED(self.status):
                exit_code = os.WEXITSTATUS(self.status)
            elif os.WIFSIGNALED(self.status):
                signal_number = os.WTERMSIG(self.status)
        return {"exit": exit_code, "signal": signal_number, "killed": self.killed_for, "infra": self.infra}


class Reader:
    """Drains one pipe of a run and keeps up to `cap` bytes; past that it kills the run."""

    def __init__(self, fd: int, run: Run, cap: int):
        self.fd, self.run, self.cap = fd, run, cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def feed(self) -> bool:
        """Read once; False at EOF."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            os.close(self.fd)
            return False
        room = self.cap - self.size
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
            self.run.kill("output limit")
        self.chunks.append(chunk)
        self.size += len(chunk)
        return True

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


_RUN_NAMESPACES = {CLONE_NEWPID: "pid", CLONE_NEWIPC: "ipc", CLONE_NEWUTS: "uts", CLONE_NEWNET: "net"}


class Worker:
    def __init__(self, config: dict):
        self.config = config
        self.sample_namespaces = config["sample_namespaces"]
        self.run_namespaces = [flag for flag, name in _RUN_NAMESPACES.items() if name != "net" or config["network"]]
        self.home: dict[int, int] = {}  # namespace flag -> fd of the worker's own namespace, to return to
        self.scratch = (
            config["scratch"] or "/tmp"
        )  # a directory from the trusted side when there is no mount namespace
        self._enter_namespaces()
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.devnull = os.open(os.devnull, os.O_RDWR)  # stdin/stdout/stderr of runs that need none

    def _enter_namespaces(self) -> None:
        """Namespaces of the worker's own, which it may make more of without privileges.

        A mount namespace with a private, size-capped /tmp for the runs' scratch files. In the jail, also an
        unprivileged uid of its own first, and /proc hidden, so that runs have no pids to aim at. With per-run
        namespaces: pid, IPC, UTS and network namespaces too, the worker going on as pid 1 of its pid namespace (its
        first process only waits for it).
        """
        jail = self.config["jail"]
        if not (jail or self.sample_namespaces):
            return
        flags = CLONE_NEWUSER | CLONE_NEWNS | (sum(self.run_namespaces) if self.sample_namespaces else 0)
        uid = self.config["uid"]
        if jail and os.getuid() == 0 and uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        outer_uid, outer_gid = os.getuid(), os.getgid()
        _prctl(PR_SET_DUMPABLE, 1)  # changing uid made us non-dumpable, which locks our own /proc/self/*_map
        _check(_libc.unshare(flags), "unshare")
        for name, content in (("setgroups", "deny"), ("uid_map", f"0 {outer_uid} 1"), ("gid_map", f"0 {outer_gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(content)
        options = f"size={self.config['scratch_bytes']},nr_inodes={self.config['scratch_inodes']},mode=0777"
        _check(_libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()), "mount /tmp")
        if flags & CLONE_NEWPID:
            pid = os.fork()
            if pid:  # the first process: waits for the worker (pid 1 of the new namespace) and ends with it
                _, status = os.waitpid(pid, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            self.home = {flag: os.open(f"/proc/self/ns/{_RUN_NAMESPACES[flag]}", os.O_RDONLY)
                         for flag in self.run_namespaces}  # fmt: skip
        if jail:
            hide = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            _check(_libc.mount(b"tmpfs", b"/proc", b"tmpfs", hide, b"size=4k,nr_inodes=2,mode=0555"), "mount /proc")
        _prctl(PR_SET_DUMPABLE, 0)

    # -------------------------------------------------------------- spawning one run

    def spawn(self, target, child_fds: dict[int, int], limits: dict) -> Run:
        """Fork the run into fresh namespaces: `child_fds` maps its fd numbers to the worker's pipe ends (closed here
        afterwards). Raises OSError when the kernel refuses (an infrastructure failure)."""
        control_read, control_write = os.pipe()
        if self.sample_namespaces:
            _check(_libc.unshare(sum(self.run_namespaces)), "unshare")
        try:
            pid = os.fork()
        except OSError:
            self._return_home()
            raise
        if pid == 0:
            self._run_child(target, child_fds, limits, control_write)
        self._return_home()
        os.close(control_write)
        for fd in set(child_fds.values()) - {self.devnull}:
            os.close(fd)
        return Run(pid, control_read, not self.sample_namespaces)

    def _return_home(self) -> None:
        """Back to the worker's own namespaces (only the worker: the run keeps the fresh ones)."""
        for flag, fd in self.home.items():
            _check(_libc.setns(fd, flag), "setns")

    def _run_child(self, target, child_fds: dict[int, int], limits: dict, control: int) -> None:
        """The run itself: fds in place, limits on, privileges gone, then the untrusted program. Never returns."""
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            # Own session and process group: kill(0, ...) reaches a process group across pid namespaces, and the
            # worker's shares our uid, so without this `os.kill(os.getppid(), 9)` (ppid 0) would kill the worker.
            os.setsid()
            staged = {number: _fcntl_dup_high(fd) for number, fd in child_fds.items()}
            control = _fcntl_dup_high(control)
            for number, fd in staged.items():
                os.dup2(fd, number)
            _close_all_but({*staged, control})
            os.chdir(self.scratch)
            if self.config["rlimits"]:
                _set_rlimits(limits)
            _drop_capabilities()
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            _prctl(PR_SET_DUMPABLE, 0)
        except BaseException as error:
            _emit(control, {"infra": f"setting up a run: {type(error).__name__}: {error}"})
            os._exit(1)
        os.close(control)
        try:
            target()
        finally:
            os._exit(1)

    # -------------------------------------------------------------- collecting runs

    def collect(
        self,
        runs: list[Run],
        readers: list[Reader],
        timeout: float,
        stdin: tuple[int, bytes] | None = None,
        on_exit=None,
    ) -> bool:
        """Drive `runs` until they end or the wall clock runs out (then SIGKILL). Returns True on timeout.

        A run is over when its outer child exits, not at EOF: the pipes are drained afterwards, for a grace period.
        """
        deadline = time.monotonic() + timeout
        drain_until = None
        open_readers = {reader.fd: reader for reader in readers}
        live = {run.pidfd: run for run in runs}
        stdin_fd, stdin_data = stdin or (-1, b"")
        timed_out = False
        while live or open_readers:
            now = time.monotonic()
            if live and now >= deadline and not timed_out:
                timed_out = True
                for run in live.values():
                    run.kill("timeout")
            if not live:
                drain_until = drain_until or now + DRAIN_GRACE_S
                if now >= drain_until:
                    break
            wait = (drain_until if not live else deadline + DRAIN_GRACE_S if timed_out else deadline) - now
            poller = select.poll()
            for fd in (*open_readers, *live):
                poller.register(fd, select.POLLIN)
            if stdin_fd >= 0:
                poller.register(stdin_fd, select.POLLOUT)
            for fd, _ in poller.poll(max(wait, 0.001) * 1000):
                if fd in live:
                    run = live.pop(fd)
                    run.reap()
                    if on_exit:
                        on_exit(run)
                elif fd in open_readers:
                    if not open_readers[fd].feed():
                        del open_readers[fd]
                elif fd == stdin_fd:
                    stdin_data = _feed_stdin(stdin_fd, stdin_data)
                    if not stdin_data:
                        os.close(stdin_fd)
                        stdin_fd = -1
        for fd in open_readers:
            os.close(fd)
        if stdin_fd >= 0:
            os.close(stdin_fd)
        return timed_out

    def _wipe_scratch(self) -> None:
        _remove_contents(self.scratch)

    def run_one(
        self,
        target,
        limits: dict,
        *,
        stdin_data: bytes | None = None,
        capture_stdout: bool = False,
        results: bool = False,
        files: dict[str, bytes] | None = None,
        keep_file: str | None = None,
    ) -> dict:
        """One untrusted run with the usual plumbing, in a scratch directory that holds `files` and is wiped after.

        The outcome carries `stdout`/`results` text where asked, and the bytes of `keep_file` under "kept".
        """
        for name, content in (files or {}).items():
            path = os.path.join(self.scratch, name)
            with open(path, "wb") as handle:
                handle.write(content)
            os.chmod(path, 0o755)
        child_fds = {2: self.devnull}  # nothing reads a run's stderr
        read_ends: dict[str, int] = {}
        stdin = None
        if stdin_data is None:
            child_fds[0] = self.devnull
        else:
            child_fds[0], stdin_write = os.pipe()
            os.set_blocking(stdin_write, False)
            stdin = (stdin_write, stdin_data)
        for number, name, wanted in ((1, "stdout", capture_stdout), (3, "results", results)):
            if wanted:
                read_ends[name], child_fds[number] = os.pipe()
            elif number == 1:
                child_fds[1] = self.devnull
        run = self.spawn(target, child_fds, limits)
        pipe_readers = {name: Reader(fd, run, limits["max_output"]) for name, fd in read_ends.items()}
        timed_out = self.collect([run], list(pipe_readers.values()), limits["timeout"], stdin)
        outcome = run.outcome() | {"timed_out": timed_out}
        for name, reader in pipe_readers.items():
            outcome[name] = reader.text()
            outcome[f"{name}_truncated"] = reader.truncated
        if keep_file:
            path = os.path.join(self.scratch, keep_file)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    outcome["kept"] = handle.read(limits["file_size"])
        self._wipe_scratch()
        return outcome

    # -------------------------------------------------------------- jobs

    def handle(self, job: dict) -> dict:
        kind = job["kind"]
        limits = job["limits"]
        if kind == "python_calls":
            return {
                "runs": [
                    self.run_one(lambda: run_python_calls(job["source"], job["expressions"]), limits, results=True)
                ]
            }
        if kind == "python_compile":
            return {"runs": [self.run_one(lambda: run_python_compile(job["source"]), limits, results=True)]}
        if kind == "python_io":
            target = lambda: run_python_main(job["source"])  # noqa: E731
            return {
                "runs": [
                    self.run_one(target, limits, stdin_data=data.encode(), capture_stdout=True)
                    for data in job["inputs"]
                ]
            }
        if kind == "python_oracle":
            return {"runs": self.run_oracle(job, limits)}
        if kind == "native":
            return {"runs": self.run_native(job, limits)}
        raise ValueError(f"unknown job kind {kind!r}")

    def run_oracle(self, job: dict, limits: dict) -> list[dict]:
        """Candidate and oracle as two runs in separate namespaces, joined only by the call/answer pipes."""
        calls_read, calls_write = os.pipe()
        answers_read, answers_write = os.pipe()
        verdicts_read, verdicts_write = os.pipe()
        null = self.devnull
        candidate = self.spawn(
            lambda: run_python_server(job["source"]),
            {0: null, 1: null, 2: null, 3: calls_read, 4: answers_write},
            limits,
        )
        oracle = self.spawn(
            lambda: run_python_oracle(
                job["setup"], job["test_source"], job["statements"], job["proxies"], limits["max_output"]
            ),
            {0: null, 1: null, 2: null, 3: answers_read, 4: calls_write, 5: verdicts_write},
            limits,
        )
        verdicts = Reader(verdicts_read, oracle, limits["max_output"])

        def end_candidate_with_oracle(run: Run) -> None:
            if run is oracle:
                candidate.kill("oracle finished")

        timed_out = self.collect([candidate, oracle], [verdicts], limits["timeout"], on_exit=end_candidate_with_oracle)
        self._wipe_scratch()
        return [
            candidate.outcome() | {"timed_out": timed_out},
            oracle.outcome()
            | {"timed_out": timed_out, "results": verdicts.text(), "results_truncated": verdicts.truncated},
        ]

    def run_native(self, job: dict, limits: dict) -> list[dict]:
        """Compile (one run), then one run per stdin input; the binary lives in the worker between runs."""
        compile_limits = limits | {"timeout": limits["compile_timeout"], "memory": limits["compile_memory"]}
        compiler = job["compile"]
        compiled = self.run_one(
            lambda: _exec(compiler),
            compile_limits,
            files={job["source_name"]: job["source"].encode()},
            keep_file="prog",
        )
        binary = compiled.pop("kept", None)
        runs = [compiled]
        if compiled["exit"] != 0 or job["inputs"] is None or binary is None:
            return runs
        for data in job["inputs"]:
            runs.append(
                self.run_one(
                    lambda: _exec(["./prog"]),
                    limits,
                    stdin_data=data.encode(),
                    capture_stdout=True,
                    files={"prog": binary},
                )
            )
        return runs

    def serve(self) -> None:
        gc.freeze()  # what exists now is shared with every run: keep the runs' collector off those pages
        _write_all(1, encode_frame({"ready": True}))
        while (job := read_frame(0)) is not None:
            try:
                response = self.handle(job)
            except Exception as error:  # a bug or an exhausted resource here: the parent scores None, not 0
                response = {"infra": f"{type(error).__name__}: {error}"}
            while True:  # reap runs orphaned by a kill (their outer child died first)
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
            _write_all(1, encode_frame(response))


def _remove_contents(directory: str) -> None:
    """Empty a directory, whatever permissions a run left on what it made (the worker owns all of it)."""
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, 0o700)
            _remove_contents(entry.path)
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)


def _exec(argv: list[str]) -> None:
    """Replace the run with a native program, with the signal dispositions Python changed put back."""
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
    os.execv(argv[0], argv)


def _feed_stdin(fd: int, data: bytes) -> bytes:
    """Write what the pipe takes; what is left (empty once done, or once the run stopped reading)."""
    try:
        return data[_write(fd, data[:65536]) :]
    except BrokenPipeError:
        return b""


def _fcntl_dup_high(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD, 64)


def _close_all_but(keep: set[int]) -> None:
    low = 0
    for fd in sorted(number for number in keep if number >= 0):
        if low < fd:  # os.closerange(n, n) closes every fd from n up on CPython 3.11 (the bound wraps around)
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def _set_rlimits(limits: dict) -> None:
    for resource_id, value in (
        (resource.RLIMIT_CPU, math.ceil(limits["timeout"]) + 1),
        (resource.RLIMIT_AS, limits["memory"]),
        (resource.RLIMIT_FSIZE, limits["file_size"]),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_NPROC, limits["processes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(resource_id, (value, value))


def main() -> None:
    try:
        worker = Worker(json.loads(sys.argv[1]))
    except Exception as error:
        _write_all(1, encode_frame({"error": f"{type(error).__name__}: {error}"}))
        sys.exit(1)
    worker.serve()


if __name__ == "__main__":
    main()
