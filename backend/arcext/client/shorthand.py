"""az's shorthand syntax for object and dictionary arguments (``'{commandToExecute:hostname}'``).

The rules of azure-cli's AAZ shorthand parser, for the values arcext's commands take:

- ``{key:value,key2:value2}`` is an object, ``[a,b]`` a list; both nest.
- A value without quotes runs to the next ``,``, ``}`` or ``]`` (so ``powershell -c Get-Date`` and
  ``https://x/y`` need no quotes) and is a string; ``null`` is null.
- ``"..."`` is a JSON string (its escapes apply); ``'...'`` is taken literally, with ``/'`` for a
  single quote inside it.
- A key without quotes runs to the next ``:``; quoted keys follow the value rules; blanks before a key
  are skipped.

A full JSON document is valid shorthand, so callers try JSON first (keeping JSON's numbers and
booleans) and fall back to this parser.
"""

from __future__ import annotations

import json
from typing import Any


class ShorthandError(ValueError):
    pass


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> ShorthandError:
        return ShorthandError(f"{message} at position {self.pos} of '{self.text}'")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected '{char}'")
        self.pos += 1

    def value(self, top: bool = False) -> Any:
        char = self.peek()
        if char == "{":
            return self.obj()
        if char == "[":
            return self.array()
        if char in ('"', "'"):
            return self.quoted()
        return self.bare(stops="" if top else ",}]")

    def obj(self) -> dict[str, Any]:
        self.expect("{")
        out: dict[str, Any] = {}
        if self.peek() == "}":
            self.pos += 1
            return out
        while True:
            key = self.key()
            self.expect(":")
            out[key] = self.value()
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect("}")
            return out

    def array(self) -> list[Any]:
        self.expect("[")
        out: list[Any] = []
        if self.peek() == "]":
            self.pos += 1
            return out
        while True:
            out.append(self.value())
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect("]")
            return out

    def key(self) -> str:
        while self.peek() in (" ", "\t", "\n"):
            self.pos += 1
        if self.peek() in ('"', "'"):
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ":,{}[]":
            self.pos += 1
        key = self.text[start : self.pos].strip()
        if not key:
            raise self.fail("expected a key")
        return key

    def quoted(self) -> str:
        quote = self.peek()
        if quote == '"':
            decoder = json.JSONDecoder()
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except ValueError:
                raise self.fail("unterminated or invalid double-quoted string") from None
            self.pos = end
            return str(value)
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated single-quoted string")
            char = self.text[self.pos]
            if char == "/" and self.text[self.pos + 1 : self.pos + 2] == "'":
                out.append("'")
                self.pos += 2
                continue
            if char == "'":
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1

    def bare(self, stops: str) -> Any:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            self.pos += 1
        raw = self.text[start : self.pos]
        if raw == "null":
            return None
        return raw


def parse(text: str) -> Any:
    """The value of a shorthand (or JSON) argument; raises ShorthandError when it is neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    parser = _Parser(text)
    value = parser.value(top=True)
    if parser.pos != len(text):
        raise parser.fail("unexpected text")
    return value
