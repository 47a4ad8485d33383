from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase


class SupervisordPid(FactBase):
    """The pid of the supervisord serving `conf`, or None when it does not answer."""

    def command(self, ctl: str, conf: str) -> str:
        return f"{ctl} -c {conf} pid 2>/dev/null || true"

    def process(self, output):
        text = "".join(output).strip()
        return int(text) if text.isdigit() else None


class ProgramFiles(FactBase):
    """{program name: sha256} of the program files in `directory`."""

    default = dict

    def command(self, directory: str) -> str:
        return f"cd {directory} 2>/dev/null && sha256sum -- *.conf 2>/dev/null; true"

    def process(self, output):
        pairs = (line.split(None, 1) for line in output if line.strip())
        return {name.removesuffix(".conf"): digest for digest, name in pairs}


#: supervisorctl status's exit statuses when supervisord answers: every program runs, or not (LSB's
#: 0 and 3); any other (4: no answer, 2: no configuration file yet) means it does not.
ANSWERED = ("0", "3")


class ProgramStates(FactBase):
    """{program name: state} as supervisorctl reports them (RUNNING, STARTING, FATAL, ...), or None
    when the supervisord serving `conf` does not answer."""

    def command(self, ctl: str, conf: str) -> str:
        return f'{ctl} -c {conf} status 2>/dev/null; echo "supervisorctl: $?"'

    def process(self, output):
        *lines, last = output
        if last.strip().removeprefix("supervisorctl: ") not in ANSWERED:
            return None
        return {parts[0]: parts[1] for line in lines if len(parts := line.split()) >= 2}


#: supervisorctl's "RUNNING   pid 123, uptime 1 day, 2:03:04" (supervisor formats days only when there are some).
UPTIME = re.compile(r"uptime (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


class RunningUptimes(FactBase):
    """{program name: seconds since supervisord started it} of the programs in state RUNNING (past
    their startsecs), from one `supervisorctl status`."""

    default = dict

    def command(self, ctl: str, conf: str) -> str:
        return f"{ctl} -c {conf} status 2>/dev/null; true"

    def process(self, output):
        found = ((line.split(), UPTIME.search(line)) for line in output if line.strip())
        return {words[0]: ((int(m[1] or 0) * 24 + int(m[2])) * 60 + int(m[3])) * 60 + int(m[4])
                for words, m in found if m and len(words) > 1 and words[1] == "RUNNING"}


class ProcessesUnder(FactBase):
    """Pids of the processes whose command line names a path under `root` (a mesh's state dir)."""

    default = list

    def command(self, root: str) -> str:
        # "[/]x" matches "/x" but not itself, so the search does not find its own shell.
        pattern = "[" + root[0] + "]" + root[1:].rstrip("/") + "/"
        return f"pgrep -f -- {shlex.quote(pattern)} || true"

    def process(self, output):
        return [int(line) for line in output if line.strip().isdigit()]
