"""Executor for untrusted code: fork-server workers in long-lived bwrap jails, started once, talked to over sockets.

The trainer never forks per sample (a fork of a multi-GiB trainer costs ~0.17 s): it starts one jail per slot, and
each jail holds two fork servers (see `worker.py`): a candidate server, which is sent the model's code and its tests'
inputs and never a test, and an oracle server, which runs trusted test code against a candidate run through a pipe
pair the trainer hands both (values cross as `codec` messages). Each forks every run into fresh namespaces. Layers,
all on by default:

- jail: bwrap with its own pid/net/IPC/UTS namespaces, a read-only view of /usr and of this Python's install (nothing
  else of the host: no /home, /root, /work, /etc), empty environment, a dedicated uid per slot when started as root,
  a size-capped private /tmp per server and no visible /proc;
- per-run namespaces: pid (the run is pid 1: everything it starts dies with it), network (no interface at all, not
  even loopback), IPC, UTS; the run drops every capability, sets no_new_privs and cannot use the kernel keyrings
  (seccomp: they would outlive the run) (it is uid 0 only inside the worker's user namespace, which maps it to the
  slot's dedicated uid);
- per-run rlimits: CPU, address space, file size, open files, processes, no core files; plus a wall-clock SIGKILL and
  capped output, enforced by the worker;
- backstop, where cgroups are writable (root, or a delegated cgroup v2 subtree): a memory cap without swap and a
  process cap around each worker's jail, for what per-process rlimits cannot bound (many processes, each under
  RLIMIT_AS). Without it a warning is logged and the rlimits stand alone.

Host requirements: `bwrap` (Debian/Ubuntu: `apt-get install bubblewrap`) and user namespaces (`unshare -U true` works;
Debian/Ubuntu may need `sysctl -w kernel.unprivileged_userns_clone=1`, Ubuntu 24.04 also
`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`; containers need a seccomp profile that allows
`unshare`/`clone` with namespace flags). Without them the executor refuses to start (fail closed); running untrusted
code unsandboxed needs an explicit opt-in: `allow_unsandboxed=True` or `TRL_EXT_ALLOW_UNSANDBOXED=1`.
"""

from __future__ import annotations

import array
import atexit
import dataclasses
import itertools
import json
import logging
import os
import queue
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)

UNSANDBOXED_ENV = "TRL_EXT_ALLOW_UNSANDBOXED"
SLOT_UID_BASE = 1_300_000_000  # when started as root, slot i runs as this uid + i (unused by any account)
START_TIMEOUT_S = 30.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
WORKER_PATH = Path(__file__).with_name("worker.py")
JAIL_DIRECTORY = "/sandbox"
JAIL_FILES = ("worker.py", "runs.py", "codec.py")  # what the jail shows of this package


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start on this host; the message says what to install or enable."""


@dataclasses.dataclass(frozen=True)
class Isolation:
    """Which isolation layers are on. Anything short of all of them needs the unsandboxed opt-in."""

    jail: bool = True
    sample_namespaces: bool = True
    sample_network: bool = True
    rlimits: bool = True

    @property
    def full(self) -> bool:
        return self.jail and self.sample_namespaces and self.sample_network and self.rlimits

    def describe(self) -> str:
        off = [field.name for field in dataclasses.fields(self) if not getattr(self, field.name)]
        return "full isolation" if not off else "WITHOUT " + ", ".join(off)


FULL_ISOLATION = Isolation()
NO_ISOLATION = Isolation(jail=False, sample_namespaces=False, sample_network=False, rlimits=True)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-run limits. Python runs and test runs use `timeout`/`memory`; compiler runs the `compile_*` pair."""

    timeout: float = 5.0  # wall-clock seconds; the CPU rlimit is this + 1 s
    memory: int = 1 << 30  # address space (RLIMIT_AS), bytes
    file_size: int = 16 << 20  # largest file a run may write, bytes
    open_files: int = 64
    processes: int = 64  # processes of the run's own user namespace
    max_output: int = 16 << 20  # largest stdout of a run, and largest value crossing; past it, that test fails
    max_results: int = 64 << 20  # all the values one run sends back together; past it the run is killed
    compile_timeout: float = 20.0
    compile_memory: int = 2 << 30

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"Limits.{field.name} must be positive, got {getattr(self, field.name)!r}")


DEFAULT_LIMITS = Limits()


def default_workers() -> int:
    """Cores available to this process, divided among the local ranks of a distributed run."""
    cores = len(os.sched_getaffinity(0))
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def unsandboxed_opt_in(allow_unsandboxed: bool | None) -> bool:
    if allow_unsandboxed is not None:
        return allow_unsandboxed
    return os.environ.get(UNSANDBOXED_ENV, "").strip().lower() in ("1", "true", "yes")


