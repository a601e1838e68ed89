"""What a Python run does once the worker has forked it: candidate runs and oracle runs, and the calls between them.

Standalone (standard library and `codec` only): it runs inside the jail. Every function here ends its process.

A *candidate run* holds the model's code and never any test: it evaluates call expressions (`run_calls`), runs a
program on stdin (`run_main`), or serves calls from an oracle (`run_candidate_server`). An *oracle run* holds the
trusted test code and never any candidate code (`run_oracle`); the names the tests use for the candidate are
`Remote` stubs whose every use becomes a request to the candidate run. Values cross as `codec` messages, rebuilt
on the receiving side from known types only; objects that are not values cross as handles:

- from the candidate, a handle answers calls, attributes, iteration, indexing, len, bool, str/repr and arithmetic,
  each forwarded to the candidate; it compares by identity only (never by the candidate's `__eq__`, `<`, `__hash__`
  or `__contains__`: `x in handle` iterates and compares here);
- from the oracle, only functions (call) and iterators (next) cross; anything else arrives as an `Opaque` stand-in,
  so the candidate cannot walk a test's attributes, frames or globals.

A call's mutable arguments are sent back after it (copy-restore), so in-place changes show on the caller's side.
"""

from __future__ import annotations

import builtins
import json
import operator
import os
import sys
import types

from codec import BUILTIN_NAMES, Decoder, Encoder, TooLarge, is_restorable

_write = os.write  # held before any untrusted code runs, which may rebind os.write
CANDIDATE_MODULE = "__candidate__"
ORACLE_MODULE = "__oracle__"


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[_write(fd, data) :]


def emit(fd: int, line: str) -> None:
    write_all(fd, (line + "\n").encode())


class Quitter:
    """`exit()` and `quit()`, which the site module adds to a normal interpreter (the worker runs with `-S`)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Use {self.name}() or Ctrl-D (i.e. EOF) to exit"

    def __call__(self, code=None):
        try:
            sys.stdin.close()
        except Exception:
            pass
        raise SystemExit(code)


def install_site_builtins() -> None:
    builtins.exit = Quitter("exit")
    builtins.quit = Quitter("quit")


def new_module(name: str) -> dict:
    """A fresh module registered in sys.modules (dataclasses, typing and pickle look classes' modules up there)."""
    module = types.ModuleType(name)
    module.__builtins__ = builtins
    sys.modules[name] = module
    return module.__dict__


def exec_source(source: str, namespace: dict, filename: str) -> None:
    """Run `source` as plain Python would: no future flags inherited from this file."""
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)


