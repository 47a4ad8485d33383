"""A subset of Consul's `?filter=` (go-bexpr) language over the JSON a query returns.

Supported: `Sel == v`, `Sel != v`, `v in Sel`, `v not in Sel`, `Sel contains v`, `Sel not contains v`,
`Sel matches re`, `Sel not matches re`, `Sel is empty`, `Sel is not empty`, `and`, `or`, `not`, parentheses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import re2

from meshspec.runtime.agent.errors import bad_request

Predicate = Callable[[Any], bool]
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a user's bad pattern is answered with 400, not logged by RE2 itself
_TOKEN = re.compile(r'\s*(?:(\()|(\))|(==|!=)|"((?:[^"\\]|\\.)*)"|`([^`]*)`|([A-Za-z0-9_.\-/:]+))')
_MISSING = object()


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise _error(f"unexpected input at position {pos}: {text[pos:pos + 10]!r}")
        lpar, rpar, op, dq, bq, word = match.groups()
        if lpar:
            tokens.append(("(", lpar))
        elif rpar:
            tokens.append((")", rpar))
        elif op:
            tokens.append(("op", op))
        elif dq is not None:
            tokens.append(("value", bytes(dq, "utf-8").decode("unicode_escape")))
        elif bq is not None:
            tokens.append(("value", bq))
        else:
            tokens.append(("word", word))
        pos = match.end()
    return tokens


def _error(message: str):
    return bad_request(f"Failed to create boolean expression evaluator: {message}")


def select(obj: Any, path: list[str]) -> Any:
    """Follow a dotted selector; lists along the way fan out (Checks.Status -> every status)."""
    current = obj
    for part in path:
        if isinstance(current, list):
            current = [select(item, [part]) for item in current]
            current = [c for c in current if c is not _MISSING]
            continue
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _contains(value: Any, needle: str) -> bool:
    if isinstance(value, (list, dict)):
        return any(_text(v) == needle for v in value)
    if isinstance(value, str):
        return needle in value
    return False


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise _error("unexpected end of expression")
        self.pos += 1
        return token

    def keyword(self, *words: str) -> bool:
        for i, word in enumerate(words):
            token = self.peek(i)
            if token is None or token[0] != "word" or token[1].lower() != word:
                return False
        self.pos += len(words)
        return True

    def parse(self) -> Predicate:
        pred = self.disjunction()
        if self.peek() is not None:
            raise _error(f"unexpected {self.peek()[1]!r}")
        return pred

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda o, ps=parts: any(p(o) for p in ps))

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.keyword("and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda o, ps=parts: all(p(o) for p in ps))

    def negation(self) -> Predicate:
        if self.keyword("not"):
            inner = self.negation()
            return lambda o: not inner(o)
        if self.peek() and self.peek()[0] == "(":
            self.take()
            inner = self.disjunction()
            if self.take()[0] != ")":
                raise _error("missing ')'")
            return inner
        return self.match()

    def match(self) -> Predicate:
        kind, first = self.take()
        if kind == "value" or (kind == "word" and self._value_first()):
            negate = self.keyword("not")
            if not self.keyword("in"):
                raise _error(f"expected 'in' after {first!r}")
            path = self.selector()
            return lambda o: _contains(select(o, path), first) != negate
        if kind != "word":
            raise _error(f"unexpected {first!r}")
        path = first.split(".")
        return self.operator(path)

    def _value_first(self) -> bool:
        token = self.peek()
        nxt = self.peek(1)
        return token is not None and token[0] == "word" and (
            token[1].lower() == "in" or (token[1].lower() == "not" and nxt is not None and nxt[1].lower() == "in")
        )

    def selector(self) -> list[str]:
        kind, text = self.take()
        if kind != "word":
            raise _error(f"expected a selector, got {text!r}")
        return text.split(".")

    def value(self) -> str:
        kind, text = self.take()
        if kind not in ("value", "word"):
            raise _error(f"expected a value, got {text!r}")
        return text

    def operator(self, path: list[str]) -> Predicate:
        token = self.peek()
        if token and token[0] == "op":
            self.take()
            value = self.value()
            equal = token[1] == "=="
            return lambda o: _equals(select(o, path), value) == equal
        if self.keyword("is", "not", "empty"):
            return lambda o: not _empty(select(o, path))
        if self.keyword("is", "empty"):
            return lambda o: _empty(select(o, path))
        negate = self.keyword("not")
        if self.keyword("contains"):
            value = self.value()
            return lambda o: _contains(select(o, path), value) != negate
        if self.keyword("matches"):
            pattern = self._regex(self.value())
            return lambda o: _matches(select(o, path), pattern) != negate
        raise _error(f"expected an operator after {'.'.join(path)!r}")

    @staticmethod
    def _regex(text: str) -> re2._Regexp:
        try:
            return compile_regex(text)
        except ValueError as exc:
            raise _error(f"invalid regular expression {text!r}: {exc}") from None


def compile_regex(text: str) -> re2._Regexp:
    """RE2, the engine of Go's regexp that Consul uses (filters, event filters): the same syntax, and
    linear time, so no pattern can stall the agent's event loop (Python's re took 0.17 s on `(a+)+$`
    at 22 characters, doubling with each one). ValueError says why a pattern is bad."""
    try:
        return re2.compile(text, _RE2_OPTIONS)
    except re2.error as exc:
        raise ValueError(exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes)
                         else str(exc)) from None


def _equals(value: Any, expected: str) -> bool:
    if value is _MISSING:
        return False
    if isinstance(value, list):
        return any(_text(v) == expected for v in value)
    return _text(value) == expected


def _empty(value: Any) -> bool:
    return value is _MISSING or value in (None, "", [], {})


def _matches(value: Any, pattern: re2._Regexp) -> bool:
    if isinstance(value, list):
        return any(pattern.search(_text(v)) for v in value)
    return value is not _MISSING and bool(pattern.search(_text(value)))


def compile_filter(text: str | None) -> Predicate | None:
    if not text:
        return None
    return _Parser(_tokenize(text)).parse()
