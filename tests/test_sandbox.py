"""The executor and its isolation layers, observed from inside a run and from the host."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
from pathlib import Path

import pytest

from rewards import sandbox as sandbox_module
from rewards.code import build_job, plan_tests
from rewards.sandbox import Isolation, Limits, Sandbox, SandboxUnavailable
from rewards.sandbox.codec import decode

LIMITS = Limits(timeout=2.0, memory=512 << 20, compile_timeout=10.0)


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(workers=2).start()
    yield box
    box.close()


def values_from(box: Sandbox, code: str, *expressions: str, limits: Limits = LIMITS) -> list:
    """What each expression evaluates to inside a run (literal values; an exception's type name as a string)."""
    job = {"kind": "python_calls", "source": code, "expressions": expressions, "limits": dataclasses.asdict(limits)}
    response = box.run(job, limits.timeout + 5)
    assert response is not None
    results = {}
    for line in response["runs"][0]["results"].splitlines():
        index, kind, payload = line.split("\t", 2)
        results[int(index)] = decode(payload) if kind == "v" else f"{kind} {payload}"
    return [results.get(index) for index in range(len(expressions))]


PROBE = """
import ctypes, os, resource, socket

def try_(action):
    try:
        return action()
    except BaseException as error:
        return f"raised {type(error).__name__}"

def connect(host, port):
    return try_(lambda: socket.create_connection((host, port), timeout=1).close() or "connected")

def write(path):
    return try_(lambda: open(path, "w").write("x") and "written")

def capabilities():
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    sets = (ctypes.c_uint32 * 6)()
    ctypes.CDLL(None).capget(ctypes.byref(Header(0x20080522, 0)), sets)
    return list(sets)

def mount_tmpfs():
    libc = ctypes.CDLL(None, use_errno=True)
    return "mounted" if libc.mount(b"none", b"/usr", b"tmpfs", 0, None) == 0 else os.strerror(ctypes.get_errno())
"""


def test_a_run_is_pid_1_of_its_own_namespace_without_privileges(sandbox):
    pid, caps, no_new_privs, hostname, chroot = values_from(
        sandbox, PROBE, "os.getpid()", "capabilities()", "ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)",
        "os.uname().nodename", "try_(lambda: os.chroot('/tmp'))",
    )  # fmt: skip
    assert pid == 1
    assert caps == [0] * 6  # effective, permitted, inheritable: nothing (uid 0 of the worker's namespace only)
    assert no_new_privs == 1
    assert chroot == "raised PermissionError"
    assert hostname != os.uname().nodename


def test_every_run_gets_fresh_namespaces(monkeypatch):
    """Observed without the jail, where a run can read /proc: pid, net, IPC and UTS namespaces are not the worker's."""
    box = Sandbox(workers=1, isolation=Isolation(jail=False), allow_unsandboxed=True).start()
    kinds = ("pid", "net", "ipc", "uts")
    read = "{kind: os.readlink(f'/proc/self/ns/{kind}') for kind in KINDS}"
    try:
        first, second = (values_from(box, f"import os\nKINDS = {kinds}", read)[0] for _ in range(2))
        worker = tree_namespaces(box.worker_pids()[0], kinds)
    finally:
        box.close()
    for kind in kinds:  # (a namespace's inode number is recycled once it is freed: runs may repeat each other's)
        assert first[kind] not in worker[kind] and second[kind] not in worker[kind], kind


def tree_namespaces(pid: int, kinds) -> dict[str, set[str]]:
    """The namespaces of a worker's process tree on the host, by kind."""
    found: dict[str, set[str]] = {kind: set() for kind in kinds}
    pending = [pid]
    while pending:
        current = pending.pop()
        for kind in kinds:
            found[kind].add(os.readlink(f"/proc/{current}/ns/{kind}"))
        for task in Path(f"/proc/{current}/task").iterdir():
            pending.extend(int(child) for child in (task / "children").read_text().split())
    return found


def test_a_run_sees_only_a_read_only_minimal_root_and_no_processes(sandbox, tmp_path):
    host_file = tmp_path / "host-file"
    host_file.write_text("host")
    root, proc, host, passwd, usr_write, tmp_write, mount = values_from(
        sandbox, PROBE, "sorted(os.listdir('/'))", "os.listdir('/proc')", f"os.path.exists({str(host_file)!r})",
        "os.path.exists('/etc/passwd')", "write('/usr/pwned')", "write('/tmp/mine')", "mount_tmpfs()",
    )  # fmt: skip
    assert not {"home", "etc", "work", "var", "opt", "mnt"} & set(root)
    assert proc == []
    assert host is False and passwd is False
    assert usr_write == "raised OSError"
    assert tmp_write == "written"
    assert mount == "Operation not permitted"
    assert not Path("/usr/pwned").exists()


def test_a_run_has_a_clean_environment(sandbox, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_should_never_leak")
    box = Sandbox(workers=1).start()  # started after the secret is in the trainer's environment
    try:
        (environment,) = values_from(box, "import os", "dict(os.environ)")
    finally:
        box.close()
    assert set(environment) <= {"PATH", "LANG", "HOME", "TMPDIR", "PWD"}
    assert "hf_should_never_leak" not in json.dumps(environment)


def test_a_run_has_no_network_not_even_loopback(sandbox):
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    interfaces, loopback, any_address = values_from(
        sandbox, PROBE, "[name for _, name in socket.if_nameindex()]", f"connect('127.0.0.1', {port})",
        f"connect('0.0.0.0', {port})",
    )  # fmt: skip
    listener.close()
    assert interfaces == ["lo"]
    assert loopback.startswith("raised") and any_address.startswith("raised")
    assert accepted == []


def test_rlimits_are_set_inside_a_run(sandbox):
    limits = dataclasses.replace(LIMITS, open_files=40, processes=30, file_size=1 << 20)
    nofile, nproc, fsize, address_space, cpu, core = values_from(
        sandbox, "import resource", *(f"resource.getrlimit(resource.{name})" for name in
                                      ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_AS", "RLIMIT_CPU",
                                       "RLIMIT_CORE")),
        limits=limits,
    )  # fmt: skip
    assert nofile == (40, 40) and nproc == (30, 30) and fsize == (1 << 20, 1 << 20)
    assert address_space == (limits.memory, limits.memory)
    assert cpu == (math.ceil(limits.timeout) + 1,) * 2 and core == (0, 0)


def test_the_scratch_directory_is_wiped_between_runs(sandbox):
    values_from(
        sandbox, "open('/tmp/left-behind', 'w').write('x')\nimport os\nos.mkdir('/tmp/d')\nos.chmod('/tmp/d', 0)"
    )
    for _ in range(4):  # whichever worker runs next
        assert values_from(sandbox, "import os", "os.listdir('/tmp')") == [[]]


def test_wall_clock_kill_and_output_cap(sandbox):
    started = time.monotonic()
    assert values_from(sandbox, "import time\ntime.sleep(60)\nx = 1", "x") == [None]
    # The kill is the behaviour: killed, the run ends ~2 s in; not killed, it sleeps 60 s. A bound of 30 s tells the
    # two apart and leaves a loaded machine 28 s of scheduling slack.
    assert time.monotonic() - started < 30
    flood = {"kind": "python_io", "source": "while True: print('x' * 65536)", "inputs": [""],
             "limits": dataclasses.asdict(LIMITS)}  # fmt: skip
    (run,) = sandbox.run(flood, 10)["runs"]
    assert run["killed"] == "output limit" and run["stdout_truncated"]  # the cap, not the timeout, ended it
    assert len(run["stdout"]) == LIMITS.max_output


def test_a_dead_worker_scores_none_and_is_restarted():
    box = Sandbox(workers=1).start()
    try:
        job, _ = build_job("import time\ntime.sleep(30)", plan_tests(["assert f()"]), "python", "", LIMITS)
        threading.Timer(0.5, lambda: os.kill(box.worker_pids()[0], 9)).start()
        assert box.run(job, 10) is None
        assert box.infra_failures == 1
        assert values_from(box, "x = 3", "x") == [3]
    finally:
        box.close()


def test_a_stalled_worker_scores_none():
    box = Sandbox(workers=1).start()
    try:
        job, _ = build_job("import time\ntime.sleep(30)", plan_tests(["assert f()"]), "python", "", LIMITS)
        assert box.run(job, timeout=0.5) is None  # the trusted side gives up before the worker's own kill
        assert values_from(box, "x = 4", "x") == [4]
    finally:
        box.close()


def test_scoring_forks_nothing_in_the_trainer(sandbox):
    def children() -> set[int]:
        pids = set()
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            pids |= {int(pid) for pid in (task / "children").read_text().split()}
        return pids

    values_from(sandbox, "x = 0", "x")
    before = children()
    for index in range(30):
        assert values_from(sandbox, f"x = {index}", "x") == [index]
    assert children() == before


def test_weaker_isolation_needs_an_explicit_opt_in(monkeypatch, caplog):
    monkeypatch.delenv(sandbox_module.UNSANDBOXED_ENV, raising=False)
    with pytest.raises(SandboxUnavailable, match="refusing"):
        Sandbox(isolation=Isolation(sample_network=False))
    monkeypatch.setenv(sandbox_module.UNSANDBOXED_ENV, "1")
    with caplog.at_level(logging.WARNING):
        Sandbox(isolation=Isolation(sample_network=False))
    assert "WITHOUT SAMPLE_NETWORK" in caplog.text


def test_no_bubblewrap_fails_closed_unless_opted_in(monkeypatch, caplog):
    monkeypatch.delenv(sandbox_module.UNSANDBOXED_ENV, raising=False)
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        Sandbox(workers=1).start()
    box = Sandbox(workers=1, allow_unsandboxed=True)
    with caplog.at_level(logging.WARNING):
        box.start()
    try:
        assert box.isolation == sandbox_module.NO_ISOLATION
        assert "fallback" in caplog.text and "UNTRUSTED" in caplog.text
        assert values_from(box, "open('left-behind', 'w').write('x')\nx = 5", "x") == [5]
        (worker,) = box._workers
        assert len(worker.scratch) == 2  # the candidate server's and the oracle server's
        assert all(Path(scratch).is_dir() and not list(Path(scratch).iterdir()) for scratch in worker.scratch)
    finally:
        box.close()
    assert not any(map(os.path.exists, worker.scratch))  # no namespaces, so no private /tmp: they go with the worker


def test_a_worker_that_cannot_start_is_reported(monkeypatch):
    monkeypatch.setattr(sandbox_module, "python_executable", lambda: "/nonexistent/python")
    with pytest.raises(SandboxUnavailable, match="did not start"):
        Sandbox(workers=1).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="the cgroup backstop needs a writable cgroup (root)")
def test_the_cgroup_backstop_caps_memory_across_processes():
    box = Sandbox(workers=1, worker_memory=256 << 20).start()
    many_processes = """
import os, time
def touch(size):
    block = bytearray(size)
    for i in range(0, size, 4096):
        block[i] = 1
    return block
def statuses():
    pids = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            touch(100 << 20)
            time.sleep(1)
            os._exit(0)
        pids.append(pid)
    return [os.waitpid(pid, 0)[1] for pid in pids]
"""
    try:
        assert box.backstop_available
        (statuses,) = values_from(box, many_processes, "statuses()")
        # 6 x 100 MiB > 256 MiB: the OOM killer took some children, or the run itself (then no statuses came back)
        assert statuses is None or any(status != 0 for status in statuses)
        assert values_from(box, "x = 6", "x") == [6]
    finally:
        box.close()
    assert not list(Path("/sys/fs/cgroup").glob(f"**/{box.name}-*"))
