"""Values across the sandbox boundary: a JSON codec that rebuilds only known value types.

Standalone (standard library only): the jailed worker imports it too. Decoding runs `json.loads` and then builds
values of the types below from the parsed tree; nothing in a message can make the decoding side run code, so a rigged
`__eq__`, `__hash__`, `__reduce__` or `__repr__` never crosses. Subclasses cross as their base type (an `int`
subclass arrives as an `int`), except where the sending side offers a handle for them (see `export`).

A message is `{"v": node, "o": [entry, ...]}`. Scalars are inline nodes; every container is an entry of the flat table
"o", referred to as `{"r": index}` wherever it occurs, so shared and cyclic structures keep their shape, depth costs
no recursion, and a value that is exponential as a tree stays linear.

Types: None, bool, int (any size), float (nan, inf), complex, str, bytes, bytearray, memoryview (as bytes), list,
tuple, set, frozenset, dict, range, slice, Ellipsis, `collections` (Counter, OrderedDict, defaultdict, deque,
namedtuple types), `fractions.Fraction`, `decimal.Decimal`, `datetime` (date, time, datetime with a fixed offset,
timedelta), dictionary views, builtin types and pure builtin functions by name, instances of builtin exceptions, and
instances of the *value classes* both sides share by name (classes of the trusted setup code, such as ListNode).

Copy-restore: a decoder remembers what it built (`Decoder.objects`); an encoder given those objects as `origins`
sends the ones it meets again as updates of the peer's originals (`{"o": [index, content]}`), which the peer applies
in place. A call's mutable arguments come back this way, so `f(xs)` sorting `xs` in place shows in the caller's `xs`.
"""

from __future__ import annotations

import base64
import builtins
import datetime
import json
import math
import types
from collections import Counter, OrderedDict, defaultdict, deque, namedtuple
from decimal import Decimal
from fractions import Fraction

MAX_EQUAL_HASHES = 16  # distinct keys of one container that may share a hash value
MAX_NUMBER_DIGITS = 1 << 16  # hex digits of a Fraction's parts, characters of a Decimal (trusted-side cost)
NATIVE_INT = 1 << 63  # ints below this in magnitude are JSON numbers; larger ones travel as hex (no 4300-digit limit)


class NotAValue(Exception):
    """The object is not one of the codec's value types, and the encoder has no `export` for it."""


class TooLarge(Exception):
    """The encoded value would exceed the encoder's size limit."""


_PURE_FUNCTIONS = frozenset(
    "abs all any ascii bin callable chr divmod format hash hex id isinstance issubclass iter len max min next oct "
    "ord pow repr round sorted sum".split()
)
# Builtins that cross by name: every builtin type (int, list, ValueError, ...) and the pure functions above.
BUILTIN_NAMES = frozenset(
    name
    for name, value in vars(builtins).items()
    if not name.startswith("_") and (isinstance(value, type) or name in _PURE_FUNCTIONS)
) | {"Ellipsis", "NotImplemented"}
_BUILTIN_BY_ID = {id(getattr(builtins, name)): name for name in BUILTIN_NAMES}
_MUTABLE = (list, dict, set, bytearray, deque, Counter, OrderedDict, defaultdict)
_ORDERED_PAIRS = {dict: "d", Counter: "ctr", OrderedDict: "od"}
_SEQUENCES = {list: "l", tuple: "t", set: "s", frozenset: "fs"}
_VIEWS = {type({}.keys()): "kv", type({}.values()): "vv", type({}.items()): "iv"}
_JSON_SCALARS = (str, float, bool, type(None))
_JSON_SCALAR_SET = frozenset(_JSON_SCALARS)
_FLAT_TYPES = _JSON_SCALAR_SET | {int}


def is_namedtuple_type(cls: type) -> bool:
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple) and cls.__eq__ is tuple.__eq__


# ---------------------------------------------------------------------------------------------------- encoding


