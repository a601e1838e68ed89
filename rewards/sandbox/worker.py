"""Fork-server workers for untrusted code; `rewards.sandbox` starts one pair per slot inside a bwrap jail.

Standalone on purpose (standard library only): inside the jail these files and the Python standard library are all
there is. At start the worker takes user, mount, pid, network, IPC and UTS namespaces of its own (so it may make
more without privileges) and lives on as pid 1 of its pid namespace. It then forks the *oracle server*, before any
job arrives, and goes on as the *candidate server*:

- the candidate server is sent the model's code and the inputs of its tests, never a test: no run forked from it can
  find an expected value anywhere in its memory (frames, objects, heap, freed pages), because none was ever there;
- the oracle server, in a mount namespace with a /tmp of its own, is sent trusted test code (HumanEval `check`
  functions, asserts that cannot be split) and runs it against a candidate run through two pipes (`runs.Peer`).

Each server runs one job at a time, every untrusted run a fork into fresh pid, network, IPC and UTS namespaces (the
server `unshare`s them, forks, and `setns` back to its own), so the run is pid 1 of its own pid namespace and
everything it starts dies with it. The run drops every capability, and gets rlimits, a wall-clock SIGKILL, capped
output and a scratch directory that is wiped afterwards.

Nothing the untrusted process reports is a verdict: it sends back values, output and exit status, and the trusted
side compares. Protocol on each server's socket: frames of a 4-byte big-endian length and a UTF-8 JSON object; a
job that needs pipe ends gets them as SCM_RIGHTS ancillary data with its first byte.
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import gc
import json
import math
import os
import resource
import select
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `-I` leaves the script's own directory out
import runs  # noqa: E402  (and, through it, codec: imported before any run forks, so no run pays for it)

sys.path.pop(0)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER, PR_SET_SECCOMP = 1, 4, 38, 36, 22
DRAIN_GRACE_S = 1.0  # after a run ends, how long its pipes may take to reach EOF
MAX_FDS_PER_FRAME = 4
COMPILER_DIAGNOSTICS = 4096  # bytes of a compiler's stderr kept for the trusted side's log
_write = os.write  # held before any untrusted code runs in a forked child, which may rebind os.write
_write_all = runs.write_all

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


# ---------------------------------------------------------------------------------------------------- seccomp

# add_key, request_key, keyctl by syscall ABI (audit arch): runs share the worker's user namespace, and with it the
# kernel keyrings of their uid, which would carry data from one sample to the next.
_KEYRING_SYSCALLS = {
    "x86_64": [(0xC000003E, (248, 249, 250)), (0x40000003, (286, 287, 288))],  # x86-64 (and x32), i386
    "aarch64": [(0xC00000B7, (217, 218, 219)), (0x40000028, (309, 310, 311))],  # arm64, arm
}
_X32_SYSCALL_BIT = 0x40000000
_BPF_LOAD, _BPF_JEQ, _BPF_JGE, _BPF_RETURN = 0x20, 0x15, 0x35, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_EPERM = 0x7FFF0000, 0x00050001


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def keyring_filter(machine: str) -> _SockFprog:
    """A seccomp program that fails the keyring calls with EPERM and allows everything else."""
    if machine not in _KEYRING_SYSCALLS:
        raise OSError(f"no keyring filter for {machine}: the runs' keyrings would carry data between samples")
    program: list[tuple[int, int, int | str, int]] = [(_BPF_LOAD, 0, 0, 4)]  # seccomp_data.arch
    for arch, numbers in _KEYRING_SYSCALLS[machine]:
        block = [(_BPF_LOAD, 0, 0, 0)]  # seccomp_data.nr
        if arch == 0xC000003E:
            block.append((_BPF_JGE, "deny", 0, _X32_SYSCALL_BIT))
        block += [(_BPF_JEQ, "deny", 0, number) for number in numbers] + [(_BPF_RETURN, 0, 0, _SECCOMP_RET_ALLOW)]
        program.append((_BPF_JEQ, 0, len(block), arch))
        program += block
    program += [(_BPF_RETURN, 0, 0, _SECCOMP_RET_ALLOW), (_BPF_RETURN, 0, 0, _SECCOMP_RET_EPERM)]
    deny = len(program) - 1
    array_type = _SockFilter * len(program)
    instructions = array_type(*(_SockFilter(code, deny - index - 1 if jt == "deny" else jt, jf, k)
                                for index, (code, jt, jf, k) in enumerate(program)))  # fmt: skip
    prog = _SockFprog(len(program), ctypes.cast(instructions, ctypes.POINTER(_SockFilter)))
    prog.instructions = instructions  # kept alive with the program that points at them
    return prog


# ---------------------------------------------------------------------------------------------------- framing


class Channel:
    """A server's socket to the trusted side: frames in (with any pipe ends they carry), frames out."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.buffer = b""
        self.fds: list[int] = []

    def _fill(self) -> bool:
        data, ancillary, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(MAX_FDS_PER_FRAME * 4))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self.fds.extend(fds)
        self.buffer += data
        return bool(data)

    def read(self) -> tuple[dict, list[int]] | None:
        """The next job and the pipe ends it came with, or None at EOF."""
        while len(self.buffer) < 4:
            if not self._fill():
                return None
        size = int.from_bytes(self.buffer[:4], "big")
        while len(self.buffer) < 4 + size:
            if not self._fill():
                return None
        body, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
        job = json.loads(body)
        count = job.get("fds", 0)
        fds, self.fds = self.fds[:count], self.fds[count:]
        if len(fds) != count:
            raise OSError("a job arrived without its pipe ends")
        return job, fds

    def write(self, message: dict) -> None:
        self.sock.sendall(encode_frame(message))


