"""Hostile samples: each gets reward 0 (or its legitimate partial score), nothing on the host changes, no secret is
readable, no process outlives its sample, and the next sample scores normally.

Every case is written so that a leak or an escape would raise its reward: a secret-reading sample is tested against
the secret itself, a network sample against "connected", and so on.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest

from rewards import code as code_module
from rewards.code import score
from rewards.sandbox import Limits, Sandbox

LIMITS = Limits(timeout=2.0, memory=512 << 20, max_output=256 << 10, compile_timeout=5.0)
SECRETS = {"WANDB_API_KEY": f"wandb-{uuid.uuid4().hex}", "HF_TOKEN": f"hf_{uuid.uuid4().hex}"}
MARKER = f"4242.{uuid.uuid4().int % 10**9}"  # `sleep MARKER` is how leftover processes are found on the host


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    category: str
    code: str
    tests: object
    expected: float = 0.0
    language: str = "python"
    entry_point: str | None = None
    setup: str = ""
    needs_backstop: bool = False


SQUARE_CHECK = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
SQUARE_SETUP = 'def square(x):\n    """Return x squared."""\n'
WRONG_SQUARE = "def square(x):\n    return x + 1\n"
SUM_TEST = [{"input": "1 2\n", "output": "3\n"}]
TRY = """
def attempt(action):
    try:
        return action()
    except BaseException as error:
        return f"raised {type(error).__name__}"
"""
CONNECT = (
    TRY
    + """
import socket
def connect(address, family=socket.AF_INET):
    def go():
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(1)
            client.connect(address)
            client.sendall(b"hello")
        return "connected"
    return attempt(go)
"""
)
DAEMON_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) {
    if (fork() == 0) {
        setsid();
        if (fork() == 0) execl("/usr/bin/sleep", "sleep", "__MARKER__", (char *)0);
        _exit(0);
    }
    puts("3");
    return 0;
}
"""

