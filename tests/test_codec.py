"""`rewards.sandbox.codec`: every value type round-trips, nothing in a message runs code, and decoding costs stay
bounded (the trusted side decodes what untrusted code sent)."""

from __future__ import annotations

import collections
import datetime
import json
import time
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.sandbox.codec import Decoder, Encoder, NotAValue, TooLarge, decode, encode, same_value

scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**6000), max_value=10**6000)
    | st.floats() | st.text() | st.binary() | st.complex_numbers() | st.fractions() | st.decimals(allow_nan=False)
    | st.dates() | st.datetimes() | st.timedeltas()
    | st.builds(range, st.integers(-5, 5), st.integers(-5, 50), st.integers(1, 5))
)  # fmt: skip
hashables = st.integers() | st.text() | st.tuples(st.integers(), st.text()) | st.frozensets(st.integers())
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner)
        | st.tuples(inner, inner)
        | st.dictionaries(hashables, inner)
        | st.sets(hashables)
        | st.frozensets(st.integers() | st.text())
        | st.builds(collections.Counter, st.dictionaries(st.text(), st.integers()))
        | st.builds(collections.OrderedDict, st.dictionaries(st.text(), inner))
        | st.builds(collections.deque, st.lists(inner))
        | st.builds(bytearray, st.binary())
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_value_round_trips_with_its_types(value):
    assert same_value(decode(encode(value)), value)


def test_the_standard_library_types_a_solution_returns():
    point = collections.namedtuple("Point", "x y")
    grouped = collections.defaultdict(list, {1: ["a"]})
    for value in [point(1, 2), grouped, collections.deque([1], maxlen=3), Fraction(1, 3), Decimal("1.10"),
                  datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc), range(0, 10, 3),
                  memoryview(b"ab"), slice(1, None), Ellipsis, int, len, ValueError("bad", 3)]:  # fmt: skip
        rebuilt = decode(encode(value))
        assert rebuilt == value or (isinstance(value, BaseException) and rebuilt.args == value.args), value
    assert decode(encode(point(1, 2))).x == 1 and decode(encode(grouped))[2] == []
    assert decode(encode(collections.deque([1], maxlen=3))).maxlen == 3
    views = decode(encode([{1: 2}.keys(), {1: 2}.items(), {1: 2}.values()]))
    assert views[0] == {1} and views[1] == {(1, 2)} and list(views[2]) == [2]
    assert type(decode(encode(10**5000))) is int  # past the 4300-digit str() limit


def test_shared_and_cyclic_structures_keep_their_shape_and_cost_no_recursion():
    row = [1]
    shared = decode(encode([row, row]))
    assert shared[0] is shared[1]
    cycle: list = []
    cycle.append(cycle)
    rebuilt = decode(encode(cycle))
    assert rebuilt[0] is rebuilt
    nested: list = []
    for _ in range(100_000):  # far deeper than the recursion limit
        nested = [nested]
    depth, node = 0, decode(encode(nested))
    while node:
        depth, node = depth + 1, node[0]
    assert depth == 100_000
    doubling: list = []
    for _ in range(200):  # 2**200 leaves as a tree, 200 entries as a table
        doubling = [doubling, doubling]
    assert len(encode(doubling)) < 10_000


