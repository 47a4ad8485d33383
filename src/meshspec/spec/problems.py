"""A problem found in a spec file, located by line and column."""

from __future__ import annotations

from dataclasses import dataclass

Path = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    line: int
    col: int
    key: str
    message: str

    def render(self, filename: str) -> str:
        return f"{filename}:{self.line}:{self.col}: {self.key}: {self.message}"


class SpecInvalid(Exception):
    """The spec file has problems; `problems` lists every one found."""

    def __init__(self, filename: str, problems: list[Problem]):
        self.filename = filename
        self.problems = sorted(set(problems))
        super().__init__("\n".join(p.render(filename) for p in self.problems))

    def lines(self, consequence: str) -> list[str]:
        """What the user reads: one `FILE:LINE:COL: key: message` line per problem, then a count and
        `consequence` (what was left untouched, e.g. "no host was touched")."""
        return [*(p.render(self.filename) for p in self.problems), f"{len(self.problems)} problem(s); {consequence}"]