def encode_frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return len(body).to_bytes(4, "big") + body


def _emit(fd: int, message: dict) -> None:
    """One JSON line on a run's channel."""
    _write_all(fd, (json.dumps(message) + "\n").encode())


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
    """Drains one pipe of a run and keeps up to `cap` bytes; past that it kills the run (if `enforce`)."""

    def __init__(self, fd: int, run: Run, cap: int, enforce: bool = True):
        self.fd, self.run, self.cap, self.enforce = fd, run, cap, enforce
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
            if self.enforce:
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
        self.role = "candidate"
        shared_user_namespace = config["jail"] or self.sample_namespaces
        self.keyrings = keyring_filter(os.uname().machine) if shared_user_namespace else None
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

    def spawn(self, target, child_fds: dict[int, int], limits: dict, keep: frozenset[int] = frozenset()) -> Run:
        """Fork the run into fresh namespaces: `child_fds` maps its fd numbers to the worker's pipe ends (closed here
        afterwards, except those in `keep`). Raises OSError when the kernel refuses (an infrastructure failure)."""
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
        for fd in set(child_fds.values()) - {self.devnull} - keep:
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
            if self.keyrings is not None:
                _check(_libc.prctl(PR_SET_SECCOMP, 2, ctypes.byref(self.keyrings), 0, 0), "seccomp")
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
        hangup: tuple[int, Run] | None = None,
    ) -> bool:
        """Drive `runs` until they end or the wall clock runs out (then SIGKILL). Returns True on timeout.

        A run is over when its outer child exits, not at EOF: the pipes are drained afterwards, for a grace period.
        `hangup`: (fd, run): kill the run once nothing holds the other end of that pipe any more.
        """
        deadline = time.monotonic() + timeout
        drain_until = None
        open_readers = {reader.fd: reader for reader in readers}
        live = {run.pidfd: run for run in runs}
        stdin_fd, stdin_data = stdin or (-1, b"")
        hangup_fd, hangup_run = hangup or (-1, None)
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
            if hangup_fd >= 0:
                poller.register(hangup_fd, 0)  # reports POLLHUP only
            for fd, _ in poller.poll(max(wait, 0.001) * 1000):
                if fd in live:
                    live.pop(fd).reap()
                elif fd == hangup_fd:
                    hangup_run.kill("its oracle finished")
                    hangup_fd = -1
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
        capture_stderr: bool = False,
        results: bool = False,
        files: dict[str, bytes] | None = None,
        keep_file: str | None = None,
    ) -> dict:
        """One untrusted run with the usual plumbing, in a scratch directory that holds `files` and is wiped after.

        The outcome carries `stdout`/`stderr`/`results` text where asked, and the bytes of `keep_file` under "kept".
        stdout is capped at `max_output`, results at `max_results`, stderr at COMPILER_DIAGNOSTICS.
        """
        for name, content in (files or {}).items():
            path = os.path.join(self.scratch, name)
            with open(path, "wb") as handle:
                handle.write(content)
            os.chmod(path, 0o755)
        child_fds: dict[int, int] = {}
        read_ends: dict[str, int] = {}
        stdin = None
        if stdin_data is None:
            child_fds[0] = self.devnull
        else:
            child_fds[0], stdin_write = os.pipe()
            os.set_blocking(stdin_write, False)
            stdin = (stdin_write, stdin_data)
        for number, name, wanted in ((1, "stdout", capture_stdout), (2, "stderr", capture_stderr),
                                     (3, "results", results)):  # fmt: skip
            if wanted:
                read_ends[name], child_fds[number] = os.pipe()
            elif number < 3:
                child_fds[number] = self.devnull
        run = self.spawn(target, child_fds, limits)
        caps = {"stdout": limits["max_output"], "stderr": COMPILER_DIAGNOSTICS, "results": limits["max_results"]}
        pipe_readers = {name: Reader(fd, run, caps[name], name != "stderr") for name, fd in read_ends.items()}
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

    def handle(self, job: dict, fds: list[int]) -> dict:
        kind, limits = job["kind"], job["limits"]
        if (kind == "python_oracle") != (self.role == "oracle"):
            raise ValueError(f"the {self.role} server does not take {kind!r} jobs")
        cap = limits["max_output"]
        if kind == "python_calls":
            target = lambda: runs.run_calls(job["source"], job["expressions"], cap)  # noqa: E731
            return {"runs": [self.run_one(target, limits, results=True)]}
        if kind == "python_compile":
            return {"runs": [self.run_one(lambda: runs.run_compile(job["source"]), limits, results=True)]}
        if kind == "python_io":
            target = lambda: runs.run_main(job["source"])  # noqa: E731
            return {
                "runs": [
                    self.run_one(target, limits, stdin_data=data.encode(), capture_stdout=True)
                    for data in job["inputs"]
                ]
            }
        if kind == "python_serve":
            return {"runs": [self.run_candidate_server(job, fds, limits)]}
        if kind == "python_oracle":
            return {"runs": [self.run_oracle(job, fds, limits)]}
        if kind == "native":
            return {"runs": self.run_native(job, limits)}
        raise ValueError(f"unknown job kind {kind!r}")

    def run_candidate_server(self, job: dict, fds: list[int], limits: dict) -> dict:
        """The candidate side of an oracle job: requests in on fd 3, answers out on fd 4. The run ends when the oracle
        run does (nothing holds the requests pipe's write end any more), or at its own time limit."""
        requests, answers = fds
        null = self.devnull
        run = self.spawn(
            lambda: runs.run_candidate_server(job["source"], job["value_classes"], limits["max_output"]),
            {0: null, 1: null, 2: null, 3: requests, 4: answers},
            limits,
            keep=frozenset({requests}),
        )
        timed_out = self.collect([run], [], limits["timeout"], hangup=(requests, run))
        os.close(requests)
        self._wipe_scratch()
        return run.outcome() | {"timed_out": timed_out}

    def run_oracle(self, job: dict, fds: list[int], limits: dict) -> dict:
        """The trusted side of an oracle job: answers in on fd 3, requests out on fd 4, verdicts on fd 5."""
        answers, requests = fds
        verdicts_read, verdicts_write = os.pipe()
        null = self.devnull
        run = self.spawn(
            lambda: runs.run_oracle(job["setup"], job["test_source"], job["statements"], job["proxies"],
                                    job["value_classes"], limits["max_output"]),
            {0: null, 1: null, 2: null, 3: answers, 4: requests, 5: verdicts_write},
            limits,
        )  # fmt: skip
        verdicts = Reader(verdicts_read, run, limits["max_results"])
        timed_out = self.collect([run], [verdicts], limits["timeout"])
        self._wipe_scratch()
        return run.outcome() | {
            "timed_out": timed_out,
            "results": verdicts.text(),
            "results_truncated": verdicts.truncated,
        }

    def run_native(self, job: dict, limits: dict) -> list[dict]:
        """Compile (one run), then one run per stdin input; the binary lives in the worker between runs."""
        compile_limits = limits | {"timeout": limits["compile_timeout"], "memory": limits["compile_memory"]}
        compiler = job["compile"]
        compiled = self.run_one(
            lambda: _exec(compiler),
            compile_limits,
            capture_stderr=True,
            files={job["source_name"]: job["source"].encode()},
            keep_file="prog",
        )
        binary = compiled.pop("kept", None)
        runs_done = [compiled]
        if compiled["exit"] != 0 or job["inputs"] is None or binary is None:
            return runs_done
        for data in job["inputs"]:
            runs_done.append(
                self.run_one(
                    lambda: _exec(["./prog"]),
                    limits,
                    stdin_data=data.encode(),
                    capture_stdout=True,
                    files={"prog": binary},
                )
            )
        return runs_done

    def become_oracle_server(self) -> None:
        """The oracle server's own scratch: a private /tmp where there is a mount namespace, else its own directory."""
        self.role = "oracle"
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if self.config["jail"] or self.sample_namespaces:
            _check(_libc.unshare(CLONE_NEWNS), "unshare")
            options = f"size={self.config['scratch_bytes']},nr_inodes={self.config['scratch_inodes']},mode=0777"
            _check(_libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()), "mount /tmp")
        else:
            self.scratch = self.config["oracle_scratch"]

    def serve(self, channel: Channel) -> None:
        gc.freeze()  # what exists now is shared with every run: keep the runs' collector off those pages
        channel.write({"ready": True})
        while (message := channel.read()) is not None:
            job, fds = message
            try:
                response = self.handle(job, fds)
            except Exception as error:  # a bug or an exhausted resource here: the parent scores None, not 0
                response = {"infra": f"{type(error).__name__}: {error}"}
                for fd in fds:
                    _close_quietly(fd)
            while True:  # reap runs orphaned by a kill (their outer child died first)
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
            channel.write(response)


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


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def main() -> None:
    """Start as configured (argv[1]), fork the oracle server, serve as the candidate server."""
    config = json.loads(sys.argv[1])
    sys.argv = ["main.py"]  # what a program run as `python main.py` sees
    runs.install_site_builtins()
    candidate = Channel(config["candidate_fd"])
    try:
        worker = Worker(config)
        pid = os.fork()
        if pid == 0:
            candidate.sock.close()
            try:
                worker.become_oracle_server()
            except Exception as error:
                Channel(config["oracle_fd"]).write({"error": f"{type(error).__name__}: {error}"})
                os._exit(1)
            worker.serve(Channel(config["oracle_fd"]))
            os._exit(0)
        os.close(config["oracle_fd"])
    except Exception as error:
        candidate.write({"error": f"{type(error).__name__}: {error}"})
        sys.exit(1)
    worker.serve(candidate)


if __name__ == "__main__":
    main()