class Encoder:
    """Encodes one message. `export(obj) -> node` stands in for objects that are not values (a handle, say);
    without it they raise NotAValue. `value_classes`: class names sent by value, as their attributes."""

    def __init__(
        self,
        export=None,
        value_classes: frozenset[str] = frozenset(),
        origins: list | None = None,
        limit: int | None = None,
        own_module: str | None = None,
    ):
        self.export = export
        self.value_classes = value_classes
        self.origin_index = {id(obj): index for index, obj in enumerate(origins or ())
                             if is_restorable(obj, value_classes)}  # fmt: skip
        self.own_module = own_module  # instances of classes defined there go to `export`, even subclasses of values
        self.limit = limit
        self.size = 0
        self.table: list = []
        self.memo: dict[int, int] = {}
        self.keep: list = []  # keeps every encoded container alive, so that no id() is reused mid-message
        self.pending: list = []

    def message(self, value) -> dict:
        """The message for `value`, as JSON-ready data."""
        root = self.node(value)
        while self.pending:
            index, obj = self.pending.pop()
            self.table[index] = self.entry(obj)
        return {"v": root, "o": self.table} if self.table else {"v": root}

    def encode(self, value) -> str:
        text = json.dumps(self.message(value), separators=(",", ":"))
        if self.limit is not None and len(text) > self.limit:
            raise TooLarge(f"{len(text)} bytes")
        return text

    def _grow(self, size: int) -> None:
        self.size += size
        if self.limit is not None and self.size > self.limit:
            raise TooLarge(f"over {self.limit} bytes")

    def node(self, value):
        """The inline node for `value`: itself for JSON scalars, a tagged scalar, or a reference to a table entry."""
        kind = type(value)
        if kind is int:
            self._grow(8)
            return value if -NATIVE_INT < value < NATIVE_INT else {"i": format(value, "x")}
        if kind in _JSON_SCALARS:
            self._grow(len(value) + 2 if kind is str else 8)
            return value
        self._grow(8)
        if id(value) in self.memo:
            return {"r": self.memo[id(value)]}
        if (kind is tuple or kind is frozenset) and self.is_flat(value):
            return {"t" if kind is tuple else "fs": list(value)}  # inline: immutable and flat
        if kind in _SEQUENCES or kind in _ORDERED_PAIRS or kind in _VIEWS or kind in (bytearray, deque, defaultdict):
            return self.reference(value)
        if id(value) in self.origin_index or _is_instance_of_value_class(value, self.value_classes):
            return self.reference(value)
        scalar = self.scalar(value)
        if scalar is not None:
            return scalar
        if isinstance(value, tuple) and is_namedtuple_type(kind):
            return self.reference(value)
        if isinstance(value, BaseException) and kind.__name__ in BUILTIN_NAMES and kind.__module__ == "builtins":
            return self.reference(value)
        if self.own_module is not None and getattr(kind, "__module__", None) == self.own_module:
            return self.exported(value)
        for base in (bool, int, float, complex, str, bytes, tuple, list, frozenset, set, dict):
            if isinstance(value, base) and not isinstance(value, type):  # a subclass crosses as its base type
                return self.node(base(value))
        return self.exported(value)

    def is_flat(self, items) -> bool:
        """Whether every item is a JSON scalar (then the container is sent as it is); counts their size."""
        kinds = set(map(type, items))
        if not kinds <= _FLAT_TYPES or (int in kinds and not all(-NATIVE_INT < item < NATIVE_INT for item in items
                                                                 if type(item) is int)):  # fmt: skip
            return False
        self._grow(8 * len(items) + (sum(map(len, filter(_is_str, items))) if str in kinds else 0))
        return True

    def exported(self, value):
        if self.export is None:
            raise NotAValue(type(value).__name__)
        return self.export(value)

    def reference(self, obj) -> dict:
        index = len(self.table)
        self.table.append(None)
        self.memo[id(obj)] = index
        self.keep.append(obj)
        self.pending.append((index, obj))
        return {"r": index}

    def scalar(self, value):
        kind = type(value)
        if kind is bytes:
            self._grow(len(value) * 4 // 3 + 8)
            return {"b": base64.b64encode(value).decode()}
        if kind is memoryview:
            return self.scalar(value.tobytes())
        if kind is complex:
            return {"c": [value.real, value.imag]}
        if kind is Fraction:
            return {"fr": [self.node(value.numerator), self.node(value.denominator)]}
        if kind is Decimal:
            text = str(value)
            self._grow(len(text))
            return {"dec": text}
        if kind is range:
            return {"rg": [self.node(value.start), self.node(value.stop), self.node(value.step)]}
        if kind is slice:
            return {"sl": [self.node(value.start), self.node(value.stop), self.node(value.step)]}
        if kind is datetime.date:
            return {"date": value.isoformat()}
        if kind is datetime.datetime and _fixed_offset(value.tzinfo):
            return {"dt": value.isoformat()}
        if kind is datetime.time and _fixed_offset(value.tzinfo):
            return {"tm": value.isoformat()}
        if kind is datetime.timedelta:
            return {"td": [value.days, value.seconds, value.microseconds]}
        if id(value) in _BUILTIN_BY_ID:
            return {"bt": _BUILTIN_BY_ID[id(value)]}
        if isinstance(value, type) and value.__name__ in self.value_classes:
            return {"cls": value.__name__}
        enum_class = type(value)
        if enum_class.__name__ in self.value_classes and hasattr(enum_class, "_member_map_"):
            return {"en": [enum_class.__name__, value._name_]}
        return None

    def entry(self, obj):
        """The table entry of a container."""
        index = self.origin_index.get(id(obj))
        if index is not None:
            return {"o": [index, self.content(obj)]}
        kind = type(obj)
        if kind in _SEQUENCES:
            return {_SEQUENCES[kind]: self.content(obj)}
        if kind in _ORDERED_PAIRS or kind is defaultdict or kind in _VIEWS or kind in (bytearray, deque):
            return {_tag(kind): self.content(obj)}
        if isinstance(obj, BaseException):
            return {"ex": [type(obj).__name__, [self.node(arg) for arg in obj.args]]}
        if isinstance(obj, tuple):  # a namedtuple
            self._grow(sum(len(field) for field in kind._fields))
            return {"nt": [kind.__name__, list(kind._fields), [self.node(item) for item in obj]]}
        return {"obj": [kind.__name__, self.content(obj)]}

    def content(self, obj) -> list | str:
        """What an entry holds, without its tag (an origin update sends only this)."""
        kind = type(obj)
        if kind in _VIEWS:
            return self.pairs(obj) if _VIEWS[kind] == "iv" else [self.node(item) for item in obj]
        if isinstance(obj, list | set | frozenset | tuple):
            return list(obj) if self.is_flat(obj) else [self.node(item) for item in obj]
        if isinstance(obj, bytearray):
            self._grow(len(obj) * 4 // 3)
            return base64.b64encode(obj).decode()
        if isinstance(obj, deque):
            return [[self.node(item) for item in obj], obj.maxlen]
        if isinstance(obj, defaultdict):
            factory = None if obj.default_factory is None else self.node(obj.default_factory)
            return [factory, self.pairs(obj.items())]
        if isinstance(obj, dict):
            return self.pairs(obj.items())
        state = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
        for cls in kind.__mro__:
            for name in getattr(cls, "__slots__", ()):
                if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                    state[name] = getattr(obj, name)
        return self.pairs((name, value) for name, value in state.items() if type(name) is str)

    def pairs(self, items) -> list:
        flat = []
        for key, value in items:
            flat.append(self.node(key))
            flat.append(self.node(value))
        return flat


def _is_str(value) -> bool:
    return type(value) is str


def _tag(kind: type) -> str:
    return _ORDERED_PAIRS.get(kind) or _VIEWS.get(kind) or {bytearray: "ba", deque: "dq", defaultdict: "dd"}[kind]


def _fixed_offset(tzinfo) -> bool:
    return tzinfo is None or type(tzinfo) is datetime.timezone


_BUILTIN_BASES = (tuple, list, dict, set, frozenset, str, bytes, bytearray, int, float, complex, type)


def _is_instance_of_value_class(obj, value_classes: frozenset[str]) -> bool:
    """Sent as its attributes: not an Enum member, nor a subclass of a builtin (a NamedTuple crosses as a namedtuple,
    a dict subclass as a dict)."""
    kind = type(obj)
    return kind.__name__ in value_classes and not hasattr(kind, "_member_map_") and not isinstance(obj, _BUILTIN_BASES)


def is_restorable(obj, value_classes: frozenset[str]) -> bool:
    """Whether a received object goes back to its sender after a call (copy-restore): containers that can change in
    place, and value-class objects."""
    return isinstance(obj, _MUTABLE) or _is_instance_of_value_class(obj, value_classes)


def encode(value, **options) -> str:
    """`value` as a message (options as for `Encoder`)."""
    return Encoder(**options).encode(value)


# ---------------------------------------------------------------------------------------------------- decoding

_NEW_EMPTY = {"l": list, "s": set, "d": dict, "ctr": Counter, "od": OrderedDict, "ba": bytearray}
_IMMUTABLE = frozenset({"t", "fs", "nt", "kv", "vv", "iv", "ex"})


class Decoder:
    """Decodes messages. `resolve(node) -> object` for handle nodes (`h`, `y`, `n`, `opaque`); `classes`: value classes
    by name; `targets`: the objects this side sent in the call being answered (copy-restore)."""

    def __init__(self, resolve=None, classes: dict | None = None, targets: list | None = None):
        self.resolve = resolve
        self.classes = classes or {}
        self.targets = targets or []
        self.objects: list = []

    def decode(self, text: str | bytes):
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise ValueError(f"not a value message: {type(error).__name__}") from None
        return self.decode_message(message)

    def decode_message(self, message):
        """The value of a message already parsed from JSON."""
        try:
            if not isinstance(message, dict) or "v" not in message:
                raise ValueError("not a message")
            table = message.get("o", [])
            if not isinstance(table, list):
                raise ValueError("bad table")
            self.entries = table
            self.objects = [_UNBUILT] * len(table)
            for index, entry in enumerate(table):  # containers that may be filled later exist first (cycles)
                self.objects[index] = self.shell(entry)
            for index in reversed(range(len(table))):  # later entries are mostly inside earlier ones: fill them first
                self.fill(index)
            return self.node(message["v"])
        except (KeyError, IndexError, TypeError, AttributeError, RecursionError, OverflowError, MemoryError) as error:
            raise ValueError(f"not a value message: {type(error).__name__}: {error}"[:200]) from None
        except ArithmeticError as error:  # decimal.InvalidOperation
            raise ValueError(f"not a value message: {type(error).__name__}") from None

    def shell(self, entry):
        tag, content = _single(entry)
        if tag == "o":
            target = self.targets[_index(content[0], len(self.targets))]
            if not (isinstance(target, _MUTABLE) or type(target).__name__ in self.classes):
                raise ValueError("only containers and value-class objects are updated in place")
            return target
        if tag in _NEW_EMPTY:
            return _NEW_EMPTY[tag]()
        if tag == "dq":
            maxlen = content[1]
            if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
                raise ValueError("bad deque")
            return deque(maxlen=maxlen)
        if tag == "dd":
            return defaultdict()
        if tag == "obj":
            cls = self.classes.get(content[0])
            if not isinstance(cls, type):
                raise ValueError(f"unknown value class {content[0]!r:.80}")
            return object.__new__(cls) if cls.__new__ is object.__new__ else cls.__new__(cls)
        if tag in _IMMUTABLE:
            return _UNBUILT
        raise ValueError(f"unknown entry {tag!r:.40}")

    def fill(self, index: int) -> None:
        tag, content = _single(self.entries[index])
        if tag in _IMMUTABLE:
            return
        target = self.objects[index]
        if tag == "o":
            tag, content = _content_tag(target), content[1]
        elif tag == "obj":
            content = content[1]
        if tag in ("l", "s"):
            items = content if set(map(type, content)) <= _FLAT_TYPES else [self.node(item) for item in content]
            if tag == "l":
                target[:] = items
            else:
                target.clear()
                target.update(_spread_hashes(items))
        elif tag == "ba":
            target[:] = base64.b64decode(content, validate=True)
        elif tag == "dq":
            target.clear()
            target.extend(self.node(item) for item in content[0])
        elif tag == "dd":
            factory = None if content[0] is None else self.node(content[0])
            if factory is not None and not callable(factory):
                raise ValueError("bad default_factory")
            target.clear()
            target.default_factory = factory
            target.update(self.pairs(content[1]))
        elif tag in ("d", "ctr", "od"):
            target.clear()
            for key, value in self.pairs(content):
                target[key] = value
        elif tag == "obj":
            state = self.pairs(content)
            if hasattr(target, "__dict__"):
                target.__dict__.clear()
            for name, value in state:
                if type(name) is not str or not name.isidentifier() or (name.startswith("__") and name.endswith("__")):
                    raise ValueError("bad attribute name")
                if hasattr(target, "__dict__") and name not in _slot_names(type(target)):
                    target.__dict__[name] = value
                else:
                    object.__setattr__(target, name, value)

    def build(self, index: int):
        """An immutable entry, building the immutable entries inside it first (an explicit stack: no recursion)."""
        stack = [index]
        while stack:
            current = stack[-1]
            if self.objects[current] is not _UNBUILT:
                stack.pop()
                continue
            missing = [child for child in self.children(current) if self.objects[child] is _UNBUILT]
            if missing:
                if any(child in stack for child in missing):
                    raise ValueError("a cycle through immutable values")
                stack.extend(missing)
                continue
            self.objects[current] = self.make(current)
            stack.pop()
        return self.objects[index]

    def children(self, index: int) -> list[int]:
        found = []
        pending = [self.entries[index]]
        while pending:
            item = pending.pop()
            if isinstance(item, dict):
                if "r" in item and len(item) == 1:
                    child = _index(item["r"], len(self.objects))
                    if self.entries[child] and next(iter(self.entries[child])) in _IMMUTABLE:
                        found.append(child)
                else:
                    pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
        return found

    def make(self, index: int):
        tag, content = _single(self.entries[index])
        if tag == "t":
            return tuple(self.node(item) for item in content)
        if tag == "fs":
            return frozenset(_spread_hashes([self.node(item) for item in content]))
        if tag == "kv":
            return dict.fromkeys(_spread_hashes([self.node(item) for item in content])).keys()
        if tag == "vv":
            return dict(enumerate(self.node(item) for item in content)).values()
        if tag == "iv":
            return dict(self.pairs(content)).items()
        if tag == "ex":
            name, args = content
            cls = getattr(builtins, name, None) if name in BUILTIN_NAMES else None
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise ValueError(f"unknown exception type {name!r:.80}")
            return cls(*(self.node(arg) for arg in args))
        name, fields, items = content
        cls = self.classes.get(name)  # a NamedTuple of the setup code: the receiver's own class
        if not (isinstance(cls, type) and is_namedtuple_type(cls) and list(cls._fields) == fields):
            cls = _namedtuple_type(name, tuple(fields))
        return cls._make(self.node(item) for item in items)

    def pairs(self, flat: list) -> list[tuple]:
        if len(flat) % 2:
            raise ValueError("odd pairs")
        keys = _spread_hashes([self.node(key) for key in flat[0::2]])
        return list(zip(keys, (self.node(value) for value in flat[1::2]), strict=True))

    def node(self, node):
        if type(node) in (int, *_JSON_SCALARS):
            return node
        if type(node) is not dict or len(node) != 1:
            raise ValueError("bad node")
        ((tag, content),) = node.items()
        if tag == "r":
            index = _index(content, len(self.objects))
            return self.build(index) if self.objects[index] is _UNBUILT else self.objects[index]
        if tag in ("t", "fs"):
            if type(content) is not list or not set(map(type, content)) <= _FLAT_TYPES:
                raise ValueError("bad inline tuple")
            return tuple(content) if tag == "t" else frozenset(_spread_hashes(content))
        if tag == "i":
            if not isinstance(content, str):
                raise ValueError("bad int")
            return int(content, 16)
        if tag == "b":
            return base64.b64decode(content, validate=True)
        if tag == "c":
            real, imag = content
            if type(real) not in (int, float) or type(imag) not in (int, float):
                raise ValueError("bad complex")
            return complex(real, imag)
        if tag == "fr":
            numerator, denominator = (self.node(part) for part in content)
            if (
                type(numerator) is not int
                or type(denominator) is not int
                or max(numerator.bit_length(), denominator.bit_length()) > 4 * MAX_NUMBER_DIGITS
            ):
                raise ValueError("bad fraction")
            return Fraction(numerator, denominator)
        if tag == "dec":
            if not isinstance(content, str) or len(content) > MAX_NUMBER_DIGITS:
                raise ValueError("bad decimal")
            return Decimal(content)
        if tag in ("rg", "sl"):
            parts = [self.node(part) for part in content]
            if tag == "sl":
                return slice(*parts)
            if len(parts) != 3 or any(type(part) is not int for part in parts):
                raise ValueError("bad range")
            return range(*parts)
        if tag in ("date", "dt", "tm"):
            parse = {"date": datetime.date, "dt": datetime.datetime, "tm": datetime.time}[tag].fromisoformat
            return parse(content)
        if tag == "td":
            days, seconds, microseconds = content
            return datetime.timedelta(days=days, seconds=seconds, microseconds=microseconds)
        if tag == "bt":
            if content not in BUILTIN_NAMES:
                raise ValueError(f"not a shareable builtin: {content!r:.40}")
            return getattr(builtins, content)
        if tag == "cls":
            cls = self.classes.get(content)
            if not isinstance(cls, type):
                raise ValueError(f"unknown value class {content!r:.80}")
            return cls
        if tag == "en":
            cls = self.classes.get(content[0])
            if not hasattr(cls, "_member_map_") or content[1] not in cls._member_map_:
                raise ValueError("unknown enum member")
            return cls._member_map_[content[1]]
        if tag in ("h", "y", "n", "opaque") and self.resolve is not None:
            return self.resolve(node)
        raise ValueError(f"unknown node {tag!r:.40}")


_UNBUILT = object()


def _single(entry) -> tuple[str, object]:
    if type(entry) is not dict or len(entry) != 1:
        raise ValueError("bad entry")
    ((tag, content),) = entry.items()
    return tag, content


def _index(value, size: int) -> int:
    if type(value) is not int or not 0 <= value < size:
        raise ValueError("bad reference")
    return value


def _content_tag(target) -> str:
    for kind, tag in ((Counter, "ctr"), (OrderedDict, "od"), (defaultdict, "dd"), (dict, "d"), (list, "l"),
                      (set, "s"), (bytearray, "ba"), (deque, "dq")):  # fmt: skip
        if isinstance(target, kind):
            return tag
    return "obj"


def _slot_names(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())}


_namedtuple_cache: OrderedDict[tuple, type] = OrderedDict()


def _namedtuple_type(name: str, fields: tuple) -> type:
    """A namedtuple class for a received one (the most recent 256 are kept: each costs a class)."""
    key = (name, fields)
    if key in _namedtuple_cache:
        _namedtuple_cache.move_to_end(key)
    else:
        if not all(isinstance(part, str) for part in (name, *fields)) or len(fields) > 256:
            raise ValueError("bad namedtuple type")
        _namedtuple_cache[key] = namedtuple(name, fields)  # validates the names: identifiers, no keywords
        if len(_namedtuple_cache) > 256:
            _namedtuple_cache.popitem(last=False)
    return _namedtuple_cache[key]


def _spread_hashes(items: list) -> list:
    """`items`, unless many distinct ones share a hash value (ints are easy to collide: multiples of 2**61 - 1).

    Putting such items in a set or dict, here or later in a test like `set(result) == ...`, takes quadratic time: a
    large answer could stall the trusted side for many seconds.
    """
    if len(items) <= MAX_EQUAL_HASHES:
        return items
    counts = Counter(hash(item) for item in items if type(item).__hash__ is not None)
    for value, count in counts.items():
        if count <= MAX_EQUAL_HASHES:
            continue
        distinct: list = []  # equal items share a hash harmlessly: count the distinct ones
        for item in items:
            if type(item).__hash__ is not None and hash(item) == value and all(item != other for other in distinct):
                distinct.append(item)
                if len(distinct) > MAX_EQUAL_HASHES:
                    raise ValueError("too many distinct values with one hash")
    return items


def decode(text: str | bytes, **options):
    """The value of a message (options as for `Decoder`); raises ValueError for anything else."""
    return Decoder(**options).decode(text)


def same_value(a, b) -> bool:
    """Equal with the same types all the way down (nan equals nan): how tests check a round trip."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, complex):
        return same_value(a.real, b.real) and same_value(a.imag, b.imag)
    if isinstance(a, list | tuple | deque):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_value(a[key], b[key]) for key in a)
    if isinstance(a, types.MappingProxyType):
        return same_value(dict(a), dict(b))
    return a == b