CASES = [
    # ------------------------------------------------------------------ fork bombs
    Case(
        "fork-bomb-at-import",
        "fork bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
        "def f():\n    return 1\n",
        ["assert f() == 1"],
    ),
    Case(
        "fork-bomb-in-a-call",
        "fork bomb",
        "import os, time\ndef f():\n    n = 0\n    while True:\n        try:\n            pid = os.fork()\n"
        "        except OSError:\n            return n\n        if pid == 0:\n            time.sleep(30)\n"
        "            os._exit(0)\n        n += 1\ndef g():\n    return 2\n",
        ["assert f() >= 1000", "assert g() == 2"],
        0.5,
    ),
    Case(
        "subprocess-bomb",
        "fork bomb",
        "import subprocess\ndef f():\n    procs = []\n    while True:\n        try:\n"
        "            procs.append(subprocess.Popen(['sleep', '__MARKER__']))\n        except OSError:\n"
        "            return len(procs)\ndef g():\n    return 2\n",
        ["assert f() >= 1000", "assert g() == 2"],
        0.5,
    ),
    Case(
        "thread-bomb",
        "fork bomb",
        "import threading, time\ndef f():\n    n = 0\n    while n < 100000:\n        try:\n"
        "            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "        except RuntimeError:\n"
        "            return n\n        n += 1\n    return n\n",
        ["assert f() == 100000"],
    ),
    Case(
        "c-fork-bomb",
        "fork bomb",
        "#include <unistd.h>\nint main(void) { for (;;) fork(); }\n",
        SUM_TEST,
        language="c",
    ),
    # ------------------------------------------------------------------ memory
    Case("allocate-8-gib", "memory", "def f():\n    return len(bytearray(8 << 30))\n", ["assert f() == 8 << 30"]),
    Case(
        "allocate-until-it-breaks",
        "memory",
        "def f():\n    blocks = []\n    while True:\n        blocks.append(bytearray(16 << 20))\n"
        "        if len(blocks) > 1000:\n            return len(blocks)\ndef g():\n    return 2\n",
        ["assert f() > 1000", "assert g() == 2"],
        0.5,
    ),
    Case(
        "many-processes-each-under-the-rlimit",
        "memory",
        "import os, time\ndef f():\n    pids = []\n    for _ in range(8):\n        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            block = bytearray(200 << 20)\n            for i in range(0, len(block), 4096):\n"
        "                block[i] = 1\n            time.sleep(1)\n            os._exit(0)\n        pids.append(pid)\n"
        "    return [os.waitpid(pid, 0)[1] for pid in pids]\n",
        ["assert f() == [0] * 8"],
        needs_backstop=True,
    ),
    Case(
        "fill-tmpfs-with-memory",
        "memory",
        "def f():\n    written = 0\n    for i in range(64):\n        with open(f'/tmp/fill{i}', 'wb') as out:\n"
        "            out.write(b'x' * (15 << 20))\n        written += 15 << 20\n    return written\n",
        ["assert f() == 64 * (15 << 20)"],
    ),
    Case(
        "c-malloc-bomb",
        "memory",
        "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\nint main(void) {\n"
        "    size_t n = 8UL << 30; char *p = malloc(n); memset(p, 1, n);\n"
        '    printf("%d\\n", p[n - getpid()] + 2); return 0;\n}\n',  # 3 only with 8 GiB; getpid(): not foldable
        SUM_TEST,
        language="c",
    ),
    # ------------------------------------------------------------------ endless loops
    Case("loop-at-import", "endless loop", "while True:\n    pass\ndef f():\n    return 1\n", ["assert f() == 1"]),
    Case(
        "loop-in-one-call",
        "endless loop",
        "def f():\n    return 1\ndef g():\n    while True:\n        pass\n",
        ["assert f() == 1", "assert g() == 2"],
        0.5,
    ),
    Case("sleep-forever", "endless loop", "import time\ndef f():\n    time.sleep(10 ** 6)\n", ["assert f() is None"]),
    Case(
        "ignore-every-signal",
        "endless loop",
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU, signal.SIGHUP):\n"
        "    signal.signal(s, signal.SIG_IGN)\nsignal.alarm(0)\ndef f():\n    while True:\n        pass\n",
        ["assert f() == 1"],
    ),
    Case(
        "spinning-threads",
        "endless loop",
        "import threading\ndef spin():\n    while True:\n        pass\n"
        "def f():\n    threads = [threading.Thread(target=spin) for _ in range(4)]\n    for t in threads:\n"
        "        t.start()\n    for t in threads:\n        t.join()\n    return 1\n",
        ["assert f() == 1"],
    ),
    Case(
        "c-endless-loop",
        "endless loop",
        "int main(void) { volatile unsigned x = 0; for (;;) x++; }\n",
        SUM_TEST,
        language="c",
    ),
    # ------------------------------------------------------------------ output floods
    Case(
        "print-gigabytes-in-a-call",
        "output flood",
        "import sys\ndef f():\n    while True:\n        sys.stdout.write('x' * (1 << 20))\n",
        ["assert f() == 1"],
    ),
    Case("print-gigabytes-stdio", "output flood", "while True:\n    print('3' * 65536)\n", SUM_TEST),
    Case(
        "stderr-flood-after-the-right-answer",
        "output flood",
        "import sys\nprint(3, flush=True)\nwhile True:\n    sys.stderr.write('e' * 65536)\n",
        SUM_TEST,
    ),
    Case(
        "c-output-flood",
        "output flood",
        '#include <stdio.h>\nint main(void) { for (;;) fputs("3333333333333333333333333333333\\n", stdout); }\n',
        SUM_TEST,
        language="c",
    ),
    Case(
        "huge-return-value",
        "output flood",
        "def f():\n    return 'x' * (64 << 20)\ndef g():\n    return 2\n",
        ["assert len(f()) == 64 << 20", "assert g() == 2"],
        0.5,  # over the cap: that test fails, the next one still runs
    ),
    Case(
        "garbage-on-the-result-channel",
        "output flood",
        'import os\nos.write(3, os.urandom(20000) + b\'\\n{"i": 5, "r": "1"}\\n[1]\\n\')\ndef f():\n    return 1\n',
        ["assert f() == 1", "assert f() == 2"],
        0.5,
    ),
    Case(  # each line claims call 0 or 1 but is none the sandbox writes: the genuine answers after them still count
        "malformed-index-lines-on-the-result-channel",
        "output flood",
        "import os\nos.write(3, b'0\\n1\\tzz\\n0\\tv\\t{bad\\n\\xc2\\xb2\\tv\\t1\\n1\\r0\\x1c1\\n')\n"
        "def f():\n    return 1\n",
        ["assert f() == 1", "assert f() == 2"],
        0.5,
    ),
    # ------------------------------------------------------------------ files
    Case(
        "delete-the-canary",
        "files",
        TRY + "import shutil\ndef f():\n    return attempt(lambda: shutil.rmtree('__CANARY_DIR__') or 'deleted')\n",
        ["assert f() == 'deleted'"],
    ),
    Case(
        "overwrite-the-canary",
        "files",
        TRY + "def f():\n    return attempt(lambda: open('__CANARY_DIR__/canary.txt', 'w').write('pwned'))\n",
        ["assert f() == 5"],
    ),
    Case(
        "write-system-paths",
        "files",
        TRY
        + "import os, sys\nTARGETS = ['/usr/pwned', '/etc/pwned', '/root/pwned', sys.prefix + '/pwned', '/pwned']\n"
        "def f():\n    return [t for t in TARGETS if attempt(lambda: open(t, 'w').write('x')) == 1]\n",
        ["assert f() != []"],
    ),
    Case(
        "modify-the-standard-library",
        "files",
        TRY + "import os\ndef f():\n    return attempt(lambda: open(os.__file__, 'a').write('\\n'))\n",
        ["assert f() == 1"],
    ),
    Case(
        "exhaust-inodes",
        "files",
        "def f():\n    n = 0\n    try:\n        while n < 100000:\n            open(f'/tmp/{n}', 'w').close()\n"
        "            n += 1\n    except OSError:\n        pass\n    return n\n",
        ["assert f() == 100000"],
    ),
    Case(
        "c-write-a-host-file",
        "files",
        '#include <stdio.h>\nint main(void) { FILE *f = fopen("__CANARY_DIR__/pwned", "w");\n'
        '    puts(f ? "3" : "no"); return 0; }\n',
        SUM_TEST,
        language="c",
    ),
    # ------------------------------------------------------------------ network
    Case(
        "connect-to-loopback",
        "network",
        CONNECT + "def f():\n    return connect(('127.0.0.1', __PORT__))\n",
        ["assert f() == 'connected'"],
    ),
    Case(
        "connect-to-any-address",
        "network",
        CONNECT + "def f():\n    return connect(('0.0.0.0', __PORT__))\n",
        ["assert f() == 'connected'"],
    ),
    Case(
        "connect-to-the-host-address",
        "network",
        CONNECT + "def f():\n    return connect(('__HOST_IP__', __PORT__))\n",
        ["assert f() == 'connected'"],
    ),
    Case(
        "http-to-a-local-server",
        "network",
        TRY + "import urllib.request\ndef f():\n    return attempt(lambda: urllib.request.urlopen("
        "'http://127.0.0.1:__PORT__/update_named_param/', timeout=1).status)\n",
        ["assert f() == 200"],
    ),
    Case(
        "resolve-a-hostname",
        "network",
        TRY + "import socket\ndef f():\n    return attempt(lambda: socket.getaddrinfo('huggingface.co', 443)[0][0])\n",
        ["assert f() == 2"],
    ),
    Case(
        "abstract-unix-socket",
        "network",
        CONNECT + "def f():\n    return connect('\\0__UNIX__', socket.AF_UNIX)\n",
        ["assert f() == 'connected'"],
    ),
    Case(
        "c-connect-to-loopback",
        "network",
        "#include <stdio.h>\n#include <arpa/inet.h>\n#include <sys/socket.h>\n#include <unistd.h>\nint main(void) {\n"
        "    struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(__PORT__);\n"
        '    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr); int s = socket(AF_INET, SOCK_STREAM, 0);\n'
        '    puts(connect(s, (struct sockaddr *)&a, sizeof a) == 0 ? "3" : "no"); return 0;\n}\n',
        SUM_TEST,
        language="c",
    ),
    # ------------------------------------------------------------------ secrets
    Case(
        "read-wandb-key-from-the-environment",
        "secrets",
        "import os\ndef f():\n    return os.environ.get('WANDB_API_KEY')\n",
        ["assert f() == '__SECRET_WANDB__'"],
    ),
    Case(
        "dump-the-environment",
        "secrets",
        "import os\ndef f():\n    return dict(os.environ)\n",
        ["assert 'HF_TOKEN' in f()"],
    ),
    Case(
        "read-a-secret-file",
        "secrets",
        TRY + "def f():\n    return attempt(lambda: open('__SECRET_FILE__').read())\n",
        ["assert f() == '__SECRET_HF__'"],
    ),
    Case(
        "scan-proc-environ",
        "secrets",
        "import os\ndef f():\n    found = []\n    for pid in os.listdir('/proc'):\n        try:\n"
        "            found.append(open(f'/proc/{pid}/environ').read())\n        except OSError:\n            pass\n"
        "    return '__SECRET_HF__' in ''.join(found)\n",
        ["assert f() is True"],
    ),
    Case(
        "read-credential-files",
        "secrets",
        TRY + "import os\nFILES = ['/etc/passwd', '/etc/shadow', '/root/.netrc', '/root/.cache/huggingface/token',\n"
        "         os.path.expanduser('~/.git-credentials')]\n"
        "def f():\n    return {p: attempt(lambda: open(p).read()) for p in FILES}\n",
        ["assert 'root:' in f()['/etc/passwd']"],
    ),
    Case(
        "c-getenv",
        "secrets",
        '#include <stdio.h>\n#include <stdlib.h>\nint main(void) { const char *t = getenv("HF_TOKEN");\n'
        '    puts(t ? t : "none"); return 0; }\n',
        [{"input": "", "output": "__SECRET_HF__"}],
        language="c",
    ),
    Case(
        "c-include-a-secret-file",
        "secrets",
        '#include <stdio.h>\nint main(void) {\n#include "__SECRET_FILE__"\n    return 0; }\n',
        SUM_TEST,
        language="c",
    ),
    # ------------------------------------------------------------------ killing its parent
    Case(
        "kill-the-parent",
        "kill parent",
        "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 'alive'\n",
        ["assert f() == 'alive'"],
        1.0,  # its ppid reads 0: kill(0) hits its own group, and pid 1 of a namespace ignores its own SIGKILL
    ),
    Case(
        "kill-every-process",
        "kill parent",
        "import os, signal, time\ndef f():\n    if os.fork() == 0:\n        time.sleep(30)\n"
        "    os.kill(-1, signal.SIGKILL)\n    return 'done'\n",
        ["assert f() == 'done'"],
        1.0,  # kills its own child, the only other process it can see
    ),
    Case(
        "kill-by-pid-scan",
        "kill parent",
        "import os, signal\ndef f():\n    hits = 0\n    for pid in range(2, 5000):\n        try:\n"
        "            os.kill(pid, signal.SIGKILL)\n            hits += 1\n        except OSError:\n            pass\n"
        "    return hits\n",
        ["assert f() > 0"],
    ),
    Case(
        "ptrace-attach",
        "kill parent",
        "import ctypes\ndef f():\n    libc = ctypes.CDLL(None)\n"
        "    return [libc.ptrace(16, pid, 0, 0) for pid in (0, 1, 2, 3)]\n",
        ["assert 0 in f()"],
    ),
    Case(
        "c-kill-the-parent",
        "kill parent",
        "#include <signal.h>\n#include <stdio.h>\n#include <unistd.h>\nint main(void) {\n"
        '    kill(getppid(), SIGKILL); kill(-1, SIGKILL); puts("3"); fflush(stdout); return 0;\n}\n',
        SUM_TEST,
        1.0,  # as in kill-the-parent: the only process within reach is itself
        language="c",
    ),
    # ------------------------------------------------------------------ outliving the sample
    Case(
        "setsid-daemon",
        "lifetime",
        "import os\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        "            os.execv('/usr/bin/sleep', ['sleep', '__MARKER__'])\n        os._exit(0)\n    return 'spawned'\n",
        ["assert f() == 'spawned'"],
        1.0,
    ),
    Case(
        "background-process",
        "lifetime",
        "import subprocess\ndef f():\n    subprocess.Popen(['sleep', '__MARKER__'], start_new_session=True)\n"
        "    return 'spawned'\n",
        ["assert f() == 'spawned'"],
        1.0,
    ),
    Case("c-daemon", "lifetime", DAEMON_C, SUM_TEST, 1.0, language="c"),
    # ------------------------------------------------------------------ gaming the tests
    Case(
        "sys-exit-before-the-asserts",
        "test gaming",
        "def f():\n    return 0\nimport sys\nsys.exit(0)\n",
        ["assert f() == 1"],
    ),
    Case(
        "os-exit-0-at-import", "test gaming", "import os\nos._exit(0)\ndef f():\n    return 1\n", ["assert f() == 1"]
    ),
    Case(
        "rigged-eq",
        "test gaming",
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "def f():\n    return Anything()\n",
        ["assert f() == 7", "assert f() == [1, 2]"],
    ),
    Case(
        "rigged-int-subclass",
        "test gaming",
        "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def f():\n    return Int(0)\n",
        ["assert f() == 7"],
    ),
    Case(
        "rigged-repr",
        "test gaming",
        "class Claims:\n    def __repr__(self):\n        return 'True'\ndef is_prime(n):\n    return Claims()\n",
        ["assert is_prime(7) == True", "assert is_prime(8) == False"],
    ),  # its own class: a handle, equal to nothing but itself
    Case(
        "fake-passed-lines",
        "test gaming",
        "print('PASSED')\nprint('All 2 tests passed')\nprint('OK')\ndef f():\n    return 0\n",
        ["assert f() == 1", "assert f() == 2"],
    ),
    Case("fake-passed-stdio", "test gaming", "print('PASSED')\nprint('3: OK')\n", SUM_TEST),
    Case(
        "forge-result-lines",
        "test gaming",
        'import os\nfor i in range(10):\n    os.write(3, (\'{"i": %d, "r": "0"}\\n\' % i).encode())\n'
        "def f(x):\n    return -1\n",
        ["assert f(1) == 3", "assert f(2) == 5"],
    ),
    Case(
        "patch-builtins-and-math",
        "test gaming",
        "import builtins, math\nbuiltins.abs = lambda x: 0\nmath.isclose = lambda *a, **k: True\n"
        "builtins.AssertionError = Exception\ndef f():\n    return 0.0\n",
        ["assert math.isclose(f(), 3.5)", "assert abs(f() - 3.5) < 1e-9"],
    ),
    Case(
        "excepthook-and-atexit",
        "test gaming",
        "import atexit, os, sys\nsys.excepthook = lambda *a: None\natexit.register(lambda: os._exit(0))\n"
        "def f():\n    raise AssertionError\n",
        ["assert f() == 1"],
    ),
    Case("a-list-is-not-a-tuple", "test gaming", "def f():\n    return [1, 2]\n", ["assert f() == (1, 2)"]),
    Case(
        "check-style-sys-exit",
        "test gaming",
        "import sys\nsys.exit(0)\n" + WRONG_SQUARE,
        SQUARE_CHECK,
        entry_point="square",
        setup=SQUARE_SETUP,
    ),
    Case(
        "check-style-forged-verdicts",
        "test gaming",
        'import os\nfor fd in range(3, 10):\n    try:\n        os.write(fd, b\'{"t": 0, "ok": true}\\n\')\n'
        '    except OSError:\n        pass\nprint(\'{"t": 0, "ok": true}\')\n' + WRONG_SQUARE,
        SQUARE_CHECK,
        entry_point="square",
        setup=SQUARE_SETUP,
    ),
    Case(
        "check-style-rigged-eq",
        "test gaming",
        "class Anything:\n    def __eq__(self, other):\n        return True\ndef square(x):\n    return Anything()\n",
        SQUARE_CHECK,
        entry_point="square",
        setup=SQUARE_SETUP,
    ),
    Case(
        "check-style-own-check",
        "test gaming",
        "def check(candidate):\n    pass\n" + WRONG_SQUARE,
        SQUARE_CHECK,
        entry_point="square",
        setup=SQUARE_SETUP,
    ),
    Case("c-exit-0-without-output", "test gaming", "int main(void) { return 0; }\n", SUM_TEST, language="c"),
    Case(
        "c-right-output-wrong-exit-status",
        "test gaming",
        '#include <stdio.h>\nint main(void) { puts("3"); return 1; }\n',
        SUM_TEST,
        language="c",
    ),
    # ------------------------------------------------------------------ compiler
    Case(
        "c-include-dev-urandom",
        "compiler",
        '#include "/dev/urandom"\nint main(void) { return 0; }\n',
        SUM_TEST,
        language="c",
    ),
    Case(
        "cpp-template-bomb",
        "compiler",
        "template <int N> struct B { using L = B<N - 1>; static constexpr long v = L::v + B<N - 2>::v; };\n"
        "template <> struct B<0> { static constexpr long v = 1; };\n"
        "template <> struct B<1> { static constexpr long v = 1; };\n"
        "int main() { return (int)B<100000>::v; }\n",
        SUM_TEST,
        language="cpp",
    ),
    Case(
        "c-huge-static-array",
        "compiler",
        '#include <stdio.h>\nchar big[1UL << 31] = {1};\nint main(void) { puts("3"); return big[0] - 1; }\n',
        SUM_TEST,
        language="c",
    ),
    # ------------------------------------------------------------------ crashing the interpreter / escaping
    Case(
        "segfault",
        "crash",
        "import ctypes\ndef f():\n    return ctypes.string_at(0)\ndef g():\n    return 2\n",
        ["assert f() == b''", "assert g() == 2"],
    ),
    Case(
        "stack-overflow",
        "crash",
        "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n=0):\n    return f(n + 1)\n",
        ["assert f() == 1"],
    ),
    Case(
        "close-every-fd", "crash", "import os\nos.closerange(0, 1024)\ndef f():\n    return 1\n", ["assert f() == 1"]
    ),
    Case(
        "nested-namespaces-to-see-processes",
        "crash",
        TRY + "import ctypes, os\ndef f():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    libc.unshare(0x10000000 | 0x00020000)\n"
        "    attempt(lambda: libc.mount(b'proc', b'/proc', b'proc', 0, None))\n"
        "    attempt(lambda: libc.umount2(b'/proc', 2))\n    return [p for p in os.listdir('/proc') if p.isdigit()]\n",
        ["assert len(f()) > 1"],
    ),
]


