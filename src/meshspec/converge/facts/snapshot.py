"""What a deploy reads of a host, read in one command.

pyinfra runs one command per fact an operation reads. On an SSH host each is a round trip and a
fresh shell: about 100 to 300 ms on this machine with a mesh running (measured with paramiko, 90 ms
for `true` while the test cluster's mesh ran), and a no-op deploy read some twenty facts of each
host. The deploy declares, for each host, every fact its operations will read (`declare`); the
first operation that reads one of them reads them all with one command (`Batch`), and operations
are served from that reading while no operation of this run has changed the host. Once one has,
or for a fact the reading does not hold, `current` reads the host as pyinfra does.

An operation reads before it yields its first command: its own commands are a change of the host
that pyinfra records only when the operation ends.
"""

from __future__ import annotations

import uuid

from pyinfra import host
from pyinfra.api import FactBase, StringCommand
from pyinfra.api.exceptions import FactProcessError

Fact = tuple[type[FactBase], dict]  # a fact and the arguments it is read with


class Batch(FactBase):
    """[value of each fact] of `facts` ((fact, its arguments as items) pairs), read in one command:
    each fact's command in a subshell, then a marker line with its exit status; each output is
    processed by its own fact as pyinfra would (its default after a failure or no output)."""

    def command(self, facts: tuple[tuple[type[FactBase], tuple], ...]) -> str:
        self.marker = f"@@meshspec-fact-{uuid.uuid4().hex}"
        self.parts = [cls() for cls, _ in facts]
        steps = []
        for fact, (_, items) in zip(self.parts, facts):
            command = fact.command(**dict(items))
            text = command.get_raw_value() if isinstance(command, StringCommand) else command
            # $(...) keeps the status; a last line without a newline ends as pyinfra's reading ends it
            steps.append(f'out=$( ( {text}\n) 2>/dev/null ); s=$?; [ -n "$out" ] && printf "%s\\n" "$out"; '
                         f'echo "{self.marker} $s"')
        return "\n".join(steps)

    def process(self, output):
        values, lines = [], []
        for line in output:
            if not line.startswith(self.marker):
                lines.append(line)
                continue
            fact = self.parts[len(values)]
            ok = line[len(self.marker):].strip() == "0"
            values.append(fact.process(lines) if ok and lines else fact.default())
            lines = []
        if len(values) != len(self.parts):
            raise FactProcessError(f"read {len(values)} of {len(self.parts)} facts: the command was cut short")
        return values


class _Reading:
    def __init__(self, facts: list[Fact]) -> None:
        self.facts = [(cls, tuple(sorted(kwargs.items()))) for cls, kwargs in facts]
        self.values: list | None = None
        self.failed = False  # the one command failed: each fact is read on its own

    def get(self, on, cls: type[FactBase], kwargs: dict) -> tuple[bool, object]:
        """(True, the value) when the reading holds `cls` read with `kwargs`, or with more paths
        than `kwargs` names (a `per_path` fact); (False, None) when it does not."""
        for n, (held, items) in enumerate(self.facts):
            if held is not cls:
                continue
            given = dict(items)
            if given == kwargs or _narrower(cls, given, kwargs):
                if self.values is None and not self.failed:
                    self.values = on.get_fact(Batch, facts=tuple(self.facts))  # pyinfra logs a failure
                    self.failed = self.values is None
                if self.failed:
                    return False, None
                return True, _narrowed(self.values[n], kwargs) if given != kwargs else self.values[n]
        return False, None


def _narrower(cls: type[FactBase], given: dict, kwargs: dict) -> bool:
    return getattr(cls, "per_path", False) and set(kwargs) == {"paths"} and set(kwargs["paths"]) <= set(given["paths"])


def _narrowed(value, kwargs: dict):
    wanted = set(kwargs["paths"])
    return {p: v for p, v in value.items() if p in wanted} if isinstance(value, dict) else [p for p in value if p in wanted]


_readings: dict[str, _Reading] = {}  # host name -> what the deploy declared it reads there


def declare(facts: list[Fact]) -> None:
    """Say which facts this run's operations will read of the current host."""
    _readings[host.name] = _Reading(facts)


def _changed(on) -> bool:
    """Whether an operation of this run has ended with a change of the host `on`."""
    metas = (op.operation_meta for op in on.state.ops[on].values())
    return any(m.is_complete() and m.did_change() for m in metas)


def current(cls: type[FactBase], on=None, **kwargs):
    """The fact of the current host (or of the host `on`, over its own connection) as it is now:
    from the run's reading while no operation has changed the host, else read on its own.
    pyinfra runs an operation on every host before the next, so another host's operations that
    came before the current one have ended."""
    on = on or host
    reading = _readings.get(on.name)
    if reading is not None and not _changed(on):
        held, value = reading.get(on, cls, kwargs)
        if held:
            return value
    return on.get_fact(cls, **kwargs)