class Rigged(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def test_subclasses_cross_as_their_base_type_and_objects_not_at_all():
    assert type(decode(encode(Rigged(3)))) is int and decode(encode(Rigged(3))) != 4
    with pytest.raises(NotAValue):
        encode(object())
    with pytest.raises(NotAValue):  # the candidate's own classes, where the encoder is told which module is its own
        Encoder(own_module=__name__).encode(Rigged(3))
    assert Encoder(export=lambda obj: {"opaque": type(obj).__name__}).message(object()) == {"v": {"opaque": "object"}}


@pytest.mark.parametrize(
    "message",
    [
        {"v": {"bt": "eval"}}, {"v": {"bt": "__import__"}}, {"v": {"bt": "open"}}, {"v": {"cls": "os"}},
        {"v": {"r": 0}, "o": [{"obj": ["Anything", []]}]}, {"v": {"r": 0}, "o": [{"nt": ["P", ["import os"], [1]]}]},
        {"v": {"r": 0}, "o": [{"ex": ["SystemExit_", []]}]}, {"v": {"h": 1}}, {"v": {"r": 5}}, {"v": [1, 2]},
        {"v": {"r": 0}, "o": [{"t": [{"r": 0}]}]}, {"v": {"i": 12}}, {"v": {"c": ["1", 2]}}, {"v": {"rg": [1, 2]}},
        {"v": {"dec": "1" * 70_000}}, {"v": {"fr": [{"i": "f" * 70_000}, 1]}}, {"v": 1, "o": {}}, {"x": 1},
    ],
)  # fmt: skip
def test_anything_else_is_refused(message):
    with pytest.raises(ValueError):
        decode(json.dumps(message))


def test_value_classes_rebuild_as_the_receivers_class_without_running_it():
    class Node:
        def __init__(self, val, next=None):
            raise AssertionError("decoding must not call __init__")

    sent = object.__new__(Node)
    sent.__dict__.update(val=1, next=None)
    rebuilt = decode(encode(sent, value_classes=frozenset({"Node"})), classes={"Node": Node})
    assert type(rebuilt) is Node and rebuilt.val == 1 and rebuilt.next is None
    for name in ("__class__", "__dict__", "not an identifier"):
        bad = {"v": {"r": 0}, "o": [{"obj": ["Node", [name, 1]]}]}
        with pytest.raises(ValueError, match="attribute name"):
            decode(json.dumps(bad), classes={"Node": Node})


def test_copy_restore_updates_the_senders_objects_in_place():
    xs, table = [3, 1, 2], {"k": [1]}
    encoder = Encoder()
    arguments = encoder.message([xs, table])
    receiver = Decoder()
    received_xs, received_table = receiver.decode_message(arguments)
    received_xs.sort()
    received_table["k"].append(2)
    received_table["new"] = received_xs
    reply = Encoder(origins=receiver.objects).message([None, [received_xs, received_table]])
    Decoder(targets=encoder.keep).decode_message(reply)
    assert xs == [1, 2, 3] and table == {"k": [1, 2], "new": [1, 2, 3]} and table["new"] is xs


def test_a_size_limit_stops_the_encoder_early():
    with pytest.raises(TooLarge):
        encode(["x" * 1000] * 10_000, limit=1 << 20)
    assert decode(encode("x" * 1000, limit=1 << 20)) == "x" * 1000


@pytest.mark.parametrize("item", ["{}", "[{}, 1]"], ids=["int", "tuple"])
@pytest.mark.parametrize("container", ["s", "fs", "d", "kv"])
def test_hash_flooding_is_refused_quickly(container, item):
    """Distinct values with one hash make set and dict building quadratic; the trusted side must not pay for that."""
    items = [json.loads(item.format(index * (2**61 - 1))) for index in range(20_000)]
    items = [{"t": entry} if isinstance(entry, list) else entry for entry in items]
    content = [part for entry in items for part in (entry, 0)] if container == "d" else items
    message = json.dumps({"v": {"r": 0}, "o": [{container: content}]})
    started = time.process_time()  # CPU time, which other processes' load does not inflate
    with pytest.raises(ValueError, match="one hash"):
        decode(message)
    assert time.process_time() - started < 1.0  # refused: ~50 ms; building 20,000 colliding ints alone takes ~2 s


def test_repeated_and_a_few_colliding_values_are_kept():
    assert decode(encode([0] * 1000)) == [0] * 1000
    assert decode(encode({-1, -2})) == {-1, -2}  # hash(-1) == hash(-2) in CPython
    assert decode(encode({index * (2**61 - 1) for index in range(16)})) == {i * (2**61 - 1) for i in range(16)}
