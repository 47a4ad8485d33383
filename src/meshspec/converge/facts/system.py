"""The host's users and Debian packages, by name: what the deploy compares with the spec."""

from __future__ import annotations

from pyinfra.api import FactBase


class UserNames(FactBase):
    """The names of the host's users (NSS's, as `getent` lists them). pyinfra's `Users` reads each
    user's groups and home as well, a command per user: 0.4 s on this machine for what this needs."""

    default = list

    def command(self) -> str:
        return "getent passwd | cut -d: -f1"

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


class InstalledPackages(FactBase):
    """The names of the Debian packages installed (dpkg's status `?i`). pyinfra's `DebPackages`
    parses `dpkg -l` for the versions too: nine times the text over SSH, for what this needs."""

    default = list

    def command(self) -> str:
        return "dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n' 2>/dev/null; true"

    def process(self, output):
        return [words[1] for line in output if len(words := line.split()) == 2 and words[0][1:2] == "i"]