def exception_text(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"[:300]
    except BaseException:
        return type(error).__name__


def exit_code(error: SystemExit) -> int:
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code & 0xFF
    try:
        print(error.code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def value_class_map(namespace: dict, names) -> dict[str, type]:
    return {name: namespace[name] for name in names if isinstance(namespace.get(name), type)}


# ---------------------------------------------------------------------------------------------------- candidate runs


def run_calls(source: str, expressions: list[str], cap: int) -> None:
    """Define the candidate, then evaluate each call expression; one line per result on fd 3:
    `index<TAB>v<TAB>message`, or kind `e` (raised: type name), `opaque` (not a value: type name), `big` (over cap).

    Instances of the candidate's classes (value classes included) are `opaque`: the sample then goes to the oracle."""
    namespace = new_module(CANDIDATE_MODULE)
    try:
        exec_source(source, namespace, "<candidate>")
    except BaseException as error:
        emit(3, f"-1\tmodule\t{exception_text(error)}")
        os._exit(1)
    for index, expression in enumerate(expressions):
        try:
            value = eval(compile(expression, "<test>", "eval", dont_inherit=True), namespace)
        except BaseException as error:
            emit(3, f"{index}\te\t{type(error).__name__}")
            continue
        try:
            text = Encoder(limit=cap, own_module=CANDIDATE_MODULE).encode(value)
            line = f"{index}\tv\t{text}"
        except TooLarge:
            line = f"{index}\tbig\t{cap}"
        except BaseException:  # NotAValue, or the object broke while being read
            line = f"{index}\topaque\t{type(value).__name__}"
        emit(3, line)
    os._exit(0)


def run_compile(source: str) -> None:
    """Compile only (no candidate code runs), result on fd 3."""
    try:
        compile(source, "<candidate>", "exec", dont_inherit=True)
    except BaseException as error:
        emit(3, json.dumps({"ok": False, "e": type(error).__name__}))
    else:
        emit(3, json.dumps({"ok": True}))
    os._exit(0)


def run_main(source: str) -> None:
    """Run the program as `python main.py` would, with the run's stdin/stdout: as __main__, then its non-daemon
    threads are joined and its atexit handlers run before the exit status is taken."""
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fresh objects over the run's own fds 0-2
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    namespace = new_module("__main__")
    code = 0
    try:
        exec_source(source, namespace, "main.py")
    except SystemExit as error:
        code = exit_code(error)
    except BaseException as error:
        print(f"Traceback: {exception_text(error)}", file=sys.stderr)
        code = 1
    code = _finish_interpreter(code)
    os._exit(code)


def _finish_interpreter(code: int) -> int:
    """What the interpreter does after the main module: join threads, run atexit handlers, flush."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as error:
        code = exit_code(error)
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # the program may have replaced or closed them
            code = code or 120
    return code


# ---------------------------------------------------------------------------------------------------- calls across


class CandidateError(Exception):
    """A call to the candidate failed in a way that has no exception type of its own (no answer, not decodable)."""


class ResultTooLarge(CandidateError):
    """The candidate's answer was over the size cap (`Limits.max_output`)."""


class Opaque:
    """Stands in for an object the oracle does not share (it is not a value, a function or an iterator)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object from the tests>"


class Peer:
    """One side of the call channel: requests out, answers in, serving the other side's nested requests meanwhile.

    `namespace`: this side's module (names the other side may resolve, exception classes); `classes`: the value
    classes by name; `serve_ops`: the requests this side answers.
    """

    def __init__(self, read_fd: int, write_fd: int, namespace: dict, value_classes, cap: int, serve_ops: frozenset):
        self.reader = os.fdopen(read_fd, "rb")
        self.write_fd = write_fd
        self.namespace = namespace
        self.value_classes = frozenset(value_classes)
        self.cap = cap
        self.serve_ops = serve_ops
        self.exported: dict[int, object] = {}
        self.export_ids: dict[int, int] = {}
        self.remotes: dict[int, object] = {}
        self.broken: str | None = None
        self.own_module = CANDIDATE_MODULE if serve_ops is CANDIDATE_OPS else None

    # -------------------------------------------------------------- values

    def classes(self) -> dict[str, type]:
        return value_class_map(self.namespace, self.value_classes)

    def export(self, obj) -> dict:
        if isinstance(obj, Remote):
            return obj._target
        if isinstance(obj, OracleStub):
            return {"y": obj._handle}
        if self.serve_ops is ORACLE_OPS and not (callable(obj) or hasattr(type(obj), "__next__")):
            return {"opaque": type(obj).__name__}
        key = id(obj)
        if key not in self.export_ids:
            self.export_ids[key] = len(self.exported)
            self.exported[len(self.exported)] = obj
        return {"h": self.export_ids[key]}

    def resolve(self, node: dict):
        if "h" in node:
            handle = node["h"]
            if handle not in self.remotes:
                self.remotes[handle] = (Remote if self.serve_ops is ORACLE_OPS else OracleStub)(self, {"y": handle})
            return self.remotes[handle]
        if "y" in node:
            return self.exported[node["y"]]
        if "n" in node and self.serve_ops is CANDIDATE_OPS:
            name = node["n"]
            if name not in self.namespace:
                raise NameError(f"name {name!r} is not defined")
            return self.namespace[name]
        if "opaque" in node:
            return Opaque(str(node["opaque"]))
        raise ValueError("bad handle")

    def encoder(self, origins=None) -> Encoder:
        return Encoder(self.export, self.value_classes, origins, self.cap, self.own_module)

    def decoder(self, targets=None) -> Decoder:
        return Decoder(self.resolve, self.classes(), targets)

    # -------------------------------------------------------------- messages

    def send(self, message: dict) -> None:
        line = json.dumps(message, separators=(",", ":"))
        if len(line) > self.cap:
            raise TooLarge(len(line))
        write_all(self.write_fd, (line + "\n").encode())

    def receive(self) -> dict:
        if self.broken:
            raise CandidateError(self.broken)
        line = self.reader.readline(self.cap + 2)
        if not line.endswith(b"\n"):
            self.broken = "no answer" if len(line) <= self.cap else "answer over the size cap"
            raise CandidateError(self.broken)
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.broken = "garbled answer"
            raise CandidateError(self.broken)
        return message

    def request(self, op: str, target: dict, payload=None):
        """Send one request and wait for its answer, answering the other side's requests in between."""
        encoder = None
        message = {"q": op, "t": target}
        if payload is not None:
            encoder = self.encoder()
            message["a"] = encoder.message(payload)
        self.send(message)
        while True:
            answer = self.receive()
            if "q" in answer:
                self.answer(answer)
                continue
            if "x" in answer:
                raise self.rebuild_exception(answer["x"])
            if "v" not in answer:
                raise CandidateError("garbled answer")
            try:
                value = self.decoder(encoder.keep if encoder else None).decode_message(answer["v"])
            except ValueError as error:
                raise CandidateError(f"answer is not a value: {error}") from None
            return value

    def answer(self, request: dict) -> None:
        """Serve one request from the other side."""
        try:
            op, target = request["q"], request["t"]
            if op not in self.serve_ops:
                raise TypeError(f"{op} is not allowed on objects from the tests")
            obj = self.resolve(target)
            decoder = self.decoder()
            arguments = decoder.decode_message(request["a"]) if "a" in request else ()
            result = self.perform(op, obj, arguments)
            mutable = [item for item in decoder.objects if is_restorable(item, self.value_classes)]
            reply = {"v": self.encoder(decoder.objects).message([result, mutable])}
        except TooLarge:
            reply = {"x": ["ResultTooLarge", "", None, "result over the size cap"]}
        except BaseException as error:
            reply = {"x": self.exception_message(error)}
        try:
            self.send(reply)
        except TooLarge:
            self.send({"x": ["ResultTooLarge", "", None, "result over the size cap"]})

    def perform(self, op: str, obj, arguments):
        if op == "call":
            args, kwargs = arguments
            return obj(*args, **kwargs)
        if op == "getattr":
            return getattr(obj, arguments[0])
        if op == "setattr":
            setattr(obj, arguments[0], arguments[1])
            return None
        if op == "delattr":
            delattr(obj, arguments[0])
            return None
        if op == "setitem":
            obj[arguments[0]] = arguments[1]
            return None
        if op == "delitem":
            del obj[arguments[0]]
            return None
        if op in _UNARY:
            return _UNARY[op](obj)
        if op in _BINARY:
            return _BINARY[op](obj, arguments[0])
        if op.startswith("r") and op[1:] in _BINARY:  # reflected: other <op> obj
            return _BINARY[op[1:]](arguments[0], obj)
        raise TypeError(f"unknown request {op!r:.40}")

    def exception_message(self, error: BaseException) -> list:
        args = None
        try:
            args = self.encoder().message(list(error.args))
        except BaseException:
            pass
        return [type(error).__name__, getattr(type(error), "__module__", ""), args, exception_text(error)]

    def rebuild_exception(self, parts) -> BaseException:
        """The other side's exception as one of this side's classes of that name, else a CandidateError."""
        try:
            name, module, args, text = parts
            if name == "ResultTooLarge":
                return ResultTooLarge(text)
            cls = getattr(builtins, name) if name in BUILTIN_NAMES else self.namespace.get(name)
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                cls = getattr(sys.modules.get(str(module)), str(name), None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                values = self.decoder().decode_message(args) if args is not None else ()
                try:
                    return cls(*values)
                except BaseException:
                    return cls(str(text))
            return CandidateError(str(text))
        except BaseException:
            return CandidateError("garbled exception")

    def serve_forever(self) -> None:
        while True:
            try:
                request = self.receive()
            except CandidateError:
                return
            self.answer(request)


_UNARY = {
    "iter": iter, "next": next, "len": len, "bool": bool, "str": str, "int": int, "float": float,
    "index": operator.index, "neg": operator.neg, "pos": operator.pos, "abs": abs, "invert": operator.invert,
    "repr": repr,
}  # fmt: skip
_BINARY = {
    "getitem": operator.getitem, "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod, "pow": pow,
    "lshift": operator.lshift, "rshift": operator.rshift, "and": operator.and_, "or": operator.or_,
    "xor": operator.xor, "matmul": operator.matmul, "format": format,
}  # fmt: skip
CANDIDATE_OPS = frozenset(
    {"call", "getattr", "setattr", "delattr", "setitem", "delitem", *_UNARY, *_BINARY}
    | {"r" + op for op in _BINARY if op not in ("getitem", "format")}
)
ORACLE_OPS = frozenset({"call", "next", "iter"})


class Remote:
    """A candidate object (or name) on the oracle side: each use is a request to the candidate run.

    It compares and hashes by identity (inherited from object): the candidate's `__eq__` never decides a test.
    """

    __slots__ = ("_peer", "_target")

    def __init__(self, peer: Peer, target: dict):
        object.__setattr__(self, "_peer", peer)
        object.__setattr__(self, "_target", target)

    def _ask(self, op: str, *arguments):
        return self._peer.request(op, self._target, list(arguments) if arguments else None)[0]

    def __call__(self, *args, **kwargs):
        return self._peer.request("call", self._target, [list(args), kwargs])[0]

    def __getattr__(self, name: str):
        return self._ask("getattr", name)

    def __setattr__(self, name: str, value) -> None:
        self._ask("setattr", name, value)

    def __delattr__(self, name: str) -> None:
        self._ask("delattr", name)

    def __setitem__(self, key, value) -> None:
        self._ask("setitem", key, value)

    def __delitem__(self, key) -> None:
        self._ask("delitem", key)


def _unary(op: str):
    return lambda self: self._ask(op)


def _binary(op: str):
    return lambda self, other: self._ask(op, other)


for _op in _UNARY:
    setattr(Remote, f"__{_op}__", _unary(_op))
for _op in _BINARY:
    setattr(Remote, f"__{_op}__", _binary(_op))
    if _op not in ("getitem", "format"):
        setattr(Remote, f"__r{_op}__", _binary("r" + _op))


class OracleStub:
    """A test's function or iterator on the candidate side: call it, or take its next item."""

    __slots__ = ("_peer", "_target", "_handle")

    def __init__(self, peer: Peer, target: dict):
        self._peer, self._target, self._handle = peer, target, target["y"]

    def __call__(self, *args, **kwargs):
        return self._peer.request("call", {"y": self._handle}, [list(args), kwargs])[0]

    def __iter__(self):
        return self

    def __next__(self):
        return self._peer.request("next", {"y": self._handle})[0]


# ---------------------------------------------------------------------------------------------------- the two sides


def run_candidate_server(source: str, value_classes: list[str], cap: int) -> None:
    """Candidate side of an oracle run: define the candidate, say hello, answer requests (fd 3 in, fd 4 out)."""
    namespace = new_module(CANDIDATE_MODULE)
    try:
        exec_source(source, namespace, "<candidate>")
    except BaseException as error:
        peer = Peer(3, 4, namespace, value_classes, cap, CANDIDATE_OPS)
        peer.send({"hello": False, "x": peer.exception_message(error)})
        os._exit(1)
    peer = Peer(3, 4, namespace, value_classes, cap, CANDIDATE_OPS)
    peer.send({"hello": True})
    peer.serve_forever()
    os._exit(0)


def run_oracle(setup: str, test_source: str, statements: list[str], proxies: list[str], value_classes, cap) -> None:
    """Trusted side of an oracle run: the tests run here, with no candidate code in the process.

    One verdict line per statement on fd 5: {"t": index, "ok": bool, "e": exception type, "why": reason}.
    """
    namespace = new_module(ORACLE_MODULE)
    try:
        exec_source(setup, namespace, "<setup>")
        exec_source(test_source, namespace, "<test>")
    except BaseException as error:
        emit(5, json.dumps({"setup_error": exception_text(error)}))
        os._exit(1)
    peer = Peer(3, 4, namespace, value_classes, cap, ORACLE_OPS)
    hello = _hello(peer)
    namespace.update({name: Remote(peer, {"n": name}) for name in proxies})
    for index, statement in enumerate(statements):
        verdict = {"t": index, "ok": True}
        try:
            if isinstance(hello, BaseException):
                raise hello
            exec(compile(statement, "<test>", "exec", dont_inherit=True), namespace)
        except BaseException as error:
            verdict = {"t": index, "ok": False, "e": type(error).__name__}
            if isinstance(error, CandidateError):
                verdict["why"] = str(error)[:200]
        emit(5, json.dumps(verdict))
    os._exit(0)


def _hello(peer: Peer):
    """The candidate's first message: ready, or the exception its module raised (then every test fails with it)."""
    try:
        message = peer.receive()
    except CandidateError as error:
        return error
    if message.get("hello") is True:
        return None
    if "x" in message:
        return peer.rebuild_exception(message["x"])
    return CandidateError("garbled hello")