def _warn_unsandboxed(isolation: Isolation, why: str) -> None:
    message = (
        f"\n{'!' * 100}\n!!! RUNNING UNTRUSTED MODEL-WRITTEN CODE {isolation.describe().upper()} ({why}).\n"
        "!!! It can read your files and secrets, reach the network and outlive its sample. Use only on a "
        f"throwaway machine.\n{'!' * 100}"
    )
    logger.warning(message)


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path for a v1 controller, or for the v2 hierarchy (controller "")."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") if controller else not controllers:
            return path.lstrip("/")
    raise OSError(f"no {controller or 'v2'} cgroup in /proc/self/cgroup")


class Backstop:
    """A cgroup around one worker's jail: memory (no swap) and process caps. Raises OSError where not writable."""

    def __init__(self, name: str, memory: int, processes: int):
        if (CGROUP_ROOT / "cgroup.controllers").exists():  # cgroup v2
            groups = [(CGROUP_ROOT / _own_cgroup("") / name, {"memory.max": memory, "pids.max": processes},
                       {"memory.swap.max": 0})]  # fmt: skip
        else:  # cgroup v1, one hierarchy per controller
            groups = [
                (CGROUP_ROOT / "memory" / _own_cgroup("memory") / name, {"memory.limit_in_bytes": memory},
                 {"memory.memsw.limit_in_bytes": memory}),
                (CGROUP_ROOT / "pids" / _own_cgroup("pids") / name, {"pids.max": processes}, {}),
            ]  # fmt: skip
        self.directories: list[Path] = []
        try:
            for directory, required, optional in groups:
                directory.mkdir()
                self.directories.append(directory)
                for setting, value in required.items():
                    (directory / setting).write_text(str(value))
                for setting, value in optional.items():  # swap accounting may be off: then there is no swap to cap
                    if (directory / setting).exists():
                        (directory / setting).write_text(str(value))
        except OSError:
            self.remove()
            raise

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv`, started through a shell that first moves itself into the cgroups (so nothing escapes them)."""
        script = 'for f do [ "$f" = -- ] && break; echo $$ > "$f" || exit 1; shift; done; shift; exec "$@"'
        procs = [str(directory / "cgroup.procs") for directory in self.directories]
        return ["/bin/sh", "-c", script, "sh", *procs, "--", *argv]

    def remove(self) -> None:
        for directory in reversed(self.directories):
            for _ in range(50):  # the jail's processes take a moment to go after the kill
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.directories = []


def encode_frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return len(body).to_bytes(4, "big") + body


class _Channel:
    """The trusted end of one server's socket: frames out (with pipe ends where a job needs them), frames in."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = b""

    def send(self, job: dict, fds: tuple[int, ...] = ()) -> bool:
        frame = encode_frame(job | {"fds": len(fds)} if fds else job)
        try:
            if fds:
                sent = self.sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                frame = frame[sent:]
            self.sock.sendall(frame)
        except OSError:
            return False
        return True

    def receive(self, deadline: float) -> dict | None:
        """The next frame, or None if the server died, garbled its answer or missed the deadline."""
        while True:
            if len(self._buffer) >= 4:
                size = int.from_bytes(self._buffer[:4], "big")
                if len(self._buffer) >= 4 + size:
                    body, self._buffer = self._buffer[4 : 4 + size], self._buffer[4 + size :]
                    try:
                        return json.loads(body)
                    except ValueError:
                        return None
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                return None
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk


class _Worker:
    """One slot: a jail holding a candidate server and an oracle server, and a socket to each."""

    def __init__(self, slot: int, config: dict, backstop: Backstop | None, scratch: list[str], jail: bool):
        self.slot = slot
        self.backstop = backstop
        self.scratch = scratch  # ours to remove, where the servers have no private /tmp
        candidate, candidate_end = socket.socketpair()
        oracle, oracle_end = socket.socketpair()
        self.candidate, self.oracle = _Channel(candidate), _Channel(oracle)
        config = config | {"candidate_fd": candidate_end.fileno(), "oracle_fd": oracle_end.fileno()}
        argv = jail_argv(json.dumps(config)) if jail else [python_executable(), "-I", "-S", "-B", str(WORKER_PATH),
                                                           json.dumps(config)]  # fmt: skip
        if backstop:
            argv = backstop.wrap(argv)
        try:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True,
                pass_fds=(candidate_end.fileno(), oracle_end.fileno()), env=_jail_environment(),
            )  # fmt: skip
        finally:
            candidate_end.close()
            oracle_end.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        for channel in (self.candidate, self.oracle):
            hello = channel.receive(deadline)
            if not hello or not hello.get("ready"):
                self.kill()
                detail = (hello or {}).get("error", "no answer")
                raise SandboxUnavailable(f"sandbox worker did not start: {detail}")

    def request(self, job: dict, deadline: float) -> dict | None:
        """Send a job to the candidate server (an oracle job to both servers); the response, or None."""
        if job["kind"] != "oracle":
            return self.candidate.receive(deadline) if self.candidate.send(job) else None
        requests_read, requests_write = os.pipe()  # oracle run -> candidate run
        answers_read, answers_write = os.pipe()  # candidate run -> oracle run
        try:
            sent = self.candidate.send(job["candidate"], (requests_read, answers_write)) and self.oracle.send(
                job["oracle"], (answers_read, requests_write)
            )
        finally:
            for fd in (requests_read, requests_write, answers_read, answers_write):
                os.close(fd)
        if not sent:
            return None
        oracle = self.oracle.receive(deadline)
        candidate = self.candidate.receive(deadline)
        if oracle is None or candidate is None:
            return None
        for response in (candidate, oracle):
            if "infra" in response:
                return response
        return {"runs": candidate["runs"] + oracle["runs"]}

    def kill(self) -> None:
        """Kill the jail. The sockets stay open (a thread may be reading them: it sees EOF) until the object goes."""
        self.process.kill()
        self.process.wait()
        if self.backstop:
            self.backstop.remove()
        for directory in self.scratch:
            shutil.rmtree(directory, ignore_errors=True)


def _jail_environment() -> dict[str, str]:
    """bwrap itself gets only PATH; the jail starts from an empty environment (`--clearenv`)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


_instances = itertools.count()


class Sandbox:
    """A pool of jailed fork-server workers; `run(job)` is thread-safe and blocks until a worker answers.

    Args:
        workers: parallel workers; default: the cores of this process (per local rank).
        isolation: layers to use; weaker than full needs `allow_unsandboxed`.
        allow_unsandboxed: permit weaker isolation, and fall back to none when the jail cannot start, each time with
            a loud warning. Default: the `TRL_EXT_ALLOW_UNSANDBOXED` environment variable.
        scratch_bytes: size of each worker's private /tmp (shared by the runs of that worker, wiped after each).
        worker_memory, worker_processes: the cgroup backstop around each worker's jail, where cgroups are writable.
    """

    def __init__(
        self,
        workers: int | None = None,
        isolation: Isolation = FULL_ISOLATION,
        *,
        allow_unsandboxed: bool | None = None,
        scratch_bytes: int = 256 << 20,
        worker_memory: int = 4 << 30,
        worker_processes: int = 1024,
    ):
        self.workers = workers or default_workers()
        self.isolation = isolation
        self.allow_unsandboxed = unsandboxed_opt_in(allow_unsandboxed)
        self.scratch_bytes = scratch_bytes
        self.worker_memory = worker_memory
        self.worker_processes = worker_processes
        self.backstop_available: bool | None = None  # unknown until the first worker starts
        self.name = f"trl-ext-sandbox-{os.getpid()}-{next(_instances)}"  # of its cgroups
        if not isolation.full:
            if not self.allow_unsandboxed:
                raise SandboxUnavailable(
                    f"refusing to run untrusted code {isolation.describe()}: pass allow_unsandboxed=True or set "
                    f"{UNSANDBOXED_ENV}=1 to opt in"
                )
            _warn_unsandboxed(isolation, "requested")
        self._workers: list[_Worker | None] = [None] * self.workers
        self._idle: queue.Queue[int] = queue.Queue()  # free slots
        for slot in range(self.workers):
            self._idle.put(slot)
        self._lock = threading.Lock()
        self._dispatch = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox-dispatch")
        self._started = False
        self.infra_failures = 0

    def start(self) -> Sandbox:
        """Start every worker now (before the trainer grows large or touches CUDA); raises SandboxUnavailable."""
        with self._lock:
            if self._started:
                return self
            try:
                self._workers[0] = self._workers[0] or self._spawn(0)
            except SandboxUnavailable as error:
                if not (self.allow_unsandboxed and self.isolation.jail):
                    raise
                self.isolation = NO_ISOLATION
                _warn_unsandboxed(self.isolation, f"fallback: {error}")
                self._workers[0] = self._spawn(0)
            for slot in range(1, self.workers):
                self._workers[slot] = self._workers[slot] or self._spawn(slot)
            self._started = True
            atexit.register(self.close)  # the jails die with this process anyway; this also removes the cgroups
        return self

    def run(self, job: dict, timeout: float) -> dict | None:
        """Send `job` to a free worker; its response, or None on an infrastructure failure (never a false score).

        `timeout` bounds the whole job on the trusted side; the worker enforces the per-run limits itself.
        """
        self.start()
        slot = self._idle.get()
        try:
            worker = self._workers[slot] or self._spawn(slot)  # a slot whose worker died restarts here
            self._workers[slot] = worker
            response = worker.request(job, time.monotonic() + timeout)
            if response is None:
                logger.error("sandbox worker %d died or stalled; restarting it", slot)
                worker.kill()
                self._workers[slot] = None
            elif "infra" in response:
                logger.error("sandbox infrastructure failure: %s", response["infra"])
                response = None
        except SandboxUnavailable as error:
            logger.error("%s", error)
            response = None
        finally:
            self._idle.put(slot)
        if response is None or any(run.get("infra") for run in response["runs"]):
            with self._lock:
                self.infra_failures += 1
            return None
        return response

    def submit(self, function: Callable, *args) -> Future:
        """Run `function(*args)` on one of this sandbox's dispatch threads: one per worker, as many as can be busy."""
        return self._dispatch.submit(function, *args)

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers' outermost processes (for monitoring and tests)."""
        return [worker.process.pid for worker in self._workers if worker is not None]

    def close(self) -> None:
        """Kill every worker, busy or not (their jobs score None); a later `run` starts them again."""
        atexit.unregister(self.close)
        with self._lock:
            for slot, worker in enumerate(self._workers):
                if worker is not None:
                    worker.kill()
                    self._workers[slot] = None
            self._started = False

    def _spawn(self, slot: int) -> _Worker:
        private_tmp = self.isolation.jail or self.isolation.sample_namespaces
        # without any namespace the servers have no private /tmp: each gets a directory, removed when it goes
        scratch = [] if private_tmp else [tempfile.mkdtemp(prefix="trl-ext-sandbox-") for _ in range(2)]
        config = {
            "jail": self.isolation.jail,
            "uid": SLOT_UID_BASE + slot if os.geteuid() == 0 else None,
            "sample_namespaces": self.isolation.sample_namespaces,
            "network": self.isolation.sample_network,
            "rlimits": self.isolation.rlimits,
            "scratch_bytes": self.scratch_bytes,
            "scratch_inodes": 4096,
            "scratch": scratch[0] if scratch else None,
            "oracle_scratch": scratch[1] if scratch else None,
        }
        try:
            return _Worker(slot, config, self._backstop(slot), scratch, self.isolation.jail)
        except OSError as error:
            for directory in scratch:
                shutil.rmtree(directory, ignore_errors=True)
            raise SandboxUnavailable(f"cannot start the sandbox worker: {error}") from None

    def _backstop(self, slot: int) -> Backstop | None:
        if self.backstop_available is False:
            return None
        try:
            backstop = Backstop(f"{self.name}-{slot}", self.worker_memory, self.worker_processes)
        except OSError as error:
            logger.warning(
                "no cgroup backstop for the code sandbox (%s): each run is still bounded by its rlimits, but its "
                "processes together may use up to processes x memory. Run as root or in a delegated cgroup v2 "
                "subtree, or under a container memory limit.",
                error,
            )
            self.backstop_available = False
            return None
        self.backstop_available = True
        return backstop


def python_executable() -> str:
    """The real interpreter behind this (maybe virtual) environment; the jail shows its install read-only."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def jail_argv(config_json: str) -> list[str]:
    """The bwrap command line for one worker."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap (`bwrap`) is not installed; install it (Debian/Ubuntu: `apt-get install bubblewrap`), or opt "
            f"in to running model-written code unsandboxed with {UNSANDBOXED_ENV}=1"
        )
    python = python_executable()
    argv = [bwrap, "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
        if target:
            argv += ["--symlink", target, f"/{name}"]
        elif os.path.isdir(f"/{name}"):
            argv += ["--ro-bind", f"/{name}", f"/{name}"]
    install = Path(sys.base_prefix).resolve()
    if not install.is_relative_to("/usr"):
        for parent in reversed(install.parents[:-1]):  # parents made traversable: /root itself may be 0700
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", str(install), str(install)]
    for name in JAIL_FILES:
        argv += ["--ro-bind", str(WORKER_PATH.with_name(name)), f"{JAIL_DIRECTORY}/{name}"]
    argv += [
        "--proc", "/proc", "--dev", "/dev", "--dir", "/tmp",
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--hostname", "sandbox",
        "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
        "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--chdir", "/tmp",
    ]  # fmt: skip
    if os.geteuid() == 0:  # no user namespace at the jail level; the worker drops to its slot uid itself
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user"]
    return argv + [python, "-I", "-S", "-B", f"{JAIL_DIRECTORY}/worker.py", config_json]


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def shared_sandbox() -> Sandbox:
    """The process-wide sandbox used by the reward functions (configure it first with `configure_sandbox`)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Sandbox()
        return _shared


def configure_sandbox(**kwargs) -> Sandbox:
    """Replace the process-wide sandbox (arguments as for `Sandbox`) and start it; call early in a training script."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
        _shared = Sandbox(**kwargs)
    return _shared.start()