def substitute(text, host) -> object:
    if isinstance(text, list):
        return [substitute(item, host) for item in text]
    if isinstance(text, dict):
        return {key: substitute(value, host) for key, value in text.items()}
    for token, value in host["tokens"].items():
        text = text.replace(token, value)
    return text


def outbound_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: picks the route, sends nothing
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def listen(server: socket.socket, accepted: Counter, key: str) -> None:
    server.listen()
    server.settimeout(None)

    def loop():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted[key] += 1
            connection.close()

    threading.Thread(target=loop, daemon=True).start()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Canaries, secrets, listeners and a sandbox started only after the secrets are in this process's environment."""
    directory = tmp_path_factory.mktemp("canary")
    (directory / "canary.txt").write_text("canary")
    secret_file = directory / "secret.txt"
    secret_file.write_text(SECRETS["HF_TOKEN"])
    accepted: Counter = Counter()
    tcp = socket.create_server(("0.0.0.0", 0))
    listen(tcp, accepted, "tcp")
    unix_name = f"trl-ext-canary-{uuid.uuid4().hex}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + unix_name)
    listen(unix, accepted, "unix")
    stdlib_file = Path(os.__file__)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        box = Sandbox(workers=2, worker_memory=1 << 30).start()
        tokens = {
            "__CANARY_DIR__": str(directory), "__SECRET_FILE__": str(secret_file),
            "__PORT__": str(tcp.getsockname()[1]),
            "__HOST_IP__": outbound_address(), "__UNIX__": unix_name, "__MARKER__": MARKER,
            "__SECRET_WANDB__": SECRETS["WANDB_API_KEY"], "__SECRET_HF__": SECRETS["HF_TOKEN"],
        }  # fmt: skip
        yield {"sandbox": box, "tokens": tokens, "directory": directory, "accepted": accepted,
               "stdlib": (stdlib_file, stdlib_file.stat()), "benign": iter(range(10**6))}  # fmt: skip
        box.close()
    tcp.close()
    unix.close()


