"""Facts read once per deploy and shared by the operations that need them.

pyinfra reads a fact anew for every operation; each read is a shell command (~60 ms on a busy
machine). A `SharedFact` is read by the first operation that asks, then served from memory: safe
where, during one run, each operation changes only its own entry of it (a service's install
stamp), or where the value is cached only once it exists (the Consul token).

`on`: another host of the inventory to read it from (the registry's host keeps the management
token; the others' operations read it there, over that host's own connection, and keep no copy).
"""

from __future__ import annotations

from meshspec.converge.facts.snapshot import current


class SharedFact:
    def __init__(self, fact, on=None, **kwargs):
        self.fact, self.on, self.kwargs = fact, on, kwargs
        self._value = None

    def get(self):
        if self._value is None:
            value = current(self.fact, on=self.on, **self.kwargs)
            if value:  # an empty or missing value is read again next time: something may create it
                self._value = value
            return value
        return self._value
