"""`Record`, which builds the inbox's records at run time as `typing.NamedTuple` would
(the rpc never imports typing): the same class from the same body, the same refusals."""

from __future__ import annotations

import pickle
import typing

import pytest

from control.queue.records import Message, Record

BASES = ("Record", "typing.NamedTuple")


def _made(base: str, body: str) -> type:
    """The class `body` makes on `base`."""
    scope = {"Record": Record, "typing": typing}
    exec(f"class C({base}):\n" + body, scope)
    made: type = scope["C"]
    return made


def test_a_record_is_what_typing_makes_of_the_same_body() -> None:
    body = (
        '    """A doc."""\n    a: int\n    b: str = "x"\n'
        "    def twice(self):\n        return 2 * self.a\n"
    )
    for cls in (_made(base, body) for base in BASES):
        value = cls(3)
        assert (value, value.twice(), value._replace(b="y"), value._asdict()) == (
            (3, "x"), 6, (3, "y"), {"a": 3, "b": "x"})  # fmt: skip
        assert (cls.__doc__, cls._fields, cls._field_defaults, repr(value)) == (
            "A doc.", ("a", "b"), {"b": "x"}, "C(a=3, b='x')")  # fmt: skip
        assert list(cls.__annotations__) == ["a", "b"] and isinstance(value, tuple)


@pytest.mark.parametrize(
    "body",
    ["    a: int = 1\n    b: int\n", "    a: int\n    def _replace(self):\n        pass\n"],
)
@pytest.mark.parametrize("base", BASES)
def test_a_record_refuses_what_typing_refuses(base: str, body: str) -> None:
    with pytest.raises((TypeError, AttributeError)):
        _made(base, body)


def test_an_inbox_record_pickles_and_reads_back() -> None:
    fields = dict.fromkeys(Message._fields)
    message = Message(**{**fields, "id": 1, "payload": {"x": [1]}})
    assert pickle.loads(pickle.dumps(message)) == message
    assert type(message).__module__ == "control.queue.records"