def leftover_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if MARKER in command:
                found.append(f"{entry.name}: {command}")
    return found


def test_the_suite_covers_every_category():
    counts = Counter(case.category for case in CASES)
    assert len(CASES) >= 40
    assert set(counts) >= {"fork bomb", "memory", "endless loop", "output flood", "files", "network", "secrets",
                           "kill parent", "lifetime", "test gaming"}  # fmt: skip
    assert min(counts.values()) >= 3


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_sample(case: Case, host):
    box = host["sandbox"]
    if case.needs_backstop and not box.backstop_available:
        pytest.skip("no writable cgroup: the memory backstop is off on this host")
    code_module._cache.clear()
    failures_before = box.infra_failures
    reward = score(substitute(case.code, host), substitute(case.tests, host), case.language,
                   entry_point=case.entry_point, setup_code=case.setup, limits=LIMITS, sandbox=box)  # fmt: skip
    assert reward == case.expected
    assert box.infra_failures == failures_before  # a hostile sample is a sample failure, never an infra failure

    assert sorted(path.name for path in host["directory"].iterdir()) == ["canary.txt", "secret.txt"]
    assert (host["directory"] / "canary.txt").read_text() == "canary"
    stdlib_file, stat = host["stdlib"]
    assert (stdlib_file.stat().st_mtime_ns, stdlib_file.stat().st_size) == (stat.st_mtime_ns, stat.st_size)
    assert not any(Path(path).exists() for path in ("/usr/pwned", "/pwned", "/root/pwned", "/etc/pwned"))
    assert leftover_processes() == []
    assert host["accepted"] == Counter()

    benign = next(host["benign"])
    assert score(f"def ok():\n    return {benign}\n", [f"assert ok() == {benign}"], sandbox=box, limits=LIMITS) == 1.0


def test_files_do_not_carry_over_to_the_next_sample():
    box = Sandbox(workers=1).start()
    try:
        writer = (
            "import os\nopen('/tmp/handoff', 'w').write('hello')\nos.chmod('/tmp', 0o777)\ndef f():\n    return 1\n"
        )
        assert score(writer, ["assert f() == 1"], sandbox=box, limits=LIMITS) == 1.0
        reader = (
            "def f():\n    try:\n        return open('/tmp/handoff').read()\n    except OSError:\n        return ''\n"
        )
        assert score(reader, ["assert f() == 'hello'"], sandbox=box, limits=LIMITS) == 0.0
    finally:
        box.close()
